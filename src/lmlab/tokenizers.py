"""Tokenizers: how one line of raw text becomes the tokens a model predicts.

Every model holds its tokenizer (``model.vocab.tokenizer``), saved inside the model file, so raw
text is always cut the way the training text was. Lines are still the unit: each line's tokens
and then one ``</s>`` are predicted, whatever the tokenizer.

========================  ===================================================================
``whitespace`` (default)  words separated by Unicode whitespace, as Python's ``str.split``:
                          the no-break space U+00A0 and the ideographic space U+3000 separate
                          words too. Pre-tokenized corpora (PTB, WikiText-2) are read as is.
``whitespace-ascii``      words separated by ASCII whitespace only (space, tab, CR, LF, FF,
                          VT), as KenLM reads text: a U+00A0 or U+3000 is part of a word, or a
                          word of its own. For parity work with KenLM on such text.
``char``                  every Unicode character is a token; a space is the visible
                          ``▁`` (U+2581), any other whitespace character ``<U+XXXX>``, so
                          nothing of the line is lost.
``byte``                  every UTF-8 byte is a token (printable ASCII as itself, space as
                          ``▁``, others ``<0xNN>``): 256 symbols, any text, even invalid UTF-8.
``jieba``                 Chinese word segmentation by the ``jieba`` package (extra
                          ``lmlab[zh]``); spaces are kept as ``▁`` tokens.
``sentencepiece``         a unigram subword model (``sentencepiece-bpe``: BPE) trained on the
                          training text by the ``sentencepiece`` package (``lmlab[subword]``),
                          lossless: no normalisation, spaces kept, byte fallback.
``bpe``                   byte-level BPE of the Hugging Face ``tokenizers`` package
                          (``lmlab[subword]``), trained on the training text.
========================  ===================================================================

Tokens never contain whitespace and never equal ``<s>``/``</s>``, so the rest of lmlab (counting,
the token stream, ARPA files) works on them unchanged. The metrics that compare models across
tokenizations (bits per character and per byte, word perplexity) count the raw text, not the
tokens: see :mod:`lmlab.metrics`.

>>> tok = make_tokenizer("char")
>>> tok.split("a b")
['a', '▁', 'b']
>>> tok.join(['a', '▁', 'b'])
'a b'
>>> make_tokenizer("byte").split("é!")
['<0xC3>', '<0xA9>', '!']
"""

from __future__ import annotations

import base64
import copy
import io
import logging
import re
from collections.abc import Iterable, Sequence

from lmlab.errors import LmlabError

SPACE = "\u2581"  # ▁, a space made visible (sentencepiece's symbol)
DEFAULT_VOCAB_SIZE = 8000
_ASCII_SPACE = re.compile(r"[ \t\n\r\f\v]+")
_RARE = re.compile("[^\\S ]|" + SPACE)  # whitespace other than a space, or a literal ▁


def _escape_char(c: str) -> str:
    if c == " ":
        return SPACE
    return f"<U+{ord(c):04X}>" if c.isspace() or c == SPACE else c


def escape(token: str) -> str:
    """``token`` with each whitespace character made visible (space ``▁``, others and a
    literal ``▁`` ``<U+XXXX>``), so it survives being split on whitespace."""
    if token.isalnum() or not any(c.isspace() or c == SPACE for c in token):
        return token
    return "".join(map(_escape_char, token))


def _unescape_match(m: re.Match) -> str:
    if m.group(0) == SPACE:
        return " "
    code = int(m.group(1), 16)
    return chr(code) if code <= 0x10FFFF else m.group(0)


_ESCAPES = re.compile(r"<U\+([0-9A-F]{4,6})>|" + SPACE)


def unescape(token: str) -> str:
    """The inverse of :func:`escape`, one token at a time (a literal ``<U+0009>`` written in the
    text is cut into characters, so it never reaches here whole)."""
    if SPACE not in token and "<U+" not in token:
        return token
    return _ESCAPES.sub(_unescape_match, token)


def split_ascii(text: str) -> list[str]:
    """``text`` split on ASCII whitespace only (space, tab, CR, LF, FF, VT), as KenLM splits."""
    return [t for t in _ASCII_SPACE.split(text) if t]


