"""The pieces every neural language model is built from: the carried ``State``, the
:class:`LanguageModelBase` interface the trainer and evaluator rely on, and :class:`Recurrence`,
the (deep, optionally residual) recurrent stack.

Both :mod:`lmlab.neural.models` (NNLM, RecurrentLM, ``build_model``) and
:mod:`lmlab.neural.bidirectional` build on this module, so dependencies point one way:
base <- bidirectional <- models.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lmlab.errors import LmlabError
from lmlab.neural.config import ModelConfig

State = object  # a tensor or a (nested) tuple of tensors, carried between batches


def detach_state(state: State) -> State:
    """Cut the graph at a batch boundary (truncated BPTT) without changing values."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, tuple | list):
        return type(state)(detach_state(s) for s in state)
    return state


class LanguageModelBase(nn.Module):
    """What the trainer and evaluator rely on."""

    config: ModelConfig

    def init_state(self, batch_size: int, device: torch.device | str) -> State:
        raise NotImplementedError

    def forward(self, inputs: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor, state: State
             ) -> tuple[torch.Tensor, State]:
        """Mean cross-entropy (nats/token) of the batch; bidirectional models add their
        backward loss."""
        logits, state = self(inputs, state)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1)), state


# ----------------------------------------------------------------------------------------------
# Recurrences
# ----------------------------------------------------------------------------------------------


def _make_rnn(c: ModelConfig, input_size: int, num_layers: int) -> nn.Module:
    """One torch recurrence of ``num_layers`` layers: a fused cuDNN/MKL kernel where possible."""
    dropout = c.dropout if num_layers > 1 else 0.0  # between this module's own layers only
    if c.variant is not None:
        # Imported here so this file works before (and without) cells.py. VariantLSTM has
        # nn.LSTM's call signature; it adds forget_bias itself (it knows where its gates are).
        from lmlab.neural.cells import VariantLSTM

        rnn = VariantLSTM(input_size, c.hidden, num_layers, variant=c.variant, dropout=dropout,
                          forget_bias=c.forget_bias)
        rnn.reset_parameters(c.init_range)  # uniform(-r, r), then its forget-gate bias
        return rnn
    if c.model == "lstm":
        rnn = nn.LSTM(input_size, c.hidden, num_layers, dropout=dropout)
    elif c.model == "gru":
        rnn = nn.GRU(input_size, c.hidden, num_layers, dropout=dropout)
    else:
        nonlinearity = "tanh" if c.model == "rnn_tanh" else "relu"
        rnn = nn.RNN(input_size, c.hidden, num_layers, nonlinearity=nonlinearity, dropout=dropout)
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            nn.init.uniform_(p, -c.init_range, c.init_range)  # Zaremba et al. 2014
            if c.model == "irnn":
                # Le et al. 2015: the recurrent matrix starts as the identity and the biases at
                # zero, so at init the hidden state is copied forward and gradients neither
                # explode nor vanish through time (ReLU of a copy of a ReLU output is a copy).
                # Caveat: carried along an endless stream, an identity recurrence integrates its
                # inputs until training teaches it to forget; a plain 2-layer IRNN (layer 2
                # integrating layer 1's growing output) learned a toy cycle poorly in our tests,
                # one layer or residual stacks learned it at once.
                if name.startswith("weight_hh"):
                    p.copy_(torch.eye(c.hidden, dtype=p.dtype))
                elif name.startswith("bias"):
                    p.zero_()
            elif c.model == "lstm" and name.startswith("bias_ih"):
                # torch orders the gates (input, forget, cell, output). Adding to one of the two
                # bias vectors adds it once to the effective forget-gate bias (Jozefowicz 2015:
                # forget by default as little as possible, so gradients flow early in training).
                p[c.hidden:2 * c.hidden] += c.forget_bias
    return rnn


class Recurrence(nn.Module):
    """[T, B, emsize] -> top-layer outputs [T, B, hidden] and the new state.

    The state has the same layout whatever the options: ``h`` [layers, B, hidden] for RNN/GRU,
    ``(h, c)`` for LSTMs, so checkpoints and the trainer never need to know how it is computed.
    The one exception is the ``fgr`` LSTM variant (full gate recurrence), whose gates also read
    the previous step's gate activations: its state is ``(h, c, a)`` with ``a`` [layers, B,
    3*hidden], so that, like every other model, two chunks give exactly one call's result.

    Without ``residual`` one fused multi-layer torch module runs the whole stack (fastest; torch
    applies ``dropout`` between layers). With ``residual``, h^(l) = RNN^(l)(h^(l-1)) + h^(l-1)
    with h^(0) the embeddings, so the layers must run one at a time; each is still a fused
    single-layer module. Dropout then goes on the input of each layer above the first, on the
    transformed path only: the skip path stays clean. Residual connections need every layer to
    have the width of its input, hence ``emsize == hidden``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        if c.variant is not None and c.model != "lstm":
            raise LmlabError(f"--variant applies to lstm only, not {c.model}")
        if c.residual and c.emsize != c.hidden:
            raise LmlabError(f"--residual needs layers of equal width: --emsize == --hidden "
                             f"({c.emsize} != {c.hidden})")
        self.layers, self.hidden = c.layers, c.hidden
        # widths of the state's parts: h; (h, c) for LSTMs; (h, c, gate activations) for fgr
        self.widths = ((c.hidden, c.hidden, 3 * c.hidden) if c.variant == "fgr"
                       else (c.hidden, c.hidden) if c.model == "lstm" else (c.hidden,))
        self.residual = c.residual
        self.drop = nn.Dropout(c.dropout)
        if c.residual:
            self.rnn = None
            self.stack = nn.ModuleList(_make_rnn(c, c.hidden, 1) for _ in range(c.layers))
        else:
            self.rnn = _make_rnn(c, c.emsize, c.layers)
            self.stack = None

    def init_state(self, batch_size: int, device) -> State:
        dtype = next(self.parameters()).dtype
        parts = tuple(torch.zeros(self.layers, batch_size, w, device=device, dtype=dtype)
                      for w in self.widths)
        return parts if len(parts) > 1 else parts[0]

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if self.rnn is not None:
            return self.rnn(x, state)
        parts = state if isinstance(state, tuple | list) else (state,)
        new = []
        for layer, rnn in enumerate(self.stack):
            own = tuple(p[layer:layer + 1] for p in parts)  # this layer's slice of each part
            out, s = rnn(self.drop(x) if layer > 0 else x, own if len(own) > 1 else own[0])
            x = out + x
            new.append(s if isinstance(s, tuple | list) else (s,))
        stacked = tuple(torch.cat(p) for p in zip(*new, strict=True))
        return x, stacked if len(stacked) > 1 else stacked[0]


__all__ = ["State", "detach_state", "LanguageModelBase", "Recurrence"]
