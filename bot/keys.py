"""Typed application keys: the resources a role's handlers may reach.

The shared ones (settings, Redis, keyring, metrics) are core's; they are
re-exported here so the edge's modules read their keys from one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from bot.hooks import Hooks
from bot.outbox import OutboxPolicies
from bot.stream import InboundStream
from core.appkit import KEYRING, METRICS, REDIS, SETTINGS

if TYPE_CHECKING:
    from bot.archive_puller import FinanceSdk
    from bot.pipeline import Analyzer
    from bot.wecom.client import WeComClient

__all__ = [
    "ANALYZER",
    "FINANCE_SDK",
    "HOOKS",
    "KEYRING",
    "METRICS",
    "OUTBOX_POLICIES",
    "REDIS",
    "SETTINGS",
    "STREAM",
    "WECOM_CLIENT",
]

STREAM = web.AppKey("stream", InboundStream)
# compliance_nlp.pool.AnalyzerPool in production; any ``bot.pipeline.Analyzer``.
ANALYZER: web.AppKey[Analyzer] = web.AppKey("analyzer")
# None when no app secret is configured (no outbox, no enrichment).
WECOM_CLIENT: web.AppKey[WeComClient | None] = web.AppKey("wecom_client")
HOOKS = web.AppKey("hooks", Hooks)
OUTBOX_POLICIES = web.AppKey("outbox_policies", OutboxPolicies)
# How the archive puller opens WeCom's finance SDK — native or the sandbox's
# stand-in, chosen by the composition root (the product never imports the sandbox).
FINANCE_SDK: web.AppKey[Callable[[], FinanceSdk] | None] = web.AppKey("finance_sdk")