class Tokenizer:
    """One line of raw text to tokens (:meth:`split`) and back (:meth:`join`).

    ``spec()`` is everything needed to rebuild it (JSON; a trained subword model's bytes
    included); :func:`tokenizer_from_spec` rebuilds it. Subclasses override :meth:`split`,
    :meth:`join` and, when they learn from the training text, :meth:`fit`.
    """

    name = "whitespace"
    errors = "strict"  # how bytes are decoded: a tokenizer that takes any bytes says so
    trainable = False
    model: bytes | str | None = None  # a trained subword model

    def split(self, line: str) -> list[str]:
        return line.split()

    def join(self, tokens: Sequence[str]) -> str:
        """Readable text of ``tokens`` (the inverse of :meth:`split` where it can be)."""
        return " ".join(tokens)

    def split_lines(self, lines: Sequence[str]) -> list[list[str]]:
        return [self.split(line) for line in lines]

    def fit(self, lines: Iterable[str], source: str = "<memory>") -> None:
        """Learn from the training text (subword tokenizers); others have nothing to learn."""

    @property
    def fixed_vocabulary(self) -> list[str] | None:
        """Every token this tokenizer can produce, when that is a closed set (byte, a trained
        subword model): all of them enter the vocabulary, seen in training or not, so a byte
        piece or a rare subword in new text is never OOV."""
        return None

    @property
    def is_default(self) -> bool:
        """The whitespace tokenizer of every lmlab version (nothing saved for it)."""
        return type(self) is Tokenizer

    def spec(self) -> dict:
        return {"name": self.name}

    def describe(self) -> str:
        """One line for reports."""
        return self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"<lmlab tokenizer {self.describe()}>"


class WhitespaceAscii(Tokenizer):
    name = "whitespace-ascii"

    def split(self, line: str) -> list[str]:
        return split_ascii(line)


class Char(Tokenizer):
    name = "char"

    def split(self, line: str) -> list[str]:
        if _RARE.search(line) is None:  # only plain spaces to show: one C pass, not per char
            return list(line.replace(" ", SPACE))
        return list(map(_escape_char, line))

    def join(self, tokens: Sequence[str]) -> str:
        return "".join(map(unescape, tokens))


_BYTE_NAMES = [chr(b) if 0x21 <= b <= 0x7E else SPACE if b == 0x20 else f"<0x{b:02X}>"
               for b in range(256)]
_BYTE_OF = {name: b for b, name in enumerate(_BYTE_NAMES)}


class Byte(Tokenizer):
    name = "byte"
    errors = "surrogateescape"  # invalid UTF-8 is still bytes: each one a token

    def split(self, line: str) -> list[str]:
        return [_BYTE_NAMES[b] for b in line.encode("utf-8", "surrogateescape")]

    def join(self, tokens: Sequence[str]) -> str:
        data = bytes(_BYTE_OF[t] for t in tokens if t in _BYTE_OF)
        return data.decode("utf-8", "surrogateescape")  # invalid UTF-8 survives the trip

    @property
    def fixed_vocabulary(self) -> list[str]:
        return list(_BYTE_NAMES)


