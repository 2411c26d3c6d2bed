"""Run analysis off the event loop: a warmed process pool, or a thread for ``processes=0``.

Model inference is CPU-bound; on the loop it would stall the WeCom receiver past its 5 s
answer window. Each worker process loads the models once (``_init_worker``) and
``start()`` waits until every worker has, so the first real message never pays for the
load. Workers use one torch thread each: N processes on N cores beats N×N threads.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

from compliance_nlp.analyze import Analyzer, get_analyzer
from compliance_nlp.types import Analysis, AnalyzerConfig, Role

__all__ = ["AnalyzerPool"]

_worker_analyzer: Analyzer | None = None

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_ORPHAN_POLL_SECONDS = 1.0


def _die_with_parent() -> None:
    """Make this worker exit when the process that started the pool dies.

    A SIGKILLed parent runs no cleanup, and ProcessPoolExecutor workers block on their
    call queue forever: each would keep its ~440 MB of model memory until the host
    reboots. On Linux the kernel sends SIGTERM on the parent's death (PR_SET_PDEATHSIG;
    it tracks the *thread* that spawned us, which is why ``start()`` spawns every worker
    from the event-loop thread). A watchdog thread covers other platforms and the race
    where the parent died before ``prctl`` ran: once re-parented, ``getppid`` changes.
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl (unusual libc): the watchdog below still works

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)  # no cleanup to run: the pool's owner is gone
            threading.Event().wait(_ORPHAN_POLL_SECONDS)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="siyu-nlp-orphan-watch", daemon=True).start()


def _init_worker(config: AnalyzerConfig) -> None:
    global _worker_analyzer
    _die_with_parent()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _worker_analyzer = get_analyzer(config)
    _worker_analyzer.warm()


def _worker_ready() -> int:
    return os.getpid()


def _worker_rss() -> int:
    """Resident memory of this worker in bytes (Linux /proc), for the benchmark."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _worker_analyze(items: list[tuple[str, str]]) -> list[Analysis]:
    assert _worker_analyzer is not None, "worker not initialised"
    return _worker_analyzer.analyze_many(items)


class AnalyzerPool:
    """Async front of the analyzer. Use inside an aiohttp ``cleanup_ctx``::

    async def nlp_ctx(app):
        pool = AnalyzerPool(config, processes=2)
        await pool.start()
        app[NLP_POOL] = pool
        yield
        await pool.close()
    """

    def __init__(self, config: AnalyzerConfig, *, processes: int, batch_size: int = 64) -> None:
        if processes < 0:
            raise ValueError("processes must be >= 0")
        self.config = config
        self.processes = processes
        self.batch_size = batch_size
        self._executor: Executor | None = None
        self._analyzer: Analyzer | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.processes == 0:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="siyu-nlp")
            self._analyzer = await loop.run_in_executor(self._executor, self._build_local)
            return
        # spawn, not fork: forking a process that already holds torch threads, an event
        # loop and open sockets is unsafe; spawn gives each worker a clean interpreter.
        worker_config = self.config
        if worker_config.torch_threads == 0:
            from dataclasses import replace

            worker_config = replace(worker_config, torch_threads=1)
        self._executor = ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(worker_config,),
        )
        # One task per worker forces every initializer (model load) to finish.
        await asyncio.gather(
            *(loop.run_in_executor(self._executor, _worker_ready) for _ in range(self.processes))
        )

    def _build_local(self) -> Analyzer:
        analyzer = get_analyzer(self.config)
        analyzer.warm()
        return analyzer

    def _require(self) -> Executor:
        if self._executor is None:
            raise RuntimeError("AnalyzerPool.start() has not been awaited")
        return self._executor

    async def analyze(self, text: str, role: Role) -> Analysis:
        return (await self.analyze_many([(text, role)]))[0]

    async def analyze_many(self, items: Sequence[tuple[str, str]]) -> list[Analysis]:
        """Analyse ``items`` in batches spread over the workers; order is preserved."""
        executor = self._require()
        loop = asyncio.get_running_loop()
        batches = [
            list(items[i : i + self.batch_size]) for i in range(0, len(items), self.batch_size)
        ]
        if self._analyzer is not None:
            analyzer = self._analyzer
            parts = [
                await loop.run_in_executor(executor, analyzer.analyze_many, b) for b in batches
            ]
        else:
            parts = await asyncio.gather(
                *(loop.run_in_executor(executor, _worker_analyze, b) for b in batches)
            )
        return [a for part in parts for a in part]

    async def worker_rss(self) -> list[int]:
        """RSS of each worker process (or of this process for ``processes=0``)."""
        executor = self._require()
        loop = asyncio.get_running_loop()
        if self.processes == 0:
            return [_worker_rss()]
        return list(
            await asyncio.gather(
                *(loop.run_in_executor(executor, _worker_rss) for _ in range(self.processes))
            )
        )

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)
