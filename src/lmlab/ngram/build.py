"""``lmlab ngram train --memory/--cluster``: plan the out-of-core estimator's stages
(:mod:`.external`), run them here or on a Dask cluster (:mod:`lmlab.cluster`), and write the
model file and ARPA file from the pieces the last stage leaves on disk."""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass

import numpy as np

from lmlab.corpus import BOS_ID, count_words, training_vocabulary
from lmlab.errors import LmlabError
from lmlab.fileio import is_pipe, is_stdin
from lmlab.ngram import external as ext
from lmlab.ngram import partition as planning
from lmlab.ngram.counts import count_of_counts
from lmlab.ngram.estimate import interpolate_order, uniform_distribution
from lmlab.textlines import line_spans

_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
VOCAB_CHUNK_BYTES = 2**20  # the vocabulary pass reads 1 MiB of text at a time (~100 MB at 8)


# -- memory ---------------------------------------------------------------------------------------
def parse_memory(text: str) -> int:
    """``2G`` -> bytes (K, M, G, T in powers of 1024, as ``lmplz -S``; ``80%`` of this machine's
    physical memory)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*(%|[kKmMgGtTbB]?)[bB]?\s*", str(text))
    if m is None:
        raise LmlabError(f"--memory must be a size such as 800M, 2G or 50%, got {text!r}")
    value = float(m.group(1))
    size = int(value / 100 * physical_memory()) if m.group(2) == "%" else \
        int(value * _UNITS[m.group(2).lower()])
    if size < planning.min_memory():
        raise LmlabError(f"--memory {text}: give at least {planning.min_memory() >> 20}M")
    return size


def in_memory_need(path: str | os.PathLike, order: int) -> int:
    """Roughly the peak memory of the in-memory estimator on the text file ``path``: 8 x order
    bytes per byte of text (measured: ~36 for a 5-gram), gzip text counted as 3x its size."""
    from lmlab.fileio import GZIP_MAGIC

    if not os.path.isfile(path):
        return 0  # (the reader names what is wrong with it)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if f.read(2) == GZIP_MAGIC:
            size *= 3
    return size * 8 * max(order, 2)


def count_lines(path: str | os.PathLike) -> int:
    """Lines of a text file (plain, gzip or ``-``), by counting newlines a block at a time."""
    from lmlab.fileio import open_binary

    lines, last = 0, b"\n"
    with open_binary(path) as f:
        while block := f.read(2**24):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_memory() -> int:
    """What the kernel says can be allocated without swapping (MemAvailable), else physical."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return physical_memory()


# -- writing the model from its pieces ------------------------------------------------------------
@dataclass
class Spilled:
    """A 1-d array in raw files (one per bucket, in order), written into the model file in
    pieces: never loaded whole."""

    paths: list[str]
    dtype: np.dtype

    def __len__(self) -> int:
        return sum(os.path.getsize(p) for p in self.paths) // self.dtype.itemsize

    def write_npy(self, out, piece: int = 2**22) -> None:
        np.lib.format.write_array_header_1_0(
            out, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (len(self),)})
        for path in self.paths:
            with open(path, "rb") as f:
                shutil.copyfileobj(f, out, piece)


def write_outputs(plan: planning.Plan, vocab, meta: dict, unigram: dict[str, np.ndarray],
                  output: str | None, arpa: str | None) -> list[int]:
    """The model file and/or ARPA file from the unigrams and the buckets' pieces (both, or when
    it fails or is interrupted, neither); returns the number of n-grams per order."""
    from lmlab.fileio import output_group
    from lmlab.ngram.model import save_arrays

    N, buckets = plan.order, range(plan.buckets if plan.order > 1 else 0)
    arrays = {what: [unigram[what]] + [Spilled([ext.out_path(plan, what, n, b) for b in buckets],
                                               np.dtype("<i8" if what == "keys" else "<f8"))
                                       for n in range(2, N + 1)]
              for what in ("keys", "logp", "bow")}
    sizes = [len(a) for a in arrays["keys"]]
    with output_group():
        if output:
            save_arrays(output, vocab, meta, arrays)
        if arpa:
            _write_arpa_pieces(plan, vocab, unigram, sizes, arpa)
    return sizes