def _require(module: str, tokenizer: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise LmlabError(f"the {tokenizer} tokenizer needs the {module} package: "
                         f"pip install 'lmlab[{extra}]'") from None


class Jieba(Tokenizer):
    """Chinese words by jieba's default dictionary and HMM (deterministic); spaces kept."""

    name = "jieba"

    def __init__(self, version: str | None = None) -> None:
        self.jieba = _require("jieba", "jieba", "zh")
        self.version = getattr(self.jieba, "__version__", "unknown")
        self.trained_version = version or self.version
        if self.trained_version != self.version:
            import warnings

            from lmlab.errors import LmlabWarning

            warnings.warn(f"the model was segmented by jieba {self.trained_version}, this is "
                          f"jieba {self.version}: its words (and OOV rate) may differ",
                          LmlabWarning, stacklevel=3)
        self._segmenter = None

    def _cut(self, line: str) -> list[str]:
        if self._segmenter is None:
            # jieba logs its dictionary loading at DEBUG on its own logger: keep it quiet for
            # the load, then leave the logger as the caller had it
            logger = logging.getLogger("jieba")
            level = logger.level
            logger.setLevel(logging.WARNING)
            try:
                seg = self.jieba.Tokenizer()
                seg.initialize()
            finally:
                logger.setLevel(level)
            self._segmenter = seg
        return self._segmenter.lcut(line)

    def split(self, line: str) -> list[str]:
        return [escape(w) for w in self._cut(line) if w]

    def join(self, tokens: Sequence[str]) -> str:
        return "".join(map(unescape, tokens))

    def spec(self) -> dict:
        return {"name": self.name, "jieba_version": self.trained_version}

    def describe(self) -> str:
        return f"jieba {self.trained_version}"


class SentencePiece(Tokenizer):
    """A sentencepiece model trained on the training text, lossless: identity normalisation,
    whitespace kept as it is, byte fallback for characters outside the pieces."""

    trainable = True

    def __init__(self, model_type: str = "unigram", vocab_size: int = DEFAULT_VOCAB_SIZE,
                 model: bytes | None = None) -> None:
        self.spm = _require("sentencepiece", "sentencepiece", "subword")
        if model_type not in ("unigram", "bpe"):
            raise LmlabError(f"sentencepiece model type must be unigram or bpe, not "
                             f"{model_type!r}")
        self.model_type, self.vocab_size = model_type, vocab_size
        self.name = "sentencepiece" if model_type == "unigram" else "sentencepiece-bpe"
        self.model = model
        self._sp = None if model is None else self._processor(model)

    def _processor(self, model: bytes):
        try:
            return self.spm.SentencePieceProcessor(model_proto=model)
        except (RuntimeError, OSError, TypeError) as err:
            raise LmlabError(f"corrupt sentencepiece model in the model file ({err})") from None

    def fit(self, lines: Iterable[str], source: str = "<memory>") -> None:
        out = io.BytesIO()
        try:
            self.spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines), model_writer=out, vocab_size=self.vocab_size,
                model_type=self.model_type, normalization_rule_name="identity",
                remove_extra_whitespaces=False, split_digits=False, byte_fallback=True,
                bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0, num_threads=1,
                max_sentence_length=1 << 20, hard_vocab_limit=True, minloglevel=2)
        except RuntimeError as err:
            raise LmlabError(f"cannot train a {self.vocab_size}-piece sentencepiece "
                             f"{self.model_type} model: {_spm_reason(err)}", source) from None
        self.model = out.getvalue()
        self._sp = self._processor(self.model)

    def _ready(self):
        if self._sp is None:
            raise LmlabError("this sentencepiece tokenizer is not trained yet")
        return self._sp

    def split(self, line: str) -> list[str]:
        return [_escape_piece(p) for p in self._ready().encode(line, out_type=str)]

    def split_lines(self, lines: Sequence[str]) -> list[list[str]]:
        pieces = self._ready().encode(list(lines), out_type=str)
        return [[_escape_piece(p) for p in line] for line in pieces]

    def join(self, tokens: Sequence[str]) -> str:
        return self._ready().decode_pieces([_unescape_piece(t) for t in tokens])

    @property
    def fixed_vocabulary(self) -> list[str]:
        sp = self._ready()
        return [_escape_piece(sp.id_to_piece(i)) for i in range(sp.get_piece_size())
                if not (sp.is_control(i) or sp.is_unknown(i))]

    def spec(self) -> dict:
        return {"name": self.name, "model_type": self.model_type, "vocab_size": self.vocab_size,
                "model": base64.b64encode(self.model or b"").decode("ascii")}

    def describe(self) -> str:
        return f"{self.name} ({self.vocab_size} pieces)"


# A piece keeps sentencepiece's own ▁ (its space); only other whitespace (a tab) is escaped.
def _escape_piece(piece: str) -> str:
    if not any(c.isspace() for c in piece):
        return piece
    return "".join(f"<U+{ord(c):04X}>" if c.isspace() else c for c in piece)


def _unescape_piece(token: str) -> str:
    return _ESCAPES.sub(lambda m: m.group(0) if m.group(0) == SPACE else _unescape_match(m),
                        token) if "<U+" in token else token


def _spm_reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    text = re.sub(r"^.*?\) \[.*?\] ", "", text)
    # (sentencepiece's own advice names its flags, which lmlab does not have)
    return re.sub(r"\s*(Increase vocab_size|Please set).*$", "", text).rstrip(". ") + \
        "; choose another --vocab-size"


class BPE(Tokenizer):
    """Byte-level BPE (GPT-2's scheme) by Hugging Face ``tokenizers``: any text, lossless."""

    name = "bpe"
    trainable = True

    def __init__(self, vocab_size: int = DEFAULT_VOCAB_SIZE, model: str | None = None) -> None:
        self.hf = _require("tokenizers", "bpe", "subword")
        self.vocab_size = vocab_size
        self.model = model
        self._tok = None if model is None else self._load(model)

    def _load(self, model: str):
        try:
            return self.hf.Tokenizer.from_str(model)
        except Exception as err:  # the library raises its own Exception type
            raise LmlabError(f"corrupt BPE model in the model file ({err})") from None

    def fit(self, lines: Iterable[str], source: str = "<memory>") -> None:
        hf = self.hf
        alphabet = hf.pre_tokenizers.ByteLevel.alphabet()
        if self.vocab_size < len(alphabet):
            raise LmlabError(f"a byte-level BPE vocabulary needs at least {len(alphabet)} "
                             f"tokens (its byte alphabet), got --vocab-size {self.vocab_size}")
        tok = hf.Tokenizer(hf.models.BPE())
        tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = hf.decoders.ByteLevel()
        trainer = hf.trainers.BpeTrainer(vocab_size=self.vocab_size, show_progress=False,
                                         initial_alphabet=alphabet, special_tokens=[])
        tok.train_from_iterator(lines, trainer)
        got = tok.get_vocab_size()
        if got < self.vocab_size:
            raise LmlabError(f"the training text allows only {got} BPE tokens, fewer than "
                             f"--vocab-size {self.vocab_size}; ask for fewer", source)
        self.model = tok.to_str()
        self._tok = tok

    def _ready(self):
        if self._tok is None:
            raise LmlabError("this BPE tokenizer is not trained yet")
        return self._tok

    def split(self, line: str) -> list[str]:
        return self._ready().encode(line, add_special_tokens=False).tokens

    def split_lines(self, lines: Sequence[str]) -> list[list[str]]:
        return [e.tokens for e in self._ready().encode_batch(list(lines),
                                                             add_special_tokens=False)]

    def join(self, tokens: Sequence[str]) -> str:
        tok = self._ready()
        ids = [i for i in map(tok.token_to_id, tokens) if i is not None]
        return tok.decode(ids)

    @property
    def fixed_vocabulary(self) -> list[str]:
        vocab = self._ready().get_vocab()
        return sorted(vocab, key=vocab.__getitem__)

    def spec(self) -> dict:
        return {"name": self.name, "vocab_size": self.vocab_size, "model": self.model or ""}

    def describe(self) -> str:
        return f"bpe ({self.vocab_size} tokens)"


