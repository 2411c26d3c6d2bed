"""HTTP adapters of the campaign API: parse → call one use case → shape the answer.

``campaigns:read`` lists campaigns and their results; ``campaigns:write`` builds them
(create, edit, submit, activate, pause, resume, archive); ``campaigns:approve`` is
compliance's decision (and is not an API-key scope: an approval names a person).
A refusal answers ``{"error": {"code", "message", "field", "problems": [...]}}`` with
every problem by field, and changes nothing.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bot.keys import ANALYZER
from core.access import principal_of, requires
from core.apidoc import api_doc
from core.audit import Actor
from sop import campaigns, stats
from sop.campaigns import VERSION_STATUS_LABELS, CampaignError, CampaignInvalid
from sop.models import Campaign, CampaignStatus, CampaignStep, CampaignVersion
from sop.schemas import CampaignIn, DecisionIn, EnrolIn


def error(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    problems: list[dict[str, str]] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message, "field": field}
    if problems is not None:
        body["problems"] = problems
    return web.json_response({"error": body}, status=status)


def actor_of(request: web.Request) -> Actor:
    p = principal_of(request)
    if p is None:  # the bootstrap token without the admin guard
        return Actor("api_key", "bootstrap", "bootstrap token")
    return Actor(p.kind, p.id, p.name)


class _Bad(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__("bad request")
        self.response = response


async def _body(request: web.Request, shape: type[BaseModel]) -> Any:
    try:
        raw = await request.json()
    except (ValueError, RecursionError):
        raise _Bad(error(400, "bad_request", "body must be JSON")) from None
    try:
        return shape.model_validate(raw)
    except ValidationError as exc:
        problems = [
            {
                "field": ".".join(str(p) for p in e["loc"]) or "body",
                "code": "invalid_input",
                "message": e["msg"],
            }
            for e in exc.errors()
        ]
        first = problems[0]
        raise _Bad(
            error(
                400,
                "invalid_input",
                f"{first['field']}: {first['message']}",
                field=first["field"],
                problems=problems,
            )
        ) from None


def _campaign_id(request: web.Request) -> int:
    raw = request.match_info["campaign_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise _Bad(error(404, "not_found", "campaign_id must be a number"))
    return int(raw)


def _refusal(exc: CampaignError) -> web.Response:
    problems = [p.as_dict() for p in exc.problems] if isinstance(exc, CampaignInvalid) else None
    return error(exc.status, exc.code, exc.message, field=exc.field, problems=problems)


async def _guarded(work: Any) -> web.Response:
    try:
        result: web.Response = await work()
    except _Bad as bad:
        return bad.response
    except CampaignError as exc:
        return _refusal(exc)
    return result


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def campaign_dict(c: Campaign) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "description": c.description,
        "owner": c.owner,
        "owner_name": c.owner_name,
        "segment": c.segment.value,
        "status": c.status.value,
        "current_version": c.current_version,
        "latest_version": c.latest_version,
        "created_at": _iso(c.created_at),
        "updated_at": _iso(c.updated_at),
        "activated_at": _iso(c.activated_at),
        "paused_at": _iso(c.paused_at),
        "archived_at": _iso(c.archived_at),
    }


def version_dict(v: CampaignVersion, steps: list[CampaignStep] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "version": v.version,
        "status": v.status.value,
        "status_label": VERSION_STATUS_LABELS[v.status],
        "trigger": v.trigger,
        "audience": v.audience,
        "reentry": v.reentry.value,
        "exit_conditions": v.exit_conditions,
        "goal": v.goal,
        "product": v.product,
        "timezone": v.timezone,
        "created_by": v.created_by,
        "created_at": _iso(v.created_at),
        "submitted_by": v.submitted_by,
        "submitted_at": _iso(v.submitted_at),
        "approved_by": v.approved_by,
        "approved_at": _iso(v.approved_at),
        "approval_comment": v.approval_comment,
        "activated_at": _iso(v.activated_at),
        "findings": v.findings,
    }
    if steps is not None:
        out["steps"] = [
            {
                "position": s.position,
                "name": s.name,
                "anchor": s.anchor.value,
                "offset_days": s.offset_days,
                "offset_minutes": s.offset_minutes,
                "at_time": s.at_time,
                "window_start": s.window_start,
                "window_end": s.window_end,
                "skip_weekends": s.skip_weekends,
                "skip_holidays": s.skip_holidays,
                "delivery": s.delivery.value,
                "content": s.content,
            }
            for s in steps
        ]
    return out


def _report(saved: campaigns.Saved) -> dict[str, Any]:
    return {
        **campaign_dict(saved.campaign),
        "version": version_dict(saved.version),
        "new_version": saved.new_version,
        "audience_count": saved.report.audience_count,
        "customers_total": saved.report.customers_total,
        "warnings": [w.as_dict() for w in saved.report.warnings],
    }


@requires("campaigns:read")
@api_doc(summary="SOP 活动列表 / campaigns with their status and counts")
async def list_campaigns(request: web.Request) -> web.Response:
    status = request.query.get("status") or None
    if status is not None and status not in {s.value for s in CampaignStatus}:
        return error(400, "invalid_input", "unknown status", field="status")
    rows = await campaigns.list_campaigns(status=status)
    return web.json_response(
        {
            "campaigns": [
                {
                    **campaign_dict(r.campaign),
                    "latest_version_status": r.latest_status.value,
                    "enrolled": r.enrolled,
                    "active_enrolments": r.active,
                    "touches_planned": r.planned,
                    "touches_sent": r.sent,
                }
                for r in rows
            ]
        }
    )


@requires("campaigns:write")
@api_doc(
    summary="新建 SOP 活动（草稿）/ create a campaign (draft, version 1)",
    request=CampaignIn,
    errors=(400, 503),
    status=201,
)
async def create_campaign(request: web.Request) -> web.Response:
    async def work() -> web.Response:
        spec = await _body(request, CampaignIn)
        saved = await campaigns.do_create_campaign(
            spec=spec,
            actor=actor_of(request),
            analyzer=request.app[ANALYZER],
            source=request.remote or "",
        )
        return web.json_response(_report(saved), status=201)

    return await _guarded(work)


@requires("campaigns:write")
@api_doc(
    summary="检查 SOP 活动（不保存）/ check a campaign without saving it",
    request=CampaignIn,
    errors=(400, 503),
)
async def check_campaign(request: web.Request) -> web.Response:
    async def work() -> web.Response:
        spec = await _body(request, CampaignIn)
        report = await campaigns.check_campaign(spec)
        findings, pii = await campaigns.analyze_contents(
            [s.content for s in spec.steps], analyzer=request.app[ANALYZER]
        )
        problems = report.problems + pii
        return web.json_response(
            {
                "ok": not problems,
                "problems": [p.as_dict() for p in problems],
                "warnings": [w.as_dict() for w in report.warnings],
                "findings": findings,
                "audience_count": report.audience_count,
                "customers_total": report.customers_total,
            }
        )

    return await _guarded(work)


@requires("campaigns:read")
@api_doc(summary="SOP 活动详情与各版本 / a campaign, its versions and steps", errors=(404,))
async def get_campaign(request: web.Request) -> web.Response:
    async def work() -> web.Response:
        c = await campaigns.get_campaign(_campaign_id(request))
        versions = []
        for v in await campaigns.versions_of(c):
            versions.append(version_dict(v, await campaigns.steps_of(v)))
        return web.json_response({**campaign_dict(c), "versions": versions})

    return await _guarded(work)


@requires("campaigns:write")
@api_doc(
    summary="修改 SOP 活动（运行中的活动生成新版本）/ edit a campaign",
    request=CampaignIn,
    errors=(400, 404, 409, 503),
)
async def update_campaign(request: web.Request) -> web.Response:
    async def work() -> web.Response:
        cid = _campaign_id(request)
        spec = await _body(request, CampaignIn)
        saved = await campaigns.do_update_campaign(
            campaign_id=cid,
            spec=spec,
            actor=actor_of(request),
            analyzer=request.app[ANALYZER],
            source=request.remote or "",
        )
        return web.json_response(_report(saved))

    return await _guarded(work)


@requires("campaigns:write")
@api_doc(
    summary="提交合规审批 / submit the latest version for compliance approval",
    errors=(400, 404, 409, 503),
)
async def submit_campaign(request: web.Request) -> web.Response:
    async def work() -> web.Response:
        cid = _campaign_id(request)
        v = await campaigns.do_submit(
            campaign_id=cid,
            actor=actor_of(request),
            analyzer=request.app[ANALYZER],
            source=request.remote or "",
        )
        c = await campaigns.get_campaign(cid)
        return web.json_response({**campaign_dict(c), "version": version_dict(v)})

    return await _guarded(work)


async def _decision(request: web.Request, *, approve: bool) -> web.Response:
    async def work() -> web.Response:
        cid = _campaign_id(request)
        body = await _body(request, DecisionIn)
        do = campaigns.do_approve if approve else campaigns.do_reject
        v = await do(
            campaign_id=cid,
            version=body.version,
            comment=body.comment,
            actor=actor_of(request),
            source=request.remote or "",
        )
        c = await campaigns.get_campaign(cid)
        return web.json_response({**campaign_dict(c), "version": version_dict(v)})

    return await _guarded(work)


@requires("campaigns:approve")
@api_doc(
    summary="合规批准 / compliance approves the version waiting for approval",
    request=DecisionIn,
    errors=(400, 403, 404, 409),
)
async def approve_campaign(request: web.Request) -> web.Response:
    return await _decision(request, approve=True)


@requires("campaigns:approve")
@api_doc(
    summary="合规驳回（须填写意见）/ compliance rejects, with a comment",
    request=DecisionIn,
    errors=(400, 403, 404, 409),
)
async def reject_campaign(request: web.Request) -> web.Response:
    return await _decision(request, approve=False)


def _transition(name: str, summary: str) -> Any:
    do = getattr(campaigns, f"do_{name}")

    @requires("campaigns:write")
    @api_doc(summary=summary, errors=(404, 409))
    async def handler(request: web.Request) -> web.Response:
        async def work() -> web.Response:
            c = await do(
                campaign_id=_campaign_id(request),
                actor=actor_of(request),
                source=request.remote or "",
            )
            return web.json_response(campaign_dict(c))

        return await _guarded(work)

    handler.__name__ = f"{name}_campaign"
    return handler


activate_campaign = _transition("activate", "启用已批准的版本 / run the approved latest version")
pause_campaign = _transition("pause", "暂停（待发触达立即停止）/ pause: pending touches stop")
resume_campaign = _transition("resume", "恢复运行 / resume a paused campaign")
archive_campaign = _transition("archive", "归档（未发触达跳过）/ archive: planned touches skipped")


@requires("campaigns:write")
@api_doc(
    summary="手动入组（名单或受众快照）/ enrol a list, or a snapshot of the audience",
    request=EnrolIn,
    errors=(400, 404, 409),
)
async def enrol_campaign(request: web.Request) -> web.Response:
    async def work() -> web.Response:
        cid = _campaign_id(request)
        body = await _body(request, EnrolIn)
        n = await campaigns.do_enrol_manual(
            campaign_id=cid,
            customers=body.customers,
            actor=actor_of(request),
            source=request.remote or "",
        )
        return web.json_response({"campaign_id": cid, "enrolled": n})

    return await _guarded(work)


@requires("campaigns:read")
@api_doc(summary="SOP 活动效果（按版本、步骤）/ results per version and step", errors=(404,))
async def campaign_stats(request: web.Request) -> web.Response:
    async def work() -> web.Response:
        c = await campaigns.get_campaign(_campaign_id(request))
        result = await stats.campaign_stats(c)
        return web.json_response(result.as_dict())

    return await _guarded(work)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/campaigns", list_campaigns)
    app.router.add_post("/api/v1/campaigns", create_campaign)
    app.router.add_post("/api/v1/campaigns/check", check_campaign)
    app.router.add_get("/api/v1/campaigns/{campaign_id}", get_campaign)
    app.router.add_put("/api/v1/campaigns/{campaign_id}", update_campaign)
    app.router.add_post("/api/v1/campaigns/{campaign_id}/submit", submit_campaign)
    app.router.add_post("/api/v1/campaigns/{campaign_id}/approve", approve_campaign)
    app.router.add_post("/api/v1/campaigns/{campaign_id}/reject", reject_campaign)
    app.router.add_post("/api/v1/campaigns/{campaign_id}/activate", activate_campaign)
    app.router.add_post("/api/v1/campaigns/{campaign_id}/pause", pause_campaign)
    app.router.add_post("/api/v1/campaigns/{campaign_id}/resume", resume_campaign)
    app.router.add_post("/api/v1/campaigns/{campaign_id}/archive", archive_campaign)
    app.router.add_post("/api/v1/campaigns/{campaign_id}/enrol", enrol_campaign)
    app.router.add_get("/api/v1/campaigns/{campaign_id}/stats", campaign_stats)