def _write_arpa_pieces(plan: planning.Plan, vocab, unigram: dict[str, np.ndarray],
                       sizes: list[int], arpa: str) -> None:
    """The ARPA file from the unigrams and the buckets' ARPA pieces, copied in order."""
    from lmlab.fileio import atomic_output
    from lmlab.ngram.arpa import ARPA_END, ngram_lines, section_title, write_companion, write_counts

    N, buckets = plan.order, range(plan.buckets if plan.order > 1 else 0)
    with atomic_output(arpa, "w") as f:
        write_counts(f, sizes)
        f.write(section_title(1))
        f.writelines(ngram_lines(vocab.itos, unigram["logp"], unigram["bow"] if N > 1 else None))
        for n in range(2, N + 1):
            f.write(section_title(n))
            for b in buckets:
                with open(ext.out_path(plan, "arpa", n, b), encoding="utf-8") as section:
                    shutil.copyfileobj(section, f, 2**22)
        f.write(ARPA_END)
        write_companion(arpa, vocab.tokenizer)


# -- the driver -----------------------------------------------------------------------------------
def train_external(path: str | os.PathLike, order: int, smoothing: str, *, memory: int | str,
                   temp: str | os.PathLike | None = None, output: str | None = None,
                   arpa: str | None = None, cluster: str | None = None, vocab=None,
                   min_count: int = 1, max_vocab: int | None = None,
                   prune: list[int] | None = None, tokenizer=None, progress: bool = False,
                   verbose: bool = True, **options) -> dict:
    """Estimate a backoff-form n-gram model of the text file ``path`` within ``memory`` bytes
    (or a size such as ``"1G"``) per process, plus a small fixed overhead, spilling to a scratch
    folder under ``temp``, and write it to ``output`` (lmlab's format) and/or ``arpa``: the
    files :func:`train_ngram` and ``write_arpa`` would write, array for array and byte for byte.
    ``cluster``: run the stages on Dask (``local:N`` or ``tcp://HOST:PORT``; the text and the
    scratch folder must be on a file system every worker sees). Returns the model's meta, with
    ``ngrams`` (the count per order) and ``vocab_size``."""
    from lmlab.cluster import runner
    from lmlab.ngram.estimate import check_order
    from lmlab.ngram.prune import prune_thresholds
    from lmlab.ngram.smoothing import make_smoothing
    from lmlab.tokenizers import WHITESPACE

    check_order(order)
    if smoothing == "addk":
        raise LmlabError("addk has no backoff form, so it has no out-of-core estimator (--memory);"
                         " use another smoothing method or train it in memory")
    thresholds = prune_thresholds(prune, order, smoothing)
    method = make_smoothing(smoothing, **options)
    method.verbose = verbose
    tokenizer = tokenizer or WHITESPACE
    if is_stdin(path) or is_pipe(path):
        raise LmlabError("out-of-core estimation reads its text more than once, in pieces: give "
                         "a file, not standard input (-) or a pipe", path)
    source = os.path.abspath(path)  # (workers may run elsewhere, in another folder)
    # The runner closes first: no task of it still writes when the scratch folder goes.
    if isinstance(memory, str):
        memory = parse_memory(memory)
    with ext.scratch_directory(temp) as scratch, runner(cluster, scratch) as run:
        try:
            run.check_sees(source, scratch)
            # A plain file is cut into spans that workers read themselves; gzip only from the
            # start, here, in one span.
            probe = line_spans(source, 2**26)
            given = vocab is not None
            vocab = training_vocabulary(
                path, vocab, min_count, max_vocab, tokenizer, VOCAB_CHUNK_BYTES,
                word_counts=(lambda: count_spans(run, probe, source, tokenizer))
                if probe and run.distributed else None)
            lines = probe[1] if probe else count_lines(source)
            word_counts = np.asarray(vocab.counts, dtype=np.int64)
            if given:  # a vocabulary file's counts (if any) are not this text's: count them
                counted = count_spans(run, probe, source, vocab.tokenizer)
                word_counts = np.zeros(len(vocab), dtype=np.int64)
                for word, count in counted.items():
                    word_counts[max(vocab.id(word), 0)] += count  # (-1: not in it, <unk>)
            plan = planning.make_plan(order, word_counts, memory, scratch, lines)
            return _estimate(run, plan, source, str(path), vocab, method, thresholds, output,
                             arpa, lines, progress)
        finally:
            ext._bounds.cache_clear()


