"""The reply library's API: approved snippets for the sidebar, and counting their use."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from admin.auth import client_address
from admin.errors import api_error
from admin.flows import NotFound
from admin.snippets import flows as snippets
from admin.snippets import service
from admin.snippets.models import Snippet
from admin.snippets.schemas import SnippetsOut
from bot.keys import KEYRING, SETTINGS, WECOM_CLIENT
from core.access import principal_of, public, requires
from core.apidoc import api_doc
from core.audit import Actor

MAX_ITEMS = 100


def public_origin(request: web.Request) -> str:
    """The origin WeCom reaches siyu at (``SIYU_SIDEBAR__PUBLIC_URL``), else the request's."""
    configured = request.app[SETTINGS].sidebar.public_url
    if configured:
        parts = urlsplit(configured)
        return f"{parts.scheme}://{parts.netloc}"
    return str(request.url.origin())


def snippet_json(
    s: Snippet, media: snippets.MediaState | None, *, cover_url: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": s.id,
        "title": s.title,
        "topic": s.topic,
        "segment": s.segment,
        "kind": s.kind,
        "text": s.text,
        "use_count": s.use_count,
    }
    if s.kind == "image":
        out["media_id"] = media.media_id if media else None
    if s.kind == "link":
        out["link"] = {
            "title": s.link_title,
            "url": s.link_url,
            "desc": s.link_desc,
            "picurl": s.link_picurl,
        }
    if s.kind == "miniprogram":
        out["miniprogram"] = {
            "appid": s.mp_appid,
            "title": s.mp_title,
            "page": s.mp_page,
            "picurl": cover_url,
            "pic_media_id": media.media_id if media else None,
        }
    if media is not None and media.error:
        out["media_error"] = media.error
    return out


@requires("snippets:read")
@api_doc(summary="合规话术库 / approved reply snippets", response=SnippetsOut, errors=(400,))
async def snippet_items(request: web.Request) -> web.Response:
    """``GET /api/v1/snippets?q=&topic=&segment=``: approved snippets, most used first.

    ``segment`` also returns the snippets written for every segment. Image and
    mini-program snippets carry a WeCom temporary media id uploaded at most 60 hours
    ago (WeCom keeps one 3 days), uploaded again on the way when older; a mini-program
    also its cover's URL (``picurl``: what the JS-SDK's ``sendChatMessage`` takes as
    ``imgUrl``), served by siyu while the snippet stays approved.
    """
    q = request.query
    segment = q.get("segment", "")
    if segment not in snippets.SEGMENT_LABELS:
        return api_error(
            400, "segment must be bank, securities, insurance or consumer_finance", field="segment"
        )
    where = service.SnippetFilter(
        q=q.get("q", "").strip()[:64],
        topic=q.get("topic", "").strip()[:32],
        segment=segment,
        statuses=("approved",),
    )
    rows = await service.snippets(where=where, limit=MAX_ITEMS)
    media = await snippets.fresh_media(rows=rows, client=request.app.get(WECOM_CLIENT))
    keyring, origin = request.app[KEYRING], public_origin(request)
    items = []
    for s in rows:
        path = snippets.cover_path(s, keyring=keyring)
        items.append(snippet_json(s, media.get(s.id), cover_url=origin + path if path else None))
    return web.json_response({"items": items})


@requires("snippets:read")
@api_doc(summary="记录一次话术使用 / count a snippet sent", errors=(404,))
async def snippet_used(request: web.Request) -> web.Response:
    """``POST /api/v1/snippets/{id}/used``: an advisor sent it (approved snippets only)."""
    raw = request.match_info["snippet_id"]
    if not raw.isdigit() or len(raw) > 18:
        return api_error(404, "no such approved snippet")
    principal = principal_of(request)
    assert principal is not None  # the guard set it
    try:
        await snippets.do_count_use(
            actor=Actor(principal.kind, principal.id, principal.name),
            source=client_address(request),
            snippet_id=int(raw),
        )
    except NotFound:
        return api_error(404, "no such approved snippet")
    return web.json_response({"ok": True})


@public
async def snippet_cover(request: web.Request) -> web.StreamResponse:
    """``GET /snippets/covers/{id}/{revision}/{token}.{png|jpg}``: a mini-program's cover.

    Public: the WeCom client fetches ``imgUrl`` itself (with none of the sidebar's
    cookies) to draw the card the customer receives, so the URL is the credential — a
    keyed token per revision — and only an approved snippet's cover, which customers
    see anyway, is served.
    """
    sid, revision = request.match_info["snippet_id"], request.match_info["revision"]
    if not (sid.isdigit() and revision.isdigit() and len(sid) <= 18 and len(revision) <= 9):
        raise web.HTTPNotFound()
    found = await snippets.cover_image(
        keyring=request.app[KEYRING],
        snippet_id=int(sid),
        revision=int(revision),
        name=request.match_info["name"][:128],
    )
    if found is None:
        raise web.HTTPNotFound()
    body, content_type = found
    # An hour: a withdrawn snippet's cover leaves shared caches soon after.
    return web.Response(
        body=body, content_type=content_type, headers={"Cache-Control": "public, max-age=3600"}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get(
        "/snippets/covers/{snippet_id}/{revision}/{name}", snippet_cover, name="snippet_cover"
    )
    app.router.add_get("/api/v1/snippets", snippet_items, name="api_snippets")
    app.router.add_post("/api/v1/snippets/{snippet_id}/used", snippet_used, name="api_snippet_used")
