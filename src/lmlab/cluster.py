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

CONNECT_TIMEOUT = "20s"


class Runner:
    """Runs a stage's tasks here, one after another."""

    workers = 1
    distributed = False

    def map(self, fn: Callable, items: Iterable, **constants) -> list:
        """``[fn(item, **constants) for item in items]``, in order."""
        return [fn(item, **constants) for item in items]

    def check_sees(self, folder: str) -> None:
        """Raise if a worker cannot see ``folder`` (here: it always can)."""


class DaskRunner(Runner):
    """Runs a stage's tasks on a ``dask.distributed`` client's workers."""

    distributed = True

    def __init__(self, client, address: str) -> None:
        self.client = client
        self.address = address
        self.workers = max(1, len(client.scheduler_info().get("workers", {})))

    def map(self, fn: Callable, items: Iterable, **constants) -> list:
        items = list(items)
        if not items:
            return []
        task = partial(fn, **constants)
        # pure=False: every call is its own task (they write files); results come back in order
        futures = self.client.map(task, items, pure=False)
        try:
            return self.client.gather(futures)
        finally:
            for f in futures:
                f.release()

    def check_sees(self, folder: str) -> None:
        seen = self.client.run(os.path.isdir, folder)
        blind = sorted(worker for worker, ok in seen.items() if not ok)
        if blind:
            raise LmlabError(f"{len(blind)} of the cluster's {len(seen)} workers (e.g. "
                             f"{blind[0]}) cannot see the scratch folder {folder}: give --temp "
                             "a folder on a file system every worker shares")


def parse_cluster(spec: str) -> tuple[str, int | str]:
    """``local:N`` -> ("local", N); ``tcp://HOST:PORT`` -> ("tcp", the address)."""
    m = re.fullmatch(r"local:(\d+)", spec)
    if m and int(m.group(1)) >= 1:
        return "local", int(m.group(1))
    if re.fullmatch(r"(tcp|tls)://[^\s:/]+:\d+/?", spec):
        return "tcp", spec.rstrip("/")
    raise LmlabError(f"--cluster must be local:N (N worker processes here) or tcp://HOST:PORT (a "
                     f"running Dask scheduler), got {spec!r}")


@contextmanager
def runner(spec: str | None) -> Iterator[Runner]:
    """The runner for ``--cluster spec`` (None: this process), shut down when the work ends."""
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

    # Dask logs every worker start and stop at INFO; lmlab says what matters itself.
    quiet = [logging.getLogger(n) for n in ("distributed", "tornado")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    cluster = client = None
    try:
        with dask.config.set({"distributed.worker.daemon": False}):
            if kind == "local":
                cluster = LocalCluster(n_workers=where, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
                client = Client(cluster)
            else:
                try:
                    client = Client(where, timeout=CONNECT_TIMEOUT)
                except (OSError, TimeoutError) as err:
                    raise LmlabError(f"cannot reach the Dask scheduler at {where} ({err}); is "
                                     "`dask scheduler` running there?") from None
                if not client.scheduler_info().get("workers"):
                    client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
            yield DaskRunner(client, str(where))
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