def _estimate(run, plan: planning.Plan, source: str, name: str, vocab, method, thresholds,
              output: str | None, arpa: str | None, lines: int, progress: bool) -> dict:
    """The stages, then the files; each stage's inputs are removed once it is done."""
    from tqdm.auto import tqdm

    from lmlab.ngram.model import fitted_meta, training_meta

    order, V = plan.order, plan.vocab_size
    tokens_guess = int(np.sum(vocab.counts)) + lines
    spans = line_spans(source, max(2**16, plan.chunk_tokens * os.path.getsize(source)
                                   // max(tokens_guess, 1)))
    items = list(enumerate(spans[0])) if spans else [(0, None)]
    with tqdm(total=len(items), desc=f"counting {order}-grams", unit="span",
              disable=not progress or run.distributed, delay=0.5, leave=False) as bar:
        chunks, unigrams, tokens, words = run.map_reduce(
            ext.count_span if run.distributed else count_and_tick(bar), items, add_counted,
            ([], np.zeros(V, dtype=np.int64), 0, 0), plan=plan, path=source, vocab=vocab)
    if words == 0:
        raise LmlabError("training corpus contains no words", name)
    parts = range(plan.parts if order > 1 else 0)
    coc, unigram_left = run.map_reduce(
        ext.adjust_partition, parts, add_adjusted,
        ([np.zeros(11, dtype=np.int64)] * (order - 1), np.zeros(V, dtype=np.int64)),
        plan=plan, chunks=chunks, continuation=method.continuation, pruned=bool(thresholds))
    remove(plan, "count-")
    ids = np.arange(V, dtype=np.int64)
    used1 = np.where(ids == BOS_ID, unigrams, unigram_left) \
        if method.continuation and order > 1 else unigrams
    method.fit([count_of_counts(used1), *coc])
    p1, _ = interpolate_order(1, used1, np.zeros(V, dtype=np.int64), 1,
                              uniform_distribution(V), method)
    bow1 = np.zeros(V)
    for got, logb in run.map(ext.interpolate_partition, parts, plan=plan, unigram_p=p1,
                             smoothing=method, prune=thresholds):
        bow1[got] = logb
    remove(plan, "table-")
    starts = ext.bucket_starts(plan) if order > 1 else []
    run.map(ext.assemble_bucket, list(enumerate(starts)), plan=plan,
            itos=vocab.itos if arpa else None)
    remove(plan, "prob-", "bow-")
    meta = training_meta(name, tokens, order, method.name, vocab, thresholds)
    fitted_meta(meta, method)
    with np.errstate(divide="ignore"):
        unigram = {"keys": ids, "logp": np.log10(p1), "bow": bow1}
    sizes = write_outputs(plan, vocab, meta, unigram, output, arpa)
    return {**meta, "ngrams": sizes, "vocab_size": V}


def add_counted(total: tuple, one: tuple) -> tuple:
    """Fold one span's count-stage result (chunk names, unigrams, tokens, words) into the total."""
    return (total[0] + one[0], total[1] + one[1], total[2] + one[2], total[3] + one[3])


def add_adjusted(total: tuple, one: tuple) -> tuple:
    """Fold one partition's count-of-counts (per order 2..N) and unigram left counts in."""
    return [a + b for a, b in zip(total[0], one[0], strict=True)], total[1] + one[1]


def remove(plan: planning.Plan, *prefixes: str) -> None:
    """Delete a finished stage's inputs from the scratch folder (disk is freed as it goes)."""
    for entry in os.scandir(plan.scratch):
        if entry.name.startswith(prefixes):
            os.remove(entry.path)


def count_spans(run, probe, path: str, tokenizer) -> Counter:
    """The text's word counts: its spans counted by the runner's workers (or, without spans,
    one pass here)."""
    if probe is None:
        return count_words(path, tokenizer, VOCAB_CHUNK_BYTES)
    return run.map_reduce(span_words, probe[0], Counter.__iadd__, Counter(), path=path,
                          tokenizer=tokenizer)


def span_words(span, *, path: str, tokenizer) -> Counter:
    """Word counts of one span of the corpus (a task of the vocabulary pass)."""
    return count_words(path, tokenizer, VOCAB_CHUNK_BYTES, span)


def count_and_tick(bar):
    """:func:`.external.count_span`, advancing the progress bar when it runs here."""
    def count(item, **kwargs):
        out = ext.count_span(item, **kwargs)
        bar.update()
        return out
    return count
