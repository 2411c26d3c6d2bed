"""HTTP adapters of an advisor's touches (``sop.touches``): the chat sidebar reads the
touch a digest's deep link names, and records that its content was sent.

``touches:send`` is the advisor's (``admin/permissions.json``), on their own touches
only: another advisor's touch answers 404, as a missing one does.  Not an API-key
scope: a send names the person who made it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from core.access import REACH, requires
from core.apidoc import api_doc
from sop import touches
from sop.views import _body, _guarded, actor_of, error

PERMISSION = "touches:send"


class TouchSentIn(BaseModel):
    """``POST /api/v1/touches/{id}/sent``: the customer the content was sent to."""

    model_config = ConfigDict(extra="forbid")

    external_userid: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-@.]+$")


async def _reach(request: web.Request) -> frozenset[str] | None:
    reach = request.app.get(REACH)
    return None if reach is None else await reach(request)


@requires(PERMISSION)
@api_doc(
    summary="本人的 SOP 触达（侧边栏深链接）/ one of the advisor's touches, filled in",
    errors=(400, 404),
)
async def get_touch(request: web.Request) -> web.Response:
    async def work() -> web.Response:
        touch_id = touches.parse_touch_id(request.match_info["touch_id"])
        customer = request.query.get("customer")
        if customer is not None and not 0 < len(customer) <= 64:
            return error(400, "invalid_input", "customer: 客户标识无效", field="customer")
        now = datetime.now(UTC)
        found = await touches.check_advisor_touch(
            touch_id=touch_id, reach=await _reach(request), customer=customer, now=now
        )
        return web.json_response(
            touches.touch_dict(found, now=now), headers={"Cache-Control": "no-store"}
        )

    return await _guarded(work)


@requires(PERMISSION)
@api_doc(
    summary="记录：客户经理已在侧边栏发送该触达 / the advisor sent the touch from the sidebar",
    request=TouchSentIn,
    errors=(400, 404, 409),
)
async def touch_sent(request: web.Request) -> web.Response:
    async def work() -> web.Response:
        touch_id = touches.parse_touch_id(request.match_info["touch_id"])
        body = await _body(request, TouchSentIn)
        recorded = await touches.do_record_sidebar_send(
            touch_id=touch_id,
            reach=await _reach(request),
            customer=body.external_userid,
            actor=actor_of(request),
            source=request.remote or "",
        )
        return web.json_response(
            touches.sent_answer(recorded), status=201 if recorded.created else 200
        )

    return await _guarded(work)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/touches/{touch_id}", get_touch, name="api_touch")
    app.router.add_post("/api/v1/touches/{touch_id}/sent", touch_sent, name="api_touch_sent")
