"""``/api/v1/customers``: the customer list and one customer, for systems and the console.

The same reach and masking as the pages: an operator calling with their session sees
what their role may, an API key with ``customers:read`` every customer with numbers
masked (138****5678).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from admin.customers import flows
from admin.customers.schemas import (
    AlertOut,
    CustomerAdvisorOut,
    CustomerDetailOut,
    CustomerListOut,
    CustomerOut,
    CustomersQuery,
    FindingOut,
    TimelineMessageOut,
)
from admin.errors import api_error
from admin.flows import FieldError, NotFound
from core.access import requires
from core.apidoc import api_doc
from core.appkit import KEYRING

DETAIL_MESSAGES = 50


def _customer_out(card: flows.CustomerCard) -> dict[str, Any]:
    return CustomerOut(
        id=card.id,
        external_userid=card.external_userid,
        name=card.name,
        corp_name=card.corp_name,
        phones=list(card.phones),
        advisors=[
            CustomerAdvisorOut(
                userid=f.advisor_userid,
                name=f.advisor_name,
                status=f.status,
                remark=f.remark,
                added_at=f.added_at,
            )
            for f in card.follows
        ],
        last_message_at=card.last_message_at,
        created_at=card.created_at,
    ).model_dump(mode="json")


@requires("customers:read")
@api_doc(
    summary="客户列表与搜索 / search customers",
    query=CustomersQuery,
    response=CustomerListOut,
    errors=(400,),
)
async def list_customers(request: web.Request) -> web.Response:
    """``GET /api/v1/customers?q=&page=&per_page=``: newest first.

    ``q`` matches a name or remark in part, or a whole phone number in any spelling
    (+86, spaces, dashes) through the keyed index; numbers are never matched in part.
    """
    try:
        query = CustomersQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "query"
        return api_error(400, f"{where}: {first['msg']}", field=where)
    viewer = await flows.viewer_of(request)
    try:
        cards, total = await flows.search(
            viewer=viewer,
            text=query.q,
            keyring=request.app[KEYRING],
            offset=(query.page - 1) * query.per_page,
            limit=query.per_page,
        )
    except FieldError as exc:
        return api_error(400, exc.message, field=exc.field)
    return web.json_response(
        {
            "items": [_customer_out(c) for c in cards],
            "total": total,
            "page": query.page,
            "per_page": query.per_page,
        }
    )


@requires("customers:read")
@api_doc(
    summary="客户详情（资料、跟进人、预警、最近消息）/ one customer",
    response=CustomerDetailOut,
    path_params={"customer_id": "客户的 id，或企业微信 external_userid"},
    errors=(404,),
)
async def get_customer(request: web.Request) -> web.Response:
    """``GET /api/v1/customers/{customer_id}``: profile, advisors, alerts, recent messages.

    ``customer_id`` is the id the list answers, or the customer's WeCom external_userid.
    """
    viewer = await flows.viewer_of(request)
    customer_id = await flows.resolve_customer_id(request.match_info["customer_id"])
    try:
        if customer_id is None:
            raise NotFound("customer")
        card = await flows.customer_for(viewer=viewer, customer_id=customer_id)
    except NotFound:
        return api_error(404, "no such customer")
    turns, _ = await flows.timeline(viewer=viewer, card=card, before_id=None, limit=DETAIL_MESSAGES)
    body = {
        **_customer_out(card),
        "gender": card.gender,
        "attributes": {name: value for name, _label, value in card.attributes},
        "alerts": [
            AlertOut(
                kind=a.kind,
                advisor_userid=a.advisor_userid,
                created_at=a.created_at,
                status=a.status,
            ).model_dump(mode="json")
            for a in await flows.alerts(viewer=viewer, card=card)
        ],
        "messages": [
            TimelineMessageOut(
                id=t.id,
                msgtime=t.msgtime,
                sender_role=t.side,
                sender=t.sender_label,
                text=t.text,
                msgtype=t.msgtype,
                in_group=t.in_group,
                intent=t.intent or None,
                findings=[FindingOut(category=c, severity=s) for c, _l, s in t.findings],
                case_id=t.case_id,
            ).model_dump(mode="json")
            for t in turns
        ],
    }
    return web.json_response(CustomerDetailOut.model_validate(body).model_dump(mode="json"))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/customers", list_customers, name="api_customers")
    app.router.add_get("/api/v1/customers/{customer_id}", get_customer, name="api_customer")
