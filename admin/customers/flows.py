"""Who sees which customer, how much of them, and the one action on them (unmask).

As in ``admin.flows``: checks validate without side effects, ``do_*`` changes or
reveals something and writes its audit entry.  The reach is decided here once per
request, before anything is looked up, so an advisor asking for a customer they do
not follow gets the same 404 as for one that does not exist.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from markupsafe import Markup

from admin import review, rows
from admin.flows import FieldError, NotFound
from admin.keys import OPERATOR
from bot import customers as bot_customers
from bot import models as bot_models
from bot.flows import CATEGORY_LABELS, mask_free_text
from bot.models import RelationStatus
from core import audit
from core.access import Principal, principal_of
from core.appkit import DOMAINS
from core.audit import Actor
from core.crypto import DecryptionError, Keyring
from core.domain import CustomerPanel, PanelSurface
from tagging.attributes import ATTRIBUTES

log = logging.getLogger(__name__)

# Roles that see everyone's customers with personal data masked (names, remarks,
# numbers beyond their last four digits, the attributes marked masked_by_role).
MASKED_ROLES = frozenset({"marketing"})
# Roles bounded by the follow relation: their own customers, or their team's.
SCOPED_ROLES = frozenset({"advisor", "team_lead"})

INTENT_LABELS = {
    "product_inquiry": "产品咨询",
    "purchase_intent": "购买意向",
    "redemption_intent": "赎回意向",
    "complaint": "投诉",
    "account_service": "账户服务",
    "claim_service": "理赔服务",
    "risk_assessment": "风险测评",
    "chitchat": "闲聊",
}
ALERT_LABELS = {
    "violation": "违规提醒",
    "churn": "客户流失",
    "complaint": "投诉",
    "redemption_intent": "赎回意向",
    "transfer_fail": "客户继承失败",
}
FOLLOW_STATUS_LABELS = {"active": "跟进中", "lost": "已被客户删除", "removed": "已删除客户"}
PHONE_SOURCE_LABELS = {"remark_mobiles": "备注手机号", "remark": "备注", "description": "描述"}
GENDER_LABELS = {0: "未知", 1: "男", 2: "女"}
ATTRIBUTE_LABELS = {
    "risk_level": "风险承受能力",
    "aum_band": "资产规模",
    "age": "年龄",
    "aum": "资产（元）",
    "birthday": "生日",
    "maturity_date": "产品到期日",
    "branch": "所属网点",
    "holdings": "持仓",
}
HIDDEN = "（已脱敏）"

QUERY_MAX = 64
REASON_MIN = 4
REASON_MAX = 500


def customer_target(customer_id: int) -> str:
    return f"customer:{customer_id}"


# ------------------------------------------------------------------ the viewer


@dataclass(frozen=True)
class Viewer:
    """Who is looking, decided once per request: their reach and whether data is masked."""

    principal: Principal
    # The advisors whose customers they may see; None: every customer.
    reach: frozenset[str] | None
    masked: bool

    @property
    def role(self) -> str:
        return self.principal.role

    def may(self, permission: str) -> bool:
        return not permission or permission in self.principal.permissions


async def viewer_of(request: web.Request) -> Viewer:
    principal = principal_of(request)
    assert principal is not None  # the guard set it before any customer route runs
    op = request.get(OPERATOR)
    if op is None:
        # An API key acts for a system within its scopes, not for an advisor's book.
        return Viewer(principal=principal, reach=None, masked=False)
    reach = await review.reach_of(op) if op.role in SCOPED_ROLES else None
    return Viewer(principal=principal, reach=reach, masked=op.role in MASKED_ROLES)


# ------------------------------------------------------------------ shaping


def mask_name(name: str) -> str:
    """「周**」: the surname a marketer needs to address a letter, not who it is."""
    if not name:
        return ""
    return name[0] + "*" * max(1, min(len(name) - 1, 3))


def shown_phone(masked: str, viewer: Viewer) -> str:
    return "*" * (len(masked) - 4) + masked[-4:] if viewer.masked else masked


def _attribute_value(name: str, value: Any) -> str:
    if name == "holdings" and isinstance(value, list):
        codes = [str(h.get("product_code", "")) for h in value if isinstance(h, dict)]
        return f"{len(codes)} 只：" + "、".join(codes[:8]) + ("…" if len(codes) > 8 else "")
    return str(value)


@dataclass(frozen=True)
class FollowCard:
    advisor_userid: str
    advisor_name: str
    status: str
    status_label: str
    remark: str
    description: str
    added_at: datetime | None
    state: str


@dataclass(frozen=True)
class CustomerCard:
    """A customer as this viewer may see them."""

    id: int
    external_userid: str
    name: str
    corp_name: str
    gender: str
    phones: tuple[str, ...]
    follows: tuple[FollowCard, ...]
    last_message_at: datetime | None
    created_at: datetime
    attributes: tuple[tuple[str, str, str], ...] = field(default=())  # (name, label, value)

    @property
    def active_follows(self) -> tuple[FollowCard, ...]:
        return tuple(f for f in self.follows if f.status == "active")


def card_of(row: bot_customers.CustomerRow, viewer: Viewer) -> CustomerCard:
    follows = []
    for f in row.follows:
        # A scoped viewer sees the relations of their reach only: a colleague's remark
        # about the same customer is that colleague's note.
        if viewer.reach is not None and f.advisor_userid not in viewer.reach:
            continue
        follows.append(
            FollowCard(
                advisor_userid=f.advisor_userid,
                advisor_name=f.advisor_name,
                status=f.status,
                status_label=FOLLOW_STATUS_LABELS.get(f.status, f.status),
                remark=HIDDEN if viewer.masked and f.remark else f.remark,
                description=HIDDEN if viewer.masked and f.description else f.description,
                added_at=f.added_at,
                state=f.state,
            )
        )
    attributes = []
    for name, label in ATTRIBUTE_LABELS.items():
        if name not in row.attributes:
            continue
        spec = ATTRIBUTES.get(name)
        hidden = viewer.masked and spec is not None and spec.masked_by_role
        value = HIDDEN if hidden else _attribute_value(name, row.attributes[name])
        attributes.append((name, label, value))
    return CustomerCard(
        id=row.id,
        external_userid=row.external_userid,
        name=mask_name(row.name) if viewer.masked else row.name,
        corp_name=row.corp_name,
        gender=GENDER_LABELS.get(row.gender, "未知"),
        phones=tuple(shown_phone(p, viewer) for p in row.phones),
        follows=tuple(follows),
        last_message_at=row.last_message_at,
        created_at=row.created_at,
        attributes=tuple(attributes),
    )


# ------------------------------------------------------------------ the list


def is_phone_query(text: str) -> bool:
    """Whether a search is a whole phone number (looked up by its blind index)."""
    return bot_customers.normalise_phone(text.strip()) is not None


def check_query(text: str) -> str:
    text = text.strip()
    if len(text) > QUERY_MAX:
        raise FieldError("q", f"搜索内容最多 {QUERY_MAX} 个字符")
    if "\x00" in text:
        raise FieldError("q", "搜索内容含有无效字符")
    return text


async def search(
    *, viewer: Viewer, text: str, keyring: Keyring, offset: int, limit: int
) -> tuple[list[CustomerCard], int]:
    query = bot_customers.CustomerQuery(text=check_query(text), advisors=viewer.reach)
    rows, total = await bot_customers.search_customers(
        query=query, keyring=keyring, offset=offset, limit=limit
    )
    return [card_of(r, viewer) for r in rows], total


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite's MAX() of a timestamp column comes back as text
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def customer_row(
    *, customer_id: int, advisors: frozenset[str] | None
) -> bot_customers.CustomerRow | None:
    """``bot.customers.customer_rows`` for the one customer a page shows, in two
    written-out statements rather than four built ones: the customer with their last
    message (within ``advisors``' conversations), then their relations (advisor joined)
    and masked numbers together."""
    reach = ""
    params: list[Any] = []
    if advisors is not None:
        wanted = sorted(advisors) or [""]
        marks = ", ".join("?" * len(wanted))
        reach = f' AND "m"."advisor_id" IN (SELECT "ra"."id" FROM "bot_advisor" "ra" WHERE "ra"."userid" IN ({marks}))'  # noqa: S608, E501 - placeholders only
        params.extend(wanted)
    # Both read by the customer's id alone: asked together (SQLite's thread runs the
    # second as soon as the first is done; PostgreSQL on two of the pool's connections).
    found, related = await asyncio.gather(
        rows.fetch(
            f"SELECT {rows.columns(bot_models.Customer, 'c', 'c__')}, "  # noqa: S608 - model columns and placeholders only
            '(SELECT MAX("m"."msgtime") FROM "bot_message" "m" '
            f'WHERE "m"."customer_id" = "c"."id"{reach}) AS "last" '
            'FROM "bot_customer" "c" WHERE "c"."id" = ?',
            [*params, customer_id],
        ),
        rows.fetch(
            'SELECT \'f\' AS "kind", "f"."id" AS "id", "f"."remark", "f"."description", '
            '"f"."status", "f"."added_at", "f"."state", "a"."userid", "a"."name", NULL AS "phone" '
            'FROM "bot_follow_relation" "f" JOIN "bot_advisor" "a" ON "a"."id" = "f"."advisor_id" '
            'WHERE "f"."customer_id" = ? UNION ALL '
            'SELECT \'p\', "p"."id", NULL, NULL, NULL, NULL, NULL, NULL, NULL, "p"."phone_masked" '
            'FROM "bot_customer_phone" "p" WHERE "p"."customer_id" = ? ORDER BY 1, 2',
            [customer_id, customer_id],
        ),
    )
    if not found:
        return None
    c = rows.hydrate(bot_models.Customer, found[0], "c__")
    assert c is not None
    added_at = bot_models.FollowRelation._meta.fields_map["added_at"]
    follows, phones = [], []
    for r in related:
        if r["kind"] == "p":
            if r["phone"] not in phones:
                phones.append(str(r["phone"]))
            continue
        follows.append(
            bot_customers.FollowView(
                advisor_userid=str(r["userid"]),
                advisor_name=str(r["name"] or ""),
                remark=str(r["remark"] or ""),
                description=str(r["description"] or ""),
                status=str(r["status"]),
                added_at=added_at.to_python_value(r["added_at"]),
                state=str(r["state"] or ""),
            )
        )
    return bot_customers.customer_row(c, follows, phones, found[0]["last"])


async def customer_for(*, viewer: Viewer, customer_id: int) -> CustomerCard:
    """The customer if this viewer may see them, else NotFound (the same either way).

    In reach: some advisor of the viewer's reach still follows them (as
    ``bot.customers.customer_in_reach``), read from the relations the row brings anyway.
    """
    row = await customer_row(customer_id=customer_id, advisors=viewer.reach)
    if row is None or (
        viewer.reach is not None
        and not any(
            f.status == RelationStatus.ACTIVE.value and f.advisor_userid in viewer.reach
            for f in row.follows
        )
    ):
        raise NotFound(customer_target(customer_id))
    return card_of(row, viewer)


async def resolve_customer_id(raw: str) -> int | None:
    """A path's customer: the row id, or WeCom's external_userid (never all digits)."""
    if raw.isdigit():
        return int(raw) if len(raw) <= 18 else None
    if len(raw) > 64:
        return None
    return await bot_customers.customer_id_of(external_userid=raw)


# ------------------------------------------------------------------ the timeline


@dataclass(frozen=True)
class TimelineTurn:
    id: int
    side: str  # advisor | customer | other
    sender_label: str
    msgtime: datetime
    msgtype: str
    in_group: bool
    segments: list[review.Segment]
    text: str
    intent: str
    intent_label: str
    findings: tuple[tuple[str, str, str], ...]  # (category, label, severity)
    case_id: int | None
    case_status: str


TIMELINE_PAGE = 30


async def timeline(
    *, viewer: Viewer, card: CustomerCard, before_id: int | None, limit: int = TIMELINE_PAGE
) -> tuple[list[TimelineTurn], bool]:
    """The latest ``limit`` messages before ``before_id``, oldest first; and whether more."""
    rows = await bot_customers.timeline_lines(
        customer_id=card.id, advisors=viewer.reach, before_id=before_id, limit=limit + 1
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return [
        _turn(m, card, (m.case_id, m.case_status) if m.case_id is not None else None)
        for m in reversed(rows)
    ], more


def _turn(
    m: bot_customers.TimelineLine, card: CustomerCard, case: tuple[int, str] | None
) -> TimelineTurn:
    analysis = m.analysis
    pii = [p for p in analysis.get("pii") or [] if isinstance(p, dict)]
    marks: list[tuple[int, int, str, str]] = []
    findings = []
    if m.sender_role != "customer":
        for f in analysis.get("violations") or []:
            if not isinstance(f, dict):
                continue
            category = str(f.get("category", ""))
            label = CATEGORY_LABELS.get(category, category)
            severity = str(f.get("severity", ""))
            if (category, label, severity) not in findings:  # two spans, one category
                findings.append((category, label, severity))
            where = review.finding_range(m.masked_text, f, pii)
            if where is not None:
                tone = "hl-violation" if severity == "violation" else "hl-review"
                marks.append((where[0], where[1], tone, label))
    side = m.sender_role if m.sender_role in ("advisor", "customer") else "other"
    if side == "advisor":
        label = m.advisor_name or m.sender_id
    elif side == "customer":
        label = card.name or "客户"
    else:
        label = m.sender_id
    intent = str(m.intent or "")
    return TimelineTurn(
        id=m.id,
        side=side,
        sender_label=label,
        msgtime=m.msgtime,
        msgtype=m.msgtype,
        in_group=bool(m.roomid),
        segments=review.segments(m.masked_text, marks),
        text=m.masked_text,
        intent=intent,
        intent_label=INTENT_LABELS.get(intent, intent),
        findings=tuple(findings),
        case_id=case[0] if case is not None else None,
        case_status=case[1] if case is not None else "",
    )


@dataclass(frozen=True)
class AlertCard:
    kind: str
    label: str
    advisor_userid: str
    advisor_name: str
    created_at: datetime
    status: str


ALERTS_SHOWN = 20


async def alerts(*, viewer: Viewer, card: CustomerCard) -> list[AlertCard]:
    # ``bot.customers.alerts_of`` written out: newest first, within the viewer's reach.
    params: list[Any] = [card.external_userid]
    reach = ""
    if viewer.reach is not None:
        wanted = sorted(viewer.reach) or [""]
        reach = f' AND "al"."advisor_userid" IN ({", ".join("?" * len(wanted))})'
        params.extend(wanted)
    found = await rows.fetch(
        f'SELECT {rows.columns(bot_models.Alert, "al")} FROM "bot_alert" "al" '  # noqa: S608 - model columns and placeholders only
        f'WHERE "al"."external_userid" = ?{reach} '
        'ORDER BY "al"."created_at" DESC, "al"."id" DESC LIMIT ?',
        [*params, ALERTS_SHOWN],
    )
    names = {f.advisor_userid: f.advisor_name for f in card.follows}
    return [
        AlertCard(
            kind=a.kind,
            label=ALERT_LABELS.get(a.kind, a.kind),
            advisor_userid=a.advisor_userid or "",
            advisor_name=names.get(a.advisor_userid or "", ""),
            created_at=a.created_at,
            status=a.status,
        )
        for a in rows.hydrate_all(bot_models.Alert, found)
    ]


# ------------------------------------------------------------------ panels


@dataclass(frozen=True)
class PanelView:
    key: str
    title: str
    html: Markup | None
    failed: bool


async def panels(
    request: web.Request, *, viewer: Viewer, card: CustomerCard, surface: PanelSurface = "console"
) -> list[PanelView]:
    """Every domain's panel this viewer may see here, in order; one that fails says so."""
    found = [
        p
        for d in request.app.get(DOMAINS, ())
        for p in d.customer_panels
        if viewer.may(p.permission) and surface in p.surfaces
    ]

    async def one(p: CustomerPanel) -> PanelView | None:
        try:
            html = await p.render(request, card.id, viewer.principal)
        except Exception:
            log.exception("customer panel failed", extra={"panel": p.key, "customer_id": card.id})
            return PanelView(key=p.key, title=p.title, html=None, failed=True)
        if html is None:
            return None
        return PanelView(key=p.key, title=p.title, html=Markup(html), failed=False)  # noqa: S704 - a panel's contract: an escaped fragment (core.domain.CustomerPanel)

    # The panels read apart from each other: asked together, shown in their order.
    ordered = sorted(found, key=lambda p: (p.order, p.key))
    return [v for v in await asyncio.gather(*(one(p) for p in ordered)) if v is not None]


