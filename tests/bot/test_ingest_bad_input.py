"""Archive ingest: bad input answers clearly and never breaks the good records of a call."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

from bot import models
from tests.bot.harness import Edge
from tests.bot.test_archive import a_relation, record


async def test_non_utf8_authorization_header_is_401(edge: Edge) -> None:
    url = urlsplit(edge.base)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(
        b"POST /api/v1/archive/messages HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer \xff\xfe\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\n[]"
    )
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    assert status_line.split()[1] == b"401"
    assert await edge.queued() == 0


async def test_jsonl_keeps_line_separator_inside_a_string(edge: Edge) -> None:
    userid, ext = a_relation(edge)
    text = "第一句\u2028第二句\u2029第三句\u0085完"
    body = json.dumps(record("ls1", ext, userid, text), ensure_ascii=False) + "\r\n"
    status, out = await edge.api(
        "POST",
        "/api/v1/archive/messages",
        data=body.encode(),
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert status == 200, out
    assert (out["accepted"], out["rejected"]) == (1, 0)
    await edge.process_all()
    stored = await models.Message.get(msgid="ls1")
    assert stored.msgtype == "text"
