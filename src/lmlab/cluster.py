"""Where pipeline stages run: in this process, or on a Dask cluster (``--cluster``).

A stage is a plain function mapped over independent items (corpus spans, partitions, buckets)
whose inputs and outputs are files in a folder every worker sees. :class:`Runner` runs the map
here, one item after another; :class:`DaskRunner` hands it to ``dask.distributed`` (retries of
a task whose worker died, scheduling and data transfer are Dask's). Specs:

- ``local:N``: an embedded ``LocalCluster`` of N single-threaded worker processes;
- ``tcp://HOST:PORT``: an existing scheduler (``dask scheduler``; workers started with
  ``dask worker tcp://HOST:PORT``), so the same command runs on a real cluster.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial

from lmlab.errors import LmlabError

CONNECT_TIMEOUT = "10s"


class Runner:
    """Runs a stage's tasks here, one after another."""

    workers = 1
    distributed = False

    def map(self, fn: Callable, items: Iterable, **constants) -> list:
        """``[fn(item, **constants) for item in items]``, in order."""
        return [fn(item, **constants) for item in items]

    def map_reduce(self, fn: Callable, items: Iterable, combine: Callable, start, **constants):
        """``combine(... combine(start, fn(item0)) ..., fn(itemN))``, each result folded in as
        it comes (in any order), so only one is held at a time: ``combine`` must not care."""
        for item in items:
            start = combine(start, fn(item, **constants))
        return start

    def check_sees(self, *paths: str) -> None:
        """Raise if a worker cannot see ``paths`` (here: it always can)."""


class DaskRunner(Runner):
    """Runs a stage's tasks on a ``dask.distributed`` client's workers."""

    distributed = True

    def __init__(self, client) -> None:
        self.client = client
        self.workers = max(1, len(client.scheduler_info().get("workers", {})))

    def map(self, fn: Callable, items: Iterable, **constants) -> list:
        with self._tasks(fn, items, constants) as futures:
            return self.client.gather(futures)

    def map_reduce(self, fn: Callable, items: Iterable, combine: Callable, start, **constants):
        from distributed import as_completed

        with self._tasks(fn, items, constants) as futures:
            for future in as_completed(futures):
                start = combine(start, future.result())
                future.release()
        return start

    @contextmanager
    def _tasks(self, fn: Callable, items: Iterable, constants: dict) -> Iterator[list]:
        """One task per item (pure=False: they write files), cancelled if the caller stops
        early; Dask's own failures become one line."""
        from distributed import CancelledError
        from distributed.comm import CommClosedError
        from distributed.scheduler import KilledWorker

        futures = self.client.map(partial(fn, **constants), list(items), pure=False)
        try:
            yield futures
        except KilledWorker as err:
            raise LmlabError(f"a Dask worker died running {fn.__name__} again and again ({err}); "
                             "out of memory? lower --memory or give the workers more") from None
        except (CommClosedError, CancelledError) as err:  # (a task's own errors pass through)
            raise LmlabError(f"lost the Dask cluster while running {fn.__name__} ({err})"
                             ) from None
        finally:
            self.client.cancel([f for f in futures if not f.done()], force=True)

    def check_sees(self, *paths: str) -> None:
        for path in paths:
            seen = self.client.run(os.path.exists, path)
            blind = sorted(worker for worker, ok in seen.items() if not ok)
            if blind:
                raise LmlabError(f"{len(blind)} of the cluster's {len(seen)} workers (e.g. "
                                 f"{blind[0]}) cannot see {path}: the text and --temp must be on "
                                 "a file system every worker shares, at the same path")


def parse_cluster(spec: str) -> tuple[str, int | str]:
    """``local:N`` -> ("local", N); ``tcp://HOST:PORT`` -> ("tcp", the address)."""
    m = re.fullmatch(r"local:(\d+)", spec)
    if m and int(m.group(1)) >= 1:
        return "local", int(m.group(1))
    if re.fullmatch(r"(tcp|tls)://[^\s:/]+:\d+/?", spec):
        return "tcp", spec.rstrip("/")
    raise LmlabError(f"--cluster must be local:N (N worker processes here) or tcp://HOST:PORT "
                     f"(or tls://: a running Dask scheduler), got {spec!r}")


@contextmanager
def _ignoring_ctrl_c() -> Iterator[None]:
    """Worker processes started in here ignore SIGINT (they inherit it): a Ctrl-C reaches this
    process alone, which stops the work and closes the cluster, instead of every worker
    printing its own traceback."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def runner(spec: str | None, local_directory: str | None = None) -> Iterator[Runner]:
    """The runner for ``--cluster spec`` (None: this process), shut down when the work ends.
    ``local_directory``: where a ``local:N`` cluster's workers keep their own files."""
    if spec is None:
        yield Runner()
        return
    kind, where = parse_cluster(spec)
    try:
        import dask.config
        from distributed import Client, LocalCluster
    except ImportError:
        raise LmlabError("--cluster needs Dask: pip install 'lmlab[cluster]' (dask[distributed])"
                         ) from None
    import logging

    # Dask logs every worker start and stop at INFO, and its shutdown after an interrupt at
    # ERROR; lmlab says what matters itself.
    quiet = [logging.getLogger(n) for n in ("distributed", "tornado", "asyncio")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.CRITICAL)
    cluster = client = None
    try:
        # (workers read their logging level from the config they are started with)
        with dask.config.set({"distributed.worker.daemon": False, "logging.distributed": "error"}):
            if kind == "local":
                with _ignoring_ctrl_c():
                    cluster = LocalCluster(n_workers=where, threads_per_worker=1,
                                           processes=True, dashboard_address=None,
                                           local_directory=local_directory)
                client = Client(cluster)
            else:
                try:
                    client = Client(where, timeout=CONNECT_TIMEOUT)
                except (OSError, TimeoutError) as err:
                    raise LmlabError(f"cannot reach the Dask scheduler at {where} ({err}); is "
                                     "`dask scheduler` running there?") from None
                if not client.scheduler_info().get("workers"):
                    try:
                        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
                    except TimeoutError:
                        raise LmlabError(f"the Dask scheduler at {where} has no workers: start "
                                         f"some with `dask worker {where}`") from None
            yield DaskRunner(client)
    finally:
        import warnings

        with warnings.catch_warnings():  # (tasks cancelled by an interrupt warn as they go)
            warnings.simplefilter("ignore")
            if client is not None:
                client.close()
            if cluster is not None:
                cluster.close()
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
