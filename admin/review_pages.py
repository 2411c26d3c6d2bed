"""Console pages of the compliance review queue: parse, call one flow, render (zh-CN).

``review:read`` opens the queue and a case (an advisor or team lead only within their
reach, ``admin.review.reach_of``); ``review:decide`` assigns and decides; ``review:unmask``
— the compliance role alone — opens an original with a stated reason.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from math import ceil
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import web
from multidict import MultiDict

from admin import fragments, review
from admin.auth import client_address
from admin.errors import see_other
from admin.flows import FieldError, NotFound, operator_actor
from admin.keys import CONSOLE, OPERATOR
from admin.pages import _parse_local_date, parse_local_date_end
from admin.render import render
from bot import service as bot_service
from bot.flows import CATEGORY_LABELS
from core.access import menu, requires
from core.appkit import KEYRING

PAGE_SIZE = 50
# What the status filter offers: the undecided ones (the default work list) or one status.
STATUS_CHOICES = {
    "pending": ("待处理（待审核 + 已升级）", bot_service.REVIEW_UNDECIDED),
    "open": ("待审核", ("open",)),
    "escalated": ("已升级", ("escalated",)),
    "confirmed": ("确认违规", ("confirmed",)),
    "false_positive": ("误报", ("false_positive",)),
    "all": ("全部", ()),
}
_FILTERS = ("status", "category", "severity", "advisor", "team", "since", "until")


@dataclass(frozen=True)
class QueueQuery:
    values: dict[str, str]
    where: bot_service.ReviewFilter
    page: int


def _form_str(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def _case_id(request: web.Request) -> int:
    raw = request.match_info["case_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise web.HTTPNotFound()
    return int(raw)


def parse_queue_query(q: Any, *, reach: frozenset[str] | None) -> tuple[QueueQuery, dict[str, str]]:
    """The queue's filters from the query string; field errors leave the filter out."""
    values = {k: str(q.get(k, "")).strip() for k in _FILTERS}
    values["status"] = values["status"] or "pending"
    errors: dict[str, str] = {}
    if values["status"] not in STATUS_CHOICES:
        errors["status"] = "请选择有效的状态"
        values["status"] = "pending"
    if values["category"] and values["category"] not in CATEGORY_LABELS:
        errors["category"] = "请选择有效的违规类别"
        values["category"] = ""
    if values["severity"] and values["severity"] not in review.SEVERITY_LABELS:
        errors["severity"] = "请选择有效的严重程度"
        values["severity"] = ""
    since = until = None
    try:
        since = _parse_local_date(values["since"], field="since")
    except FieldError as exc:
        errors[exc.field] = exc.message
    try:
        until = parse_local_date_end(values["until"], field="until")
    except FieldError as exc:
        errors[exc.field] = exc.message
    if since and until and since >= until:
        errors["until"] = "结束日期不能早于开始日期"
        until = None
    raw_page = str(q.get("page", "1"))
    page = int(raw_page) if raw_page.isdigit() and 0 < int(raw_page) < 100_000 else 1
    where = bot_service.ReviewFilter(
        statuses=STATUS_CHOICES[values["status"]][1],
        category=values["category"],
        severity=values["severity"],
        advisor_userid=values["advisor"][:64],
        team_leader=values["team"][:64],
        since=since,
        until=until,
        advisors=reach,
    )
    return QueueQuery(values=values, where=where, page=page), errors


def _query_string(values: dict[str, str], **override: str | int) -> str:
    params = {k: v for k, v in values.items() if v}
    params.update({k: str(v) for k, v in override.items()})
    return urlencode(params)


@requires("review:read")
@menu("审核队列", group="合规", order=50)
async def review_queue(request: web.Request) -> web.StreamResponse:
    return await _queue_page(request, request.query)


