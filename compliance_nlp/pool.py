"""Run analysis off the event loop: a warmed process pool, or a thread for ``processes=0``.

Model inference is CPU-bound; on the loop it would stall the WeCom receiver past its 5 s
answer window. Each worker process loads the models once (``_init_worker``) and
``start()`` waits until every worker has, so the first real message never pays for the
load. Workers use one torch thread each: N processes on N cores beats N×N threads.

A worker process that dies (the OOM killer, a native crash) breaks a ``ProcessPoolExecutor``
for good: every later call fails with ``BrokenProcessPool``. The pool therefore rebuilds its
executor once and retries the call; when the rebuild itself fails it raises
``AnalyzerUnavailable`` (an infrastructure failure, not the input's fault) and tries again
only after a back-off, so a pool that cannot start does not respawn on every message.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Literal

from compliance_nlp.analyze import Analyzer, get_analyzer
from compliance_nlp.overlay import Overlay
from compliance_nlp.types import Analysis, AnalyzerConfig, Role, Turn

__all__ = ["CURRENT", "AnalyzerPool", "AnalyzerUnavailable"]

#: ``analyze_many(..., overlay=CURRENT)``: the overlay last given to ``set_overlay``.
CURRENT: Literal["current"] = "current"

log = logging.getLogger(__name__)


class AnalyzerUnavailable(RuntimeError):
    """The worker processes are gone and could not be started again; retry later.

    Not the input's fault: callers back off and retry instead of giving up on the text.
    """


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
    # The models, tokenizers and rules are long-lived: frozen, a full collection no longer
    # walks them on every pass while messages flow (as the worker and receiver do at start).
    gc.collect()
    gc.freeze()


def _worker_frozen() -> int:
    """Objects this worker process keeps out of the collector's reach (``gc.freeze``)."""
    return gc.get_freeze_count()


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


# An institution's overlay travels with each batch (it is a few kilobytes), so every
# worker process follows it without being addressed one by one; each keeps the rules of
# the last few overlays it saw (the published one, a reviewer's dry-run draft).
_OVERLAID_KEEP = 3
_overlaid: OrderedDict[tuple[int, str], Analyzer] = OrderedDict()
_overlaid_lock = threading.Lock()


def _with_overlay(analyzer: Analyzer, overlay: Overlay | None) -> Analyzer:
    if overlay is None:
        return analyzer
    key = (id(analyzer), overlay.key)
    with _overlaid_lock:
        found = _overlaid.get(key)
        if found is None:
            found = analyzer.with_overlay(overlay)
            _overlaid[key] = found
            while len(_overlaid) > _OVERLAID_KEEP:
                _overlaid.popitem(last=False)
        _overlaid.move_to_end(key)
        return found


def _worker_analyze(
    items: list[tuple[str, str]],
    contexts: list[Sequence[Turn] | None] | None = None,
    overlay: Overlay | None = None,
) -> list[Analysis]:
    assert _worker_analyzer is not None, "worker not initialised"
    return _with_overlay(_worker_analyzer, overlay).analyze_many(items, contexts)


def _local_analyze(
    analyzer: Analyzer,
    items: list[tuple[str, str]],
    contexts: list[Sequence[Turn] | None] | None,
    overlay: Overlay | None,
) -> list[Analysis]:
    return _with_overlay(analyzer, overlay).analyze_many(items, contexts)


