"""Typed application keys: the resources a role's handlers may reach."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from bot.stream import InboundStream
from core.crypto import Keyring
from core.metrics import Metrics
from core.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", aioredis.Redis)
KEYRING = web.AppKey("keyring", Keyring)
STREAM = web.AppKey("stream", InboundStream)
METRICS = web.AppKey("metrics", Metrics)
# compliance_nlp.pool.AnalyzerPool (kept as Any so bot.keys does not import the model).
ANALYZER: web.AppKey[Any] = web.AppKey("analyzer")