WHITESPACE = Tokenizer()
NAMES = ("whitespace", "whitespace-ascii", "char", "byte", "jieba", "sentencepiece",
         "sentencepiece-bpe", "bpe")
SUBWORD = ("sentencepiece", "sentencepiece-bpe", "bpe")


def make_tokenizer(name: str | Tokenizer | None = None, vocab_size: int | None = None
                   ) -> Tokenizer:
    """The tokenizer called ``name`` (one of :data:`NAMES`; ``None``: whitespace), untrained;
    ``vocab_size`` sets a subword tokenizer's size (default 8000)."""
    if isinstance(name, Tokenizer):
        if vocab_size is not None:
            raise LmlabError("vocab_size goes with a tokenizer name, not a tokenizer object")
        return copy.copy(name)  # an untrained one is trained: the caller's stays as it was
    name = name or "whitespace"
    if vocab_size is not None:
        if name not in SUBWORD:
            raise LmlabError(f"--vocab-size is for the subword tokenizers ({', '.join(SUBWORD)}),"
                             f" not {name}")
        if vocab_size < 1:
            raise LmlabError(f"--vocab-size must be >= 1, got {vocab_size}")
    size = vocab_size or DEFAULT_VOCAB_SIZE
    if name == "whitespace":
        return WHITESPACE
    if name == "whitespace-ascii":
        return WhitespaceAscii()
    if name == "char":
        return Char()
    if name == "byte":
        return Byte()
    if name == "jieba":
        return Jieba()
    if name in ("sentencepiece", "sentencepiece-bpe"):
        return SentencePiece("unigram" if name == "sentencepiece" else "bpe", size)
    if name == "bpe":
        return BPE(size)
    raise LmlabError(f"unknown tokenizer {name!r}; choose from {', '.join(NAMES)}")


def tokenizer_from_spec(spec: dict | None, source: str = "model") -> Tokenizer:
    """Rebuild a saved tokenizer (``None``: the whitespace one of files older than tokenizers).
    A name this version does not know is one clear error."""
    if spec is None:
        return WHITESPACE
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise LmlabError("corrupt tokenizer record in the model file", source)
    name = spec["name"]
    if name not in NAMES:
        from lmlab import __version__

        raise LmlabError(f"the model uses the tokenizer {name!r}, unknown to lmlab "
                         f"{__version__}; upgrade lmlab", source)
    try:
        if name == "jieba":
            return Jieba(spec.get("jieba_version"))
        if name in ("sentencepiece", "sentencepiece-bpe"):
            return SentencePiece(spec["model_type"], int(spec["vocab_size"]),
                                 base64.b64decode(spec["model"]))
        if name == "bpe":
            return BPE(int(spec["vocab_size"]), spec["model"])
    except (KeyError, TypeError, ValueError) as err:
        raise LmlabError(f"corrupt {name} tokenizer record in the model file ({err})",
                         source) from None
    return make_tokenizer(name)




def tokenizer_record(vocab) -> dict:
    """``{"tokenizer": spec}`` to save with a model of ``vocab``; ``{}`` for the whitespace one
    (such files stay what they were before tokenizers)."""
    tok = vocab.tokenizer
    return {} if tok.is_default else {"tokenizer": tok.spec()}


__all__ = ["Tokenizer", "make_tokenizer", "tokenizer_from_spec", "NAMES", "SPACE", "WHITESPACE",
           "escape", "unescape", "split_ascii", "tokenizer_record"]