class AnalyzerPool:
    """Async front of the analyzer. Use inside an aiohttp ``cleanup_ctx``::

    async def nlp_ctx(app):
        pool = AnalyzerPool(config, processes=2)
        await pool.start()
        app[NLP_POOL] = pool
        yield
        await pool.close()
    """

    def __init__(
        self,
        config: AnalyzerConfig,
        *,
        processes: int,
        batch_size: int = 64,
        rebuild_backoff_s: float = 5.0,
        max_rebuild_backoff_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if processes < 0:
            raise ValueError("processes must be >= 0")
        self.config = config
        self.processes = processes
        self.batch_size = batch_size
        self.rebuild_backoff_s = rebuild_backoff_s
        self.max_rebuild_backoff_s = max_rebuild_backoff_s
        self.clock = clock
        # How many times a broken pool was replaced, for tests and logs.
        self.rebuilds = 0
        self._executor: Executor | None = None
        self._analyzer: Analyzer | None = None
        # Set once a call or the health probe saw the current executor broken.
        self._broken = False
        self._rebuild_task: asyncio.Task[None] | None = None
        self._failed_rebuilds = 0
        self._next_rebuild_at = 0.0
        self._unavailable = ""
        self._overlay: Overlay | None = None

    @property
    def overlay(self) -> Overlay | None:
        """The institution's overlay every call uses unless it names another."""
        return self._overlay

    def set_overlay(self, overlay: Overlay | None) -> None:
        """Use ``overlay`` over the shipped rules from the next call on (None: none).

        Check it first (``Analyzer.with_overlay`` raises ``OverlayError``): a malformed
        one would fail every call in the workers.
        """
        self._overlay = overlay

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.processes == 0:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="siyu-nlp")
            self._analyzer = await loop.run_in_executor(self._executor, self._build_local)
            return
        self._executor = await self._started_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        # spawn, not fork: forking a process that already holds torch threads, an event
        # loop and open sockets is unsafe; spawn gives each worker a clean interpreter.
        worker_config = self.config
        if worker_config.torch_threads == 0:
            from dataclasses import replace

            worker_config = replace(worker_config, torch_threads=1)
        return ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(worker_config,),
        )

    async def _started_executor(self) -> ProcessPoolExecutor:
        """A new executor whose every worker has loaded the models (or the load's error)."""
        loop = asyncio.get_running_loop()
        executor = self._new_executor()
        try:
            # One task per worker forces every initializer (model load) to finish.
            await asyncio.gather(
                *(loop.run_in_executor(executor, _worker_ready) for _ in range(self.processes))
            )
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        return executor

    def _build_local(self) -> Analyzer:
        analyzer = get_analyzer(self.config)
        analyzer.warm()
        return analyzer

    def _require(self) -> Executor:
        if self._executor is None:
            raise RuntimeError("AnalyzerPool.start() has not been awaited")
        return self._executor

    def _mark_broken(self, executor: Executor) -> None:
        # Only the executor that failed: a call that started before a rebuild must not
        # condemn the fresh one.
        if executor is self._executor and not self._broken:
            self._broken = True
            log.error("analyzer pool broken: a worker process died; rebuilding")

    async def _rebuild(self) -> None:
        old = self._require()
        try:
            new = await self._started_executor()
        except Exception as exc:  # any start failure leaves the pool unavailable
            self._failed_rebuilds += 1
            wait = min(
                self.rebuild_backoff_s * 2 ** (self._failed_rebuilds - 1),
                self.max_rebuild_backoff_s,
            )
            self._next_rebuild_at = self.clock() + wait
            self._unavailable = f"rebuild failed ({type(exc).__name__})"
            log.error(
                "analyzer pool could not be rebuilt",
                extra={"error": type(exc).__name__, "retry_in_s": wait},
            )
            raise AnalyzerUnavailable(self._unavailable_reason()) from exc
        self._executor, self._broken = new, False
        self._failed_rebuilds, self._unavailable = 0, ""
        self.rebuilds += 1
        old.shutdown(wait=False, cancel_futures=True)
        log.warning("analyzer pool rebuilt", extra={"rebuilds": self.rebuilds})

    def _unavailable_reason(self) -> str:
        wait = max(0.0, self._next_rebuild_at - self.clock())
        return f"pool broken: {self._unavailable}; next attempt in {wait:.0f} s"

    def _start_rebuild(self) -> asyncio.Task[None] | None:
        """The rebuild in progress, a new one, or None while backing off after a failure."""
        if self._rebuild_task is None:
            if self.clock() < self._next_rebuild_at:
                return None
            task = asyncio.get_running_loop().create_task(self._rebuild(), name="nlp-pool-rebuild")
            self._rebuild_task = task

            def done(t: asyncio.Task[None]) -> None:
                self._rebuild_task = None
                if not t.cancelled():
                    t.exception()  # retrieved: the callers that awaited it got it raised

            task.add_done_callback(done)
        return self._rebuild_task

    async def _usable_executor(self) -> Executor:
        executor = self._require()
        if not self._broken:
            return executor
        task = self._start_rebuild()
        if task is None:
            raise AnalyzerUnavailable(self._unavailable_reason())
        # Shielded: a caller that gives up (its request cancelled) does not stop the
        # rebuild that every other caller waits for.
        await asyncio.shield(task)
        return self._require()

    async def analyze(self, text: str, role: Role) -> Analysis:
        return (await self.analyze_many([(text, role)]))[0]

    async def analyze_many(
        self,
        items: Sequence[tuple[str, str]],
        contexts: Sequence[Sequence[Turn] | None] | None = None,
        *,
        overlay: Overlay | None | Literal["current"] = CURRENT,
    ) -> list[Analysis]:
        """Analyse ``items`` in batches spread over the workers; order is preserved.

        ``overlay``: the institution's overlay to apply — by default the one set with
        ``set_overlay``; a dry run passes a draft (or None for the shipped rules alone).

        A worker that died is replaced and the call retried once; a call that breaks the
        fresh pool as well raises ``BrokenProcessPool`` (the input itself may be what kills
        the worker), and a pool that cannot be rebuilt raises ``AnalyzerUnavailable``.
        """
        self._require()
        loop = asyncio.get_running_loop()
        if contexts is not None and len(contexts) != len(items):
            raise ValueError(f"{len(contexts)} contexts for {len(items)} messages")
        step = self.batch_size
        batches = [
            (
                list(items[i : i + step]),
                None if contexts is None else list(contexts[i : i + step]),
            )
            for i in range(0, len(items), step)
        ]
        chosen = self._overlay if overlay == CURRENT else overlay
        assert chosen is None or isinstance(chosen, Overlay)
        if self._analyzer is not None:
            analyzer = self._analyzer
            parts = [
                await loop.run_in_executor(self._require(), _local_analyze, analyzer, b, c, chosen)
                for b, c in batches
            ]
            return [a for part in parts for a in part]
        for attempt in (1, 2):
            executor = await self._usable_executor()
            try:
                futures = [
                    loop.run_in_executor(executor, _worker_analyze, b, c, chosen)
                    for b, c in batches
                ]
            except BrokenProcessPool:  # submit refuses at once once the pool is known broken
                futures = []
                outcome: list[list[Analysis] | BaseException] = [BrokenProcessPool()]
            else:
                # Every future awaited, so none leaves an unretrieved exception behind.
                outcome = list(await asyncio.gather(*futures, return_exceptions=True))
            broken = next((r for r in outcome if isinstance(r, BrokenProcessPool)), None)
            if broken is not None:
                self._mark_broken(executor)
                if attempt == 2:
                    raise broken
                continue
            failed = next((r for r in outcome if isinstance(r, BaseException)), None)
            if failed is not None:
                raise failed
            return [a for part in outcome if isinstance(part, list) for a in part]
        raise AssertionError("unreachable")  # pragma: no cover

    async def health(self) -> str | None:
        """None when the pool can analyse; else why not (for ``/readyz``).

        Cheap and non-blocking: a broken pool found here starts its rebuild in the
        background, and is reported until the rebuild has succeeded.
        """
        if self._executor is None:
            return "not started"
        if self._analyzer is not None:
            return None
        if not self._broken:
            try:
                # The public way to ask: submit refuses once a worker has died.
                self._executor.submit(_worker_ready)
            except BrokenProcessPool:
                self._mark_broken(self._executor)
            except RuntimeError:  # shut down
                return "closed"
        if not self._broken:
            return None
        if self._start_rebuild() is None:
            return self._unavailable_reason()
        return "pool broken: a worker process died; rebuilding"

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
        task = self._rebuild_task
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)