async def _queue_page(
    request: web.Request,
    params: Any,
    *,
    bulk_errors: dict[str, str] | None = None,
    bulk_form: dict[str, str] | None = None,
) -> web.Response:
    op = request[OPERATOR]
    reach = await review.reach_of(op)
    query, errors = parse_queue_query(params, reach=reach)
    chosen = await review.queue_advisors(advisors=reach)
    advisors = chosen.advisors
    infos = {a.userid: a for a in advisors}
    total, facets = await review.queue_counts(
        where=query.where,
        categories=list(CATEGORY_LABELS),
        managers={a.userid: a.manager_userid for a in advisors},
    )
    rows = await review.queue_page(
        where=query.where, offset=(query.page - 1) * PAGE_SIZE, limit=PAGE_SIZE
    )
    at = review.now()
    table = request.app[CONSOLE].table
    pages = max(1, ceil(total / PAGE_SIZE))
    notice = ""
    decided, skipped = str(params.get("decided", "")), str(params.get("skipped", ""))
    if decided.isdigit():
        notice = f"已批量处理 {decided} 件"
        if skipped.isdigit() and skipped != "0":
            notice += f"；{skipped} 件已有最终结论，未作改动"
        notice += "。"
    return render(
        "review_queue.html",
        request,
        {
            "rows": [
                {
                    "case": c,
                    "advisor": infos.get(c.advisor_userid),
                    "age": review.age_of(c.created_at, at=c.decided_at or at),
                    "excerpt": (c.message.masked_text or "")[:60],
                    "customer": c.message.customer,
                }
                for c in rows
            ],
            "total": total,
            "page": query.page,
            "pages": pages,
            "values": query.values,
            "errors": errors,
            "facets": facets,
            "advisors": advisors,
            "leaders": chosen.leaders,
            "categories": CATEGORY_LABELS,
            "severities": review.SEVERITY_LABELS,
            "statuses": STATUS_CHOICES,
            "status_labels": review.STATUS_LABELS,
            "decision_labels": review.DECISION_LABELS,
            "can_decide": table.allows(op.role, "review:decide"),
            "query_string": lambda **o: _query_string(query.values, **o),
            "notice": notice,
            "bulk_errors": bulk_errors or {},
            "bulk_form": bulk_form or {},
            "back": _query_string(query.values, page=query.page),
            "department": review.department_label,
            "sla_warn_h": int(review.SLA_WARN.total_seconds() // 3600),
            "sla_breach_h": int(review.SLA_BREACH.total_seconds() // 3600),
        },
        status=422 if errors or bulk_errors else 200,
    )


async def _case_page(
    request: web.Request,
    case_id: int,
    *,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    notice: str = "",
    original: str | None = None,
    status: int = 200,
) -> web.Response:
    op = request[OPERATOR]
    reach = await review.reach_of(op)
    try:
        case, people = await review.case_page_read(case_id=case_id, reach=reach)
    except NotFound:
        raise web.HTTPNotFound() from None
    table = request.app[CONSOLE].table
    can_decide = table.allows(op.role, "review:decide")
    view, reviewers = await asyncio.gather(
        review.case_view(case=case, people=people),
        review.compliance_reviewers() if can_decide else _nobody(),
    )
    at = review.now()
    response = render(
        "review_case.html",
        request,
        {
            "v": view,
            "c": case,
            "thread": fragments.case_thread(view.turns),
            "earlier_rows": fragments.earlier_cases(
                view.earlier, categories=CATEGORY_LABELS, statuses=review.STATUS_LABELS
            ),
            "audit_rows": fragments.audit_rows(
                view.audit_entries,
                time_format="%m-%d %H:%M:%S",
                detail_title=True,
                empty="尚无处理记录",
            ),
            # A decided case's age stops at its decision (how long the review took).
            "age": review.age_of(case.created_at, at=case.decided_at or at),
            "categories": CATEGORY_LABELS,
            "severities": review.SEVERITY_LABELS,
            "status_labels": review.STATUS_LABELS,
            "decision_labels": review.DECISION_LABELS,
            "source_labels": review.SOURCE_LABELS,
            "can_decide": can_decide,
            "can_unmask": table.allows(op.role, "review:unmask"),
            "can_correct": table.allows(op.role, "review:correct"),
            "effective": review.effective_categories(case),
            "corrected_notice": bool(request.query.get("corrected")),
            "undecided": case.status in bot_service.REVIEW_UNDECIDED,
            "reviewers": reviewers,
            "errors": errors or {},
            "form": form or {},
            "notice": notice,
            "original": original,
            "back": request.query.get("back", ""),
            "department": review.department_label,
            "decided_notice": review.DECISION_LABELS.get(request.query.get("decided", ""), ""),
            "assigned_notice": request.query.get("assigned", "")[:64],
        },
        status=status,
    )
    if original is not None:
        # The unmasked text is for this screen only: no browser or proxy keeps it.
        response.headers["Cache-Control"] = "no-store"
    return response


async def _nobody() -> list[Any]:
    return []


@requires("review:read")
async def review_case(request: web.Request) -> web.StreamResponse:
    return await _case_page(request, _case_id(request))


def _case_url(request: web.Request, case_id: int, **query: str) -> str:
    url = request.app.router["review_case"].url_for(case_id=str(case_id))
    return str(url.with_query(query) if query else url)


@requires("review:decide")
async def review_assign(request: web.Request) -> web.StreamResponse:
    case_id = _case_id(request)
    form = await request.post()
    raw = _form_str(form, "assignee")
    try:
        assignee = await review.do_assign_case(
            actor=operator_actor(request[OPERATOR]),
            source=client_address(request),
            case_id=case_id,
            assignee_id=int(raw) if raw.isdigit() and len(raw) < 19 else 0,
            reach=await review.reach_of(request[OPERATOR]),
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except FieldError as exc:
        return await _case_page(request, case_id, errors={exc.field: exc.message}, status=422)
    return see_other(_case_url(request, case_id, assigned=assignee.display_name or assignee.name))


@requires("review:decide")
async def review_decide(request: web.Request) -> web.StreamResponse:
    case_id = _case_id(request)
    form = await request.post()
    values = {k: _form_str(form, k) for k in ("decision", "comment")}
    try:
        result = await review.do_decide_cases(
            actor=operator_actor(request[OPERATOR]),
            source=client_address(request),
            case_ids=[case_id],
            decision=values["decision"],
            comment=values["comment"],
            reach=await review.reach_of(request[OPERATOR]),
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except FieldError as exc:
        return await _case_page(
            request, case_id, errors={exc.field: exc.message}, form=values, status=422
        )
    if not result.decided:
        return await _case_page(
            request,
            case_id,
            errors={"decision": "该案件已有最终结论，未作改动"},
            form=values,
            status=409,
        )
    return see_other(_case_url(request, case_id, decided=values["decision"]))


@requires("review:correct")
async def review_correct(request: web.Request) -> web.StreamResponse:
    """``POST /review/{case_id}/category``: a confirmed case's category corrected."""
    case_id = _case_id(request)
    form = await request.post()
    chosen = [v for v in form.getall("categories", []) if isinstance(v, str)]
    comment = _form_str(form, "correction_comment")
    values = {"correction_comment": comment, "categories": ",".join(chosen)}
    try:
        await review.do_correct_category(
            actor=operator_actor(request[OPERATOR]),
            source=client_address(request),
            case_id=case_id,
            categories=chosen,
            comment=comment,
            reach=await review.reach_of(request[OPERATOR]),
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except review.NotConfirmed:
        return await _case_page(
            request,
            case_id,
            errors={"categories": "只能更正「确认违规」案件的类别"},
            form=values,
            status=409,
        )
    except FieldError as exc:
        field = "correction_comment" if exc.field == "comment" else exc.field
        return await _case_page(
            request, case_id, errors={field: exc.message}, form=values, status=422
        )
    return see_other(_case_url(request, case_id, corrected="1"))


@requires("review:unmask")
async def review_unmask(request: web.Request) -> web.StreamResponse:
    case_id = _case_id(request)
    form = await request.post()
    reason = _form_str(form, "reason")
    try:
        text = await review.do_unmask_case(
            actor=operator_actor(request[OPERATOR]),
            source=client_address(request),
            case_id=case_id,
            reason=reason,
            keyring=request.app[KEYRING],
            reach=await review.reach_of(request[OPERATOR]),
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except FieldError as exc:
        return await _case_page(
            request, case_id, errors={exc.field: exc.message}, form={"reason": reason}, status=422
        )
    return await _case_page(request, case_id, original=text)


@requires("review:decide")
async def review_bulk(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    raw_ids = [v for v in form.getall("case_ids", []) if isinstance(v, str)]
    back = _form_str(form, "back")
    try:
        ids = review.check_case_ids(raw_ids)
        result = await review.do_decide_cases(
            actor=operator_actor(request[OPERATOR]),
            source=client_address(request),
            case_ids=ids,
            decision=_form_str(form, "decision"),
            comment=_form_str(form, "comment"),
            reach=await review.reach_of(request[OPERATOR]),
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except FieldError as exc:
        # The queue again, as it was filtered, with the refusal: nothing was changed.
        return await _queue_page(
            request,
            MultiDict(parse_qsl(back)),
            bulk_errors={exc.field: exc.message},
            bulk_form={
                "decision": _form_str(form, "decision"),
                "comment": _form_str(form, "comment"),
            },
        )
    target = str(request.app.router["review_queue"].url_for())
    done = urlencode({"decided": len(result.decided), "skipped": len(result.skipped)})
    return see_other(f"{target}?{back}&{done}" if back else f"{target}?{done}")


def add_pages(app: web.Application) -> None:
    r = app.router
    r.add_get("/review", review_queue, name="review_queue")
    r.add_post("/review/bulk", review_bulk, name="review_bulk")
    r.add_get("/review/{case_id}", review_case, name="review_case")
    r.add_post("/review/{case_id}/assign", review_assign, name="review_assign")
    r.add_post("/review/{case_id}/decide", review_decide, name="review_decide")
    r.add_post("/review/{case_id}/unmask", review_unmask, name="review_unmask")
    r.add_post("/review/{case_id}/category", review_correct, name="review_correct")
