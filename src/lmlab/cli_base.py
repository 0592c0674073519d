"""What every ``lmlab`` sub-command's parser shares: one help formatter (defaults shown, a
one-line example kept as written), one rule for words given on the command line.

A module of its own, below :mod:`lmlab.cli` and the command modules that register themselves
there, so that none of them imports another (argparse only: no torch, nothing heavy).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

STDIN_HELP = "`-` for standard input"


class HelpFormatter(argparse.HelpFormatter):
    """Every lmlab command's help: defaults shown where one exists, the epilog's example line
    kept as written (descriptions are still wrapped).

    Help texts that already say "default" are left alone; None, False and "" defaults (no value,
    a switch that is off) are not shown.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is False or default == ""
                or default is argparse.SUPPRESS or isinstance(action, argparse._VersionAction)
                or (not action.option_strings and action.nargs not in ("?", "*"))):
            return text
        return f"{text} (default %(default)s)" if text else "default %(default)s"

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def add_command(sub, name: str, example: str, **kwargs) -> argparse.ArgumentParser:
    """``sub.add_parser(name)`` with lmlab's help formatter and a one-line example."""
    return sub.add_parser(name, epilog=f"example: {example}", formatter_class=HelpFormatter,
                          **kwargs)


MODEL_HELP = "any model file: lmlab n-gram (.lm or binary), ARPA, neural checkpoint, mixture"


def command_line_text(args: list[str]) -> str:
    """Text given on the command line, as separate arguments or quoted together: the one rule
    for every command that takes a sentence (``score``, ``ngram next``); the model's tokenizer
    then cuts it."""
    return " ".join(args)


class Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line, like every other lmlab error, with a
    pointer to the command's help instead of its whole usage block. Sub-command parsers inherit
    the class, so each error names its own command."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_tokenizer_options(p: argparse.ArgumentParser) -> None:
    """``--tokenizer`` and ``--vocab-size``, the same on every command that trains."""
    from lmlab.tokenizers import NAMES

    p.add_argument("--tokenizer", choices=NAMES, metavar="NAME",
                   help="how raw text becomes tokens, saved with the model: whitespace "
                   "(default; Unicode spaces separate), whitespace-ascii (KenLM's: only ASCII "
                   "spaces separate), char, byte, jieba (Chinese words; lmlab[zh]), "
                   "sentencepiece, sentencepiece-bpe, bpe (subwords trained on the training "
                   "text; lmlab[subword])")
    p.add_argument("--vocab-size", type=int, metavar="N", dest="subword_vocab_size",
                   help="subword tokenizers: vocabulary size (default 8000)")


def tokenizer_of(args):
    """The tokenizer ``--tokenizer``/``--vocab-size`` ask for (whitespace if none)."""
    from lmlab.tokenizers import make_tokenizer

    return make_tokenizer(args.tokenizer, args.subword_vocab_size)


def report_stream(*outputs: str | os.PathLike | None) -> TextIO:
    """Where a command prints its report: standard error when one of its ``outputs`` is
    standard output (``-``, where the data goes), else standard output."""
    return sys.stderr if any(o is not None and os.fspath(o) == "-" for o in outputs) \
        else sys.stdout