# ------------------------------------------------------------------ unmask


def check_reason(reason: str) -> str:
    reason = reason.strip()
    if len(reason) < REASON_MIN:
        raise FieldError("reason", f"请说明查看原文的理由（至少 {REASON_MIN} 个字）")
    if len(reason) > REASON_MAX:
        raise FieldError("reason", f"理由最多 {REASON_MAX} 个字符")
    return reason


@dataclass(frozen=True)
class Unmasked:
    phones: list[tuple[str, str, str]]  # (advisor userid, source label, number)


async def do_unmask_customer(
    *,
    actor: Actor,
    source: str,
    customer_id: int,
    reason: str,
    keyring: Keyring,
    viewer: Viewer,
) -> Unmasked:
    """The customer's phone numbers in clear, for this screen only, the reading audited.

    As a case's original: compliance only, with a stated reason; a failed opening (a
    key this process lacks) is audited too — the attempt is what matters.
    """
    reason = mask_free_text(check_reason(reason))
    await customer_for(viewer=viewer, customer_id=customer_id)
    try:
        originals = await bot_customers.phone_originals(customer_id=customer_id, keyring=keyring)
    except DecryptionError as exc:
        await audit.append_alone(
            actor=actor,
            action="customer.unmask",
            target=customer_target(customer_id),
            result="failure",
            source=source,
            detail={"reason": reason, "error": type(exc).__name__},
        )
        raise FieldError("reason", "无法解密：本进程未配置封存时使用的密钥") from None
    await audit.append_alone(
        actor=actor,
        action="customer.unmask",
        target=customer_target(customer_id),
        source=source,
        detail={"reason": reason, "phones": len(originals)},
    )
    return Unmasked(
        phones=[
            (p.advisor_userid, PHONE_SOURCE_LABELS.get(p.source, p.source), p.phone)
            for p in originals
        ]
    )


def audit_entries_for(customer_id: int) -> Any:
    return audit.entries(where=audit.AuditFilter(target=customer_target(customer_id)), limit=10)
