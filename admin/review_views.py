"""``/api/v1/review/cases``: a review case for systems, and correcting its category.

``cases:read`` reads a case (an operator's session within their reach, as the queue);
``review:correct`` — the compliance role, through a signed-in session, not an API key:
a correction is a reviewer's judgement and is audited as theirs — corrects a confirmed
case's category with a mandatory comment.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from admin import review
from admin.auth import client_address
from admin.errors import api_error
from admin.flows import FieldError, NotFound
from admin.keys import OPERATOR
from bot import models as bot_models
from core.access import principal_of, requires
from core.apidoc import api_doc
from core.audit import Actor


class CategoryCorrectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    categories: list[str] = Field(
        min_length=1, max_length=review.CATEGORIES_MAX, description="更正后的违规类别"
    )
    comment: str = Field(
        min_length=1, max_length=review.COMMENT_MAX, description="更正说明（必填）"
    )


class CaseOut(BaseModel):
    id: int
    status: str = Field(description="open | escalated | confirmed | false_positive")
    severity: str
    categories: list[str] = Field(description="当前类别：更正后的，未更正时为流水线判定的")
    detected_categories: list[str] = Field(description="流水线判定的类别")
    corrected: bool
    advisor_userid: str
    message_id: int
    text: str = Field(description="被标记消息的脱敏文字")
    created_at: datetime
    decided_at: datetime | None
    decided_by: str
    decision_comment: str
    corrected_at: datetime | None
    corrected_by: str
    correction_comment: str


def _case_out(case: bot_models.ReviewCase) -> dict[str, Any]:
    return CaseOut(
        id=case.id,
        status=case.status,
        severity=case.severity,
        categories=review.effective_categories(case),
        detected_categories=[c for c in case.categories or [] if isinstance(c, str)],
        corrected=bool(case.corrected_categories),
        advisor_userid=case.advisor_userid,
        message_id=case.message.id,
        text=case.message.masked_text,
        created_at=case.created_at,
        decided_at=case.decided_at,
        decided_by=case.decided_by,
        decision_comment=case.decision_comment,
        corrected_at=case.corrected_at,
        corrected_by=case.corrected_by,
        correction_comment=case.correction_comment,
    ).model_dump(mode="json")


def _case_id(request: web.Request) -> int | None:
    raw = request.match_info["case_id"]
    return int(raw) if raw.isdigit() and len(raw) <= 18 else None


async def _reach(request: web.Request) -> frozenset[str] | None:
    op = request.get(OPERATOR)
    # An API key reads for a system within its scope, not for an advisor's book.
    return None if op is None else await review.reach_of(op)


@requires("cases:read")
@api_doc(
    summary="审核案件 / a review case",
    response=CaseOut,
    path_params={"case_id": "审核案件 id"},
    errors=(404,),
)
async def get_case(request: web.Request) -> web.Response:
    """``GET /api/v1/review/cases/{case_id}``: status, categories, decision, correction."""
    case_id = _case_id(request)
    try:
        if case_id is None:
            raise NotFound("case")
        case = await review.case_in_reach(case_id=case_id, reach=await _reach(request))
    except NotFound:
        return api_error(404, "no such review case")
    return web.json_response(_case_out(case))


@requires("review:correct")
@api_doc(
    summary="更正已确认案件的违规类别 / correct a confirmed case's category",
    request=CategoryCorrectionIn,
    response=CaseOut,
    path_params={"case_id": "审核案件 id"},
    errors=(400, 404, 409),
)
async def correct_case_category(request: web.Request) -> web.Response:
    """``POST /api/v1/review/cases/{case_id}/category`` ``{categories, comment}``.

    Only a confirmed case (409 otherwise); the comment is mandatory; the pipeline's
    categories are kept beside the correction, which is audited and used by
    ``siyu review export-labels``.
    """
    case_id = _case_id(request)
    try:
        raw = await request.json()
    except (ValueError, RecursionError):
        return api_error(400, "body must be JSON {categories, comment}")
    try:
        body = CategoryCorrectionIn.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        return api_error(400, f"{where}: {first['msg']}", field=where)
    principal = principal_of(request)
    assert principal is not None  # the guard set it
    try:
        if case_id is None:
            raise NotFound("case")
        case = await review.do_correct_category(
            actor=Actor(principal.kind, principal.id, principal.name),
            source=client_address(request),
            case_id=case_id,
            categories=body.categories,
            comment=body.comment,
            reach=await _reach(request),
        )
    except NotFound:
        return api_error(404, "no such review case")
    except review.NotConfirmed:
        return api_error(409, "only a confirmed case's category is corrected", code="not_confirmed")
    except FieldError as exc:
        return api_error(400, exc.message, field=exc.field)
    return web.json_response(_case_out(case))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/review/cases/{case_id}", get_case, name="api_review_case")
    app.router.add_post(
        "/api/v1/review/cases/{case_id}/category",
        correct_case_category,
        name="api_review_correct",
    )
