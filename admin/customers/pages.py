"""Console pages of the customer list and the customer 360 page (zh-CN).

``customers:read`` opens both (an advisor or team lead only within their reach, the
rest masked as ``admin.customers.flows`` says); ``customers:unmask`` — compliance
alone — shows a customer's numbers in clear with a stated reason.
"""

from __future__ import annotations

import asyncio
from math import ceil
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from admin import fragments
from admin.auth import client_address
from admin.customers import flows
from admin.errors import see_other
from admin.flows import FieldError, NotFound, operator_actor
from admin.keys import OPERATOR
from admin.render import render
from core.access import menu, requires
from core.appkit import KEYRING

PAGE_SIZE = 50
MAX_PAGE = 100_000


def _page_number(raw: str) -> int:
    return int(raw) if raw.isdigit() and 0 < int(raw) <= MAX_PAGE else 1


async def _customer(request: web.Request, viewer: flows.Viewer) -> flows.CustomerCard:
    customer_id = await flows.resolve_customer_id(request.match_info["customer_id"])
    if customer_id is None:
        raise web.HTTPNotFound()
    try:
        return await flows.customer_for(viewer=viewer, customer_id=customer_id)
    except NotFound:
        raise web.HTTPNotFound() from None


@requires("customers:read")
@menu("客户", group="", order=8)
async def customer_list(request: web.Request) -> web.StreamResponse:
    return await _list_page(
        request,
        text=str(request.query.get("q", "")),
        page=_page_number(str(request.query.get("page", "1"))),
    )


@requires("customers:read")
async def customer_search(request: web.Request) -> web.StreamResponse:
    """``POST /customers/search``: the search form.

    A phone number is answered here, never put in a URL (browser history, a proxy's
    log would keep it in clear); any other text goes to ``/customers?q=`` so its pages
    can be linked.
    """
    form = await request.post()
    raw = form.get("q", "")
    text = raw.strip() if isinstance(raw, str) else ""
    if text and not flows.is_phone_query(text):
        url = request.app.router["customer_list"].url_for().with_query({"q": text[:200]})
        return see_other(str(url))
    return await _list_page(request, text=text, page=1)


async def _list_page(request: web.Request, *, text: str, page: int) -> web.StreamResponse:
    viewer = await flows.viewer_of(request)
    errors: dict[str, str] = {}
    try:
        cards, total = await flows.search(
            viewer=viewer,
            text=text,
            keyring=request.app[KEYRING],
            offset=(page - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
        )
    except FieldError as exc:
        errors[exc.field] = exc.message
        cards, total = [], 0
    pages = max(1, ceil(total / PAGE_SIZE))

    def page_link(n: int) -> str:
        # A number searched is never written into a link (see customer_search).
        shown = text.strip() if not flows.is_phone_query(text) else ""
        params = {"q": shown} if shown else {}
        return "?" + urlencode({**params, "page": n})

    return render(
        "customers/list.html",
        request,
        {
            "cards": cards,
            "total": total,
            "page": page,
            "pages": pages,
            "q": text.strip()[: flows.QUERY_MAX],
            "errors": errors,
            "page_link": page_link,
            "viewer": viewer,
            "scoped": viewer.reach is not None,
        },
        status=422 if errors else 200,
    )


async def _none() -> list[Any]:
    return []


async def _customer_page(
    request: web.Request,
    *,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    unmasked: flows.Unmasked | None = None,
    status: int = 200,
) -> web.Response:
    viewer = await flows.viewer_of(request)
    card = await _customer(request, viewer)
    # What the page shows besides the customer depends on the customer alone: asked
    # together (PostgreSQL answers on the pool's connections at once; SQLite's thread
    # reads while the next statement is built).
    (turns, more), alerts, panels, audit_entries = await asyncio.gather(
        flows.timeline(viewer=viewer, card=card, before_id=None),
        flows.alerts(viewer=viewer, card=card),
        flows.panels(request, viewer=viewer, card=card),
        flows.audit_entries_for(card.id) if viewer.may("audit:read") else _none(),
    )
    response = render(
        "customers/detail.html",
        request,
        {
            "c": card,
            "viewer": viewer,
            "turns": turns,
            "turns_html": fragments.timeline_turns(turns, can_review=viewer.may("review:read")),
            "more": more,
            "alerts": alerts,
            "panels": panels,
            "can_unmask": viewer.may("customers:unmask"),
            "audit_entries": audit_entries,
            "audit_rows": fragments.audit_rows(
                audit_entries, time_format="%m-%d %H:%M", detail_title=False
            ),
            "errors": errors or {},
            "form": form or {},
            "unmasked": unmasked,
            "back": request.query.get("back", "")[:300],
        },
        status=status,
    )
    if unmasked is not None:
        # The numbers in clear are for this screen only: no browser or proxy keeps them.
        response.headers["Cache-Control"] = "no-store"
    return response


@requires("customers:read")
async def customer_detail(request: web.Request) -> web.StreamResponse:
    return await _customer_page(request)


@requires("customers:read")
async def customer_timeline(request: web.Request) -> web.StreamResponse:
    """``GET /customers/{id}/timeline?before=<message id>``: earlier messages (htmx)."""
    viewer = await flows.viewer_of(request)
    card = await _customer(request, viewer)
    raw = str(request.query.get("before", ""))
    before = int(raw) if raw.isdigit() and len(raw) <= 18 else None
    turns, more = await flows.timeline(viewer=viewer, card=card, before_id=before)
    return render(
        "customers/timeline.html",
        request,
        {
            "c": card,
            "turns": turns,
            "turns_html": fragments.timeline_turns(turns, can_review=viewer.may("review:read")),
            "more": more,
        },
    )


@requires("customers:unmask")
async def customer_unmask(request: web.Request) -> web.StreamResponse:
    viewer = await flows.viewer_of(request)
    card = await _customer(request, viewer)
    form = await request.post()
    raw = form.get("reason", "")
    reason = raw if isinstance(raw, str) else ""
    try:
        unmasked = await flows.do_unmask_customer(
            actor=operator_actor(request[OPERATOR]),
            source=client_address(request),
            customer_id=card.id,
            reason=reason,
            keyring=request.app[KEYRING],
            viewer=viewer,
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except FieldError as exc:
        return await _customer_page(
            request, errors={exc.field: exc.message}, form={"reason": reason}, status=422
        )
    return await _customer_page(request, unmasked=unmasked)


def add_pages(app: web.Application) -> None:
    r = app.router
    r.add_get("/customers", customer_list, name="customer_list")
    r.add_post("/customers/search", customer_search, name="customer_search")
    r.add_get("/customers/{customer_id}", customer_detail, name="customer_detail")
    r.add_get("/customers/{customer_id}/timeline", customer_timeline, name="customer_timeline")
    r.add_post("/customers/{customer_id}/unmask", customer_unmask, name="customer_unmask")
