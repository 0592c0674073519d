"""The one configuration of a neural run: model shape and training schedule.

Saved beside every checkpoint (and inside it) so a run can be reproduced and resumed exactly.
Values are checked here, once, with one-line errors naming the option.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from lmlab.errors import LmlabError

MODEL_TYPES = ("nnlm", "rnn_tanh", "rnn_relu", "irnn", "lstm", "gru")
# Greff et al.'s LSTM variants (lmlab.neural.cells); here, torch-free, for the parsers too
VARIANTS = ("vanilla", "nig", "nfg", "nog", "niaf", "noaf", "np", "cifg", "fgr")


def flag_name(key: str) -> str:
    """The command-line flag of a configuration field: ``batch_size`` -> ``--batch-size``."""
    return f"--{key.replace('_', '-')}"
OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass
class ModelConfig:
    model: str = "lstm"  # one of MODEL_TYPES
    vocab_size: int = 0  # set from the training vocabulary
    emsize: int = 200
    hidden: int = 200
    layers: int = 2
    dropout: float = 0.0  # on embeddings, between layers and before the softmax
    tied: bool = False  # share input embedding and output matrix (needs emsize == hidden)
    residual: bool = False  # h^(l) = RNN^(l)(h^(l-1)) + h^(l-1) between layers of equal width
    bidirectional: bool = False  # ELMo-style forward + backward LM (see neural/bidirectional.py)
    window: int = 5  # nnlm: number of previous words seen (n-1)
    direct: bool = False  # nnlm: direct embedding -> output connections (Bengio 2003)
    init_range: float = 0.1  # uniform(-r, r) initialisation of weights
    variant: str | None = None  # lstm: Greff et al. variant (None = fused torch.nn.LSTM)
    forget_bias: float = 0.0  # lstm: added to the forget-gate bias at init (Jozefowicz: 1)

    def check(self) -> None:
        _one_of("model", self.model, MODEL_TYPES)
        _at_least("emsize", self.emsize, 1)
        _at_least("hidden", self.hidden, 1)
        _at_least("layers", self.layers, 1)
        _at_least("window", self.window, 1)
        if not 0.0 <= self.dropout < 1.0:  # (NaN fails this too)
            raise LmlabError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not (self.init_range > 0 and math.isfinite(self.init_range)):
            raise LmlabError(f"--init-range must be a positive number, got {self.init_range}")
        if self.tied and self.emsize != self.hidden and self.model != "nnlm":
            raise LmlabError(f"--tied needs --emsize == --hidden ({self.emsize} != {self.hidden})")
        if self.residual and self.model == "nnlm":
            raise LmlabError("--residual applies to recurrent models, not nnlm")
        if self.bidirectional and self.model == "nnlm":
            raise LmlabError("--bidirectional applies to recurrent models, not nnlm")


@dataclass
class TrainConfig:
    epochs: int = 13
    bptt: int = 20  # truncated BPTT length (nnlm: tokens per batch row)
    batch_size: int = 20
    lr: float = 1.0
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    lr_decay: float = 0.5  # multiply the learning rate by this ...
    decay_start: int = 0  # ... after every epoch > decay_start (0: only on plateau)
    plateau_patience: int = 0  # decay when validation does not improve for this many epochs
    early_stop: int = 0  # stop after this many epochs without improvement (0: never)
    clip: float = 5.0  # gradient-norm clipping threshold (0: off; the norm is logged anyway)
    max_nan_retries: int = 5  # NaN/Inf: roll back, lower the LR, continue; give up after this
    nan_lr_factor: float = 0.5
    checkpoint_every: int = 0  # also save every N steps (0: once per epoch)
    eval_every: int = 0  # also validate every N steps (0: at epoch ends and at the end)
    max_steps: int = 0  # stop after N optimiser steps in total (0: no limit)
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    threads: int = 0  # torch CPU threads (0: torch's default)
    compile: bool = False  # torch.compile the LSTM cell step or the model (lmlab.neural.compiling)

    def check(self) -> None:
        _at_least("epochs", self.epochs, 1)
        _at_least("bptt", self.bptt, 1)
        _at_least("batch-size", self.batch_size, 1)
        _one_of("optimizer", self.optimizer, OPTIMIZERS)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise LmlabError(f"--lr must be a positive number, got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise LmlabError(f"--lr-decay must be in (0, 1], got {self.lr_decay}")
        if not (self.clip >= 0 and math.isfinite(self.clip)):
            raise LmlabError(f"--clip must be a finite number >= 0, got {self.clip}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise LmlabError(f"--weight-decay must be a finite number >= 0, got "
                             f"{self.weight_decay}")
        if not 0 < self.nan_lr_factor < 1:
            raise LmlabError(f"--nan-lr-factor must be in (0, 1), got {self.nan_lr_factor}")
        for name in ("max_nan_retries", "decay_start", "plateau_patience", "early_stop",
                     "checkpoint_every", "eval_every", "max_steps", "threads", "seed"):
            _at_least(name.replace("_", "-"), getattr(self, name), 0)
        if self.seed >= 2**64:  # (torch.manual_seed takes a 64-bit unsigned integer)
            raise LmlabError(f"--seed must be below 2**64, got {self.seed}")
        cores = os.cpu_count() or 1
        if self.threads > max(64, 4 * cores):  # (torch hangs or crashes with thousands)
            raise LmlabError(f"--threads {self.threads} is far more than this machine's {cores} "
                             f"cores; at most {max(64, 4 * cores)}")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def check(self) -> None:
        """Every value's type (a TOML ``lr = 1`` becomes 1.0), then every range."""
        for section, obj in (("model", self.model), ("train", self.train)):
            _check_types(section, obj)
        self.model.check()
        self.train.check()

    def to_dict(self) -> dict:
        return {"model": asdict(self.model), "train": asdict(self.train)}

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> RunConfig:
        return cls(_build(ModelConfig, d.get("model", {}), source),
                   _build(TrainConfig, d.get("train", {}), source))

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LmlabError("no such file", path) from None
        except IsADirectoryError:
            raise LmlabError("is a directory, expected a TOML file", path) from None
        except OSError as err:
            raise LmlabError(f"cannot read ({err.strerror or err})", path) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise LmlabError(f"invalid TOML ({err})", path) from None
        unknown = set(data) - {"model", "train"}
        if unknown:
            raise LmlabError(f"unknown section(s) {sorted(unknown)}; expected [model] and "
                             "[train]", path)
        return cls.from_dict(data, str(path))


def _build(kind, values: dict, source: str):
    names = {f.name: f for f in fields(kind)}
    unknown = set(values) - set(names)
    if unknown:
        raise LmlabError(f"{source}: unknown option(s) {sorted(unknown)}")
    return kind(**values)


def _check_types(section: str, obj) -> None:
    """Values from TOML or JSON must have the field's type (an int where an int is expected)."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        kind = str(f.type).replace(" ", "")
        ok = {"int": isinstance(value, int) and not isinstance(value, bool),
              "float": isinstance(value, int | float) and not isinstance(value, bool),
              "bool": isinstance(value, bool),
              "str": isinstance(value, str),
              "str|None": value is None or isinstance(value, str)}.get(kind, True)
        if not ok:
            raise LmlabError(f"[{section}] {f.name} must be of type {kind}, got {value!r}")
        if kind == "float":
            setattr(obj, f.name, float(value))


def _one_of(name: str, value, allowed) -> None:
    if value not in allowed:
        raise LmlabError(f"--{name} must be one of {', '.join(allowed)}, got {value!r}")


def _at_least(name: str, value: int, low: int) -> None:
    if not isinstance(value, int) or value < low:
        raise LmlabError(f"--{name} must be an integer >= {low}, got {value!r}")
