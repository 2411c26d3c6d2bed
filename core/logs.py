"""Structured logs: one JSON object per line, ids only — never bodies or PII."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STD and not k.startswith("_"):
                out[k] = v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter (SQL text may hold values) stays out of the logs.
    for noisy in ("tortoise", "aiosqlite", "asyncpg", "aiohttp.access", "jieba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class RateLimitedLog:
    """At most one line per reason per window, saying how many were left out.

    Refused requests (bad signatures, wrong tokens, oversize bodies) come in floods
    when someone scans or a proxy is misconfigured: a line each would drown every
    other line and fill the disk, none at all hides the attack.  The first of each
    reason is written at once; the next one after ``window_s`` carries the count of
    those suppressed in between (the exact counts are in the metrics).  Callers pass
    ids only — never a body, a header value or a token.
    """

    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        *,
        window_s: float = 10.0,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.logger = logger
        self.message = message
        self.window_s = window_s
        self.level = level
        self.clock = clock
        self._last: dict[str, tuple[float, int]] = {}  # reason -> (last line at, suppressed)

    def note(self, reason: str, **ids: str | int | None) -> bool:
        """Count one refusal; True when it was written (the first in its window)."""
        now = self.clock()
        last = self._last.get(reason)
        if last is not None and 0 <= now - last[0] < self.window_s:
            self._last[reason] = (last[0], last[1] + 1)
            return False
        suppressed = last[1] if last is not None else 0
        self._last[reason] = (now, 0)
        self.logger.log(
            self.level, self.message, extra={"reason": reason, "suppressed": suppressed, **ids}
        )
        return True
