"""Where step media may be fetched from (``SIYU_SOP__MEDIA_HOSTS``): a host not listed
is refused at save unfetched, a name under a suffix entry must resolve to public
addresses, a redirect to a refused host is not followed, the body is dropped past
WeCom's limit while it streams, and a fetch has a timeout — at save and at the send."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from core.audit import Actor
from core.settings import Settings
from sop import campaigns
from sop.engine import media
from sop.models import Campaign
from sop.schemas import CampaignIn
from tests.bot.harness import Edge
from tests.conftest import make_settings

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
OPS = Actor("operator", "1", "运营")
LOCAL = media.MediaPolicy(hosts=("127.0.0.1",), timeout_s=5)


@pytest.fixture
def settings(tmp_path: Path, database_url: str, redis_url: str) -> Settings:
    # The content server of these tests runs on loopback: allowed here by name, as an
    # institution lists its own file server; the default allows nothing.
    return make_settings(
        tmp_path, database_url=database_url, redis_url=redis_url, sop={"media_hosts": ["127.0.0.1"]}
    )


class Host:
    def __init__(self, port: int) -> None:
        self.port = port
        self.gets: list[str] = []
        self.streamed = 0
        self.release = asyncio.Event()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{path}"


@pytest.fixture
async def host() -> AsyncIterator[Host]:
    box: list[Host] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        h = box[0]
        name = request.match_info["name"]
        h.gets.append(name)
        if name == "cover.png":
            return web.Response(body=PNG, content_type="image/png")
        if name == "to-cover":
            raise web.HTTPFound("/cover.png")
        if name == "to-localhost":
            raise web.HTTPFound(h.url("cover.png", host="localhost"))
        if name == "to-metadata":
            raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")
        if name == "loop":
            raise web.HTTPFound("/loop")
        if name == "endless.png":
            # No Content-Length: only reading stops it.
            resp = web.StreamResponse(headers={"Content-Type": "image/png"})
            await resp.prepare(request)
            chunk = b"\x89PNG\r\n\x1a\n" + b"\0" * (1024 * 1024 - 8)
            try:
                while h.streamed < 200 * 1024 * 1024:
                    await resp.write(chunk)
                    h.streamed += len(chunk)
            except (ConnectionError, RuntimeError):
                pass
            return resp
        if name == "slow.png":
            await h.release.wait()
            return web.Response(body=PNG, content_type="image/png")
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get("/{name}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    box.append(Host(runner.addresses[0][1]))
    yield box[0]
    box[0].release.set()
    await runner.cleanup()


def _spec(url: str) -> CampaignIn:
    return CampaignIn.model_validate(
        {
            "name": "素材来源",
            "trigger": {"kind": "customer_added"},
            "steps": [
                {"delivery": "mass_send", "content": {"kind": "image", "media": {"url": url}}}
            ],
        }
    )


REFUSED = [
    ("http://localhost:{port}/cover.png", "主机 localhost 不在允许的素材来源中"),
    ("http://169.254.169.254/latest/meta-data/", "主机 169.254.169.254 不在允许"),
    ("http://10.0.0.8/cover.png", "主机 10.0.0.8 不在允许"),
    ("http://user:pw@127.0.0.1:{port}/cover.png", "不能包含用户名或密码"),
    ("http://127.0.0.1:{port}/to-localhost", "主机 localhost 不在允许"),
    ("http://127.0.0.1:{port}/to-metadata", "主机 169.254.169.254 不在允许"),
    ("http://127.0.0.1:{port}/loop", "重定向超过 3 次"),
]


async def test_save_refuses_a_source_not_allowed_and_saves_nothing(
    edge: Edge, host: Host, analyzer: Any
) -> None:
    for where, said in REFUSED:
        with pytest.raises(campaigns.CampaignInvalid) as refused:
            await campaigns.do_create_campaign(
                spec=_spec(where.format(port=host.port)), actor=OPS, analyzer=analyzer
            )
        (problem,) = refused.value.problems
        assert problem.field == "steps[1].content.media.url", where
        assert problem.code == "media_source_refused", where
        assert said in problem.message, where
    assert await Campaign.all().count() == 0
    # A redirect's target is never asked (nor is a refused address at all).
    assert "cover.png" not in host.gets
    assert host.gets == ["to-localhost", "to-metadata"] + ["loop"] * 4


async def test_an_allowed_host_and_a_redirect_within_it_are_fetched(
    edge: Edge, host: Host, analyzer: Any
) -> None:
    saved = await campaigns.do_create_campaign(
        spec=_spec(host.url("to-cover")), actor=OPS, analyzer=analyzer
    )
    assert saved.campaign.id
    assert host.gets == ["to-cover", "cover.png"]


async def test_nothing_is_allowed_by_default(host: Host) -> None:
    found = await media.probe(media.MediaRef("image", host.url("cover.png")), media.MediaPolicy())
    assert found is not None
    code, said = found
    assert code == "media_source_refused" and "未配置允许的素材来源" in said
    assert host.gets == []


async def test_a_suffix_entry_must_resolve_to_public_addresses(host: Host) -> None:
    ref = media.MediaRef("image", host.url("cover.png", host="localhost"))
    found = await media.probe(ref, media.MediaPolicy(hosts=(".localhost",), timeout_s=5))
    assert found == ("media_source_refused", "素材地址 localhost 解析到内网地址，已拒绝")
    assert host.gets == []
    # Listed by its exact name, the same host is the administrator's own: fetched.
    assert await media.probe(ref, media.MediaPolicy(hosts=("localhost",), timeout_s=5)) is None
    assert host.gets == ["cover.png"]


def test_internal_addresses() -> None:
    for address in (
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.100.100.200",  # shared address space (a cloud's metadata)
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "224.0.0.1",
        "not an address",
    ):
        assert media.internal_address(address), address
    for address in ("8.8.8.8", "2001:4860:4860::8888"):
        assert not media.internal_address(address), address


def test_host_entries() -> None:
    rule = media.MediaPolicy(hosts=("files.bank.example", ".cdn.bank.example", "10.0.0.8"))
    assert rule.allows("files.bank.example") and rule.trusted("FILES.bank.example.")
    assert not rule.allows("x.files.bank.example")
    assert rule.allows("cdn.bank.example") and rule.allows("a.b.cdn.bank.example")
    assert not rule.trusted("a.cdn.bank.example")
    assert not rule.allows("evilcdn.bank.example")
    assert rule.allows("10.0.0.8") and not rule.allows("10.0.0.9")


async def test_a_body_past_the_limit_is_dropped_while_it_streams(host: Host) -> None:
    found = await media.probe(media.MediaRef("image", host.url("endless.png")), LOCAL)
    assert found is not None
    code, said = found
    assert code == "media_invalid" and "超过企业微信的上限 10 MB" in said
    # Reading stopped at the limit: the server could not send the 200 MB it had.
    await asyncio.sleep(0)
    assert host.streamed < 100 * 1024 * 1024


async def test_a_fetch_gives_up_after_its_timeout(host: Host) -> None:
    rule = media.MediaPolicy(hosts=("127.0.0.1",), timeout_s=0.2)
    found = await media.probe(media.MediaRef("image", host.url("slow.png")), rule)
    assert found is not None
    assert found[0] == "media_invalid" and "暂时无法下载" in found[1]


class _Redis:
    async def get(self, key: str) -> None:
        return None


async def test_the_send_refuses_a_source_no_longer_allowed(host: Host) -> None:
    # Saved while the host was listed; the list changed before the send.
    cache = media.MediaCache(
        _Redis(), client_of=lambda: object(), rule=media.MediaPolicy(hosts=(".bank.example",))
    )
    try:
        with pytest.raises(media.MediaRefused):
            await cache.media_id(media.MediaRef("image", host.url("cover.png")))
    finally:
        await cache.close()
    assert host.gets == []
