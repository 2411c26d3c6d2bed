"""The compliance review workflow: the queue, a case, and what a reviewer decides.

Review cases are bot's rows (``bot.models.ReviewCase``, opened by the pipeline when an
advisor's line to a customer has a finding); this module is admin's workflow over them
and reaches them through ``bot.service`` — but for the queue's and the case page's
reads, written out here through ``admin.rows`` (a reviewer opens them all day).  As in
``admin.flows``: ``check_*`` validates without side effects, ``do_*`` changes state
and writes its audit entry in the same transaction.  Reviewers see masked text only;
the original is opened per case, with a stated reason, by the compliance role alone,
and that reading is audited.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.transactions import in_transaction

from admin import rows
from admin import service as admin_service
from admin.flows import FieldError, NotFound
from admin.models import Operator
from bot import models as bot_models
from bot import service as bot_service
from bot.flows import CATEGORY_LABELS, mask_free_text
from bot.originals import original_text
from core import audit
from core.audit import Actor
from core.crypto import DecryptionError, Keyring

SEVERITY_LABELS = {"violation": "违规", "review": "待复核"}
STATUS_LABELS = {
    "open": "待审核",
    "escalated": "已升级",
    "confirmed": "确认违规",
    "false_positive": "误报",
}
DECISION_LABELS = {
    "confirmed": "确认违规",
    "false_positive": "误报",
    "escalated": "升级处理",
}
SOURCE_LABELS = {"rule": "规则", "model": "模型"}

# Review SLA: a case should be decided within a working day and never wait more than
# three days — the regulator's 销售行为 reviews expect prompt handling and the
# advisor's next conversation may repeat the mistake.
SLA_WARN = timedelta(hours=24)
SLA_BREACH = timedelta(hours=72)

COMMENT_MAX = 2000
REASON_MIN = 4
REASON_MAX = 500
BULK_MAX = 200


def now() -> datetime:
    return datetime.now(UTC)


def case_target(case_id: int) -> str:
    return f"review_case:{case_id}"


# ------------------------------------------------------------------ who sees what


async def reach_of(op: Operator) -> frozenset[str] | None:
    """The advisors whose cases ``op`` may see; None = every advisor.

    Compliance and admin review the whole institution.  An advisor sees the cases
    on their own lines, a team lead those of the advisors whose WeCom direct_leader
    they are — both through the WeCom userid on their account; without one, nothing.
    """
    if op.role in ("compliance", "admin"):
        return None
    if not op.wecom_userid:
        return frozenset()
    if op.role == "advisor":
        return frozenset({op.wecom_userid})
    if op.role == "team_lead":
        return await bot_service.team_advisors(leader_userid=op.wecom_userid)
    return frozenset()


def _case_sql() -> str:
    b = bot_models
    return (
        f"SELECT {rows.columns(b.ReviewCase, 'c', 'c__')}, {rows.columns(b.Message, 'm', 'm__')}, "  # noqa: S608 - model columns only
        f"{rows.columns(b.Customer, 'cu', 'cu__')}, {rows.columns(b.Advisor, 'a', 'a__')} "
        'FROM "bot_review_case" "c" JOIN "bot_message" "m" ON "m"."id" = "c"."message_id" '
        'LEFT JOIN "bot_customer" "cu" ON "cu"."id" = "m"."customer_id" '
        'LEFT JOIN "bot_advisor" "a" ON "a"."id" = "m"."advisor_id" '
        'WHERE "c"."id" = ?'
    )


@functools.cache
def _case_page_sql() -> str:
    # The case read, with the case's advisor (by the userid the case names) and their
    # team lead joined in: what advisor_and_leader reads, in the same statement.
    people = ", ".join(
        f'"{alias}"."{col}" AS "{alias}_{col}"'
        for alias in ("ca", "l")
        for col in ("userid", "name", "department", "manager_userid")
    )
    return (
        _case_sql()
        .replace(' FROM "bot_review_case" "c" ', f' , {people} FROM "bot_review_case" "c" ', 1)
        .replace(
            ' WHERE "c"."id" = ?',
            ' LEFT JOIN "bot_advisor" "ca" ON "ca"."userid" = "c"."advisor_userid" '
            'LEFT JOIN "bot_advisor" "l" ON "l"."userid" = "ca"."manager_userid" '
            'WHERE "c"."id" = ?',
            1,
        )
    )


def _case_of(row: dict[str, Any]) -> bot_models.ReviewCase:
    case = rows.hydrate(bot_models.ReviewCase, row, "c__")
    message = rows.hydrate(bot_models.Message, row, "m__")
    assert case is not None and message is not None  # an inner join: both are there
    rows.attach(message, "customer", rows.hydrate(bot_models.Customer, row, "cu__"))
    rows.attach(message, "advisor", rows.hydrate(bot_models.Advisor, row, "a__"))
    rows.attach(case, "message", message)
    return case


async def review_case(*, case_id: int) -> bot_models.ReviewCase | None:
    """``bot.service.review_case`` in one written-out statement: the case with its
    message, and the message's customer and advisor, as the same model instances
    (the ORM's prefetch ran four statements and cost a case page ~2 ms on SQLite)."""
    found = await rows.fetch(_case_sql(), [case_id])
    return _case_of(found[0]) if found else None


People = tuple[bot_service.AdvisorInfo | None, bot_service.AdvisorInfo | None]


async def case_page_read(
    *, case_id: int, reach: frozenset[str] | None
) -> tuple[bot_models.ReviewCase, People]:
    """``case_in_reach`` and ``advisor_and_leader`` of its advisor, in one statement:
    the case page's first read."""
    found = await rows.fetch(_case_page_sql(), [case_id])
    if not found or (reach is not None and found[0]["c__advisor_userid"] not in reach):
        raise NotFound(case_target(case_id))
    return _case_of(found[0]), _people(found[0], "ca_", "l_")


def _people(row: dict[str, Any], prefix: str, lead_prefix: str) -> People:
    if row[prefix + "userid"] is None:
        return None, None
    advisor = _advisor_info(row, prefix)
    if not advisor.manager_userid:
        return advisor, None
    if row[lead_prefix + "userid"] is None:
        # A lead not (yet) synced is named by userid alone.
        return advisor, bot_service.AdvisorInfo(advisor.manager_userid, "", "", "")
    return advisor, _advisor_info(row, lead_prefix)


async def case_in_reach(*, case_id: int, reach: frozenset[str] | None) -> bot_models.ReviewCase:
    """The case, or NotFound — also when it exists outside the caller's reach, so
    the answer never tells whether a case exists (same 404 either way)."""
    case = await review_case(case_id=case_id)
    if case is None or (reach is not None and case.advisor_userid not in reach):
        raise NotFound(case_target(case_id))
    return case


# ------------------------------------------------------------------ checks


def check_comment(comment: str) -> str:
    comment = comment.strip()
    if not comment:
        raise FieldError("comment", "请填写审核意见（必填），说明判断依据")
    if len(comment) > COMMENT_MAX:
        raise FieldError("comment", f"审核意见最多 {COMMENT_MAX} 个字符")
    return comment


def check_decision(decision: str) -> str:
    if decision not in bot_service.REVIEW_DECISIONS:
        raise FieldError("decision", "请选择审核结论：确认违规、误报或升级处理")
    return decision


def check_reason(reason: str) -> str:
    reason = reason.strip()
    if len(reason) < REASON_MIN:
        raise FieldError("reason", f"请说明查看原文的理由（至少 {REASON_MIN} 个字）")
    if len(reason) > REASON_MAX:
        raise FieldError("reason", f"理由最多 {REASON_MAX} 个字符")
    return reason


CATEGORIES_MAX = 10


def check_categories(raw: Sequence[str]) -> list[str]:
    """The corrected categories: known names, at least one (a case with none is a false
    positive — decided as such, not corrected to nothing)."""
    chosen = sorted({str(c).strip() for c in raw if str(c).strip()})
    if not chosen:
        raise FieldError("categories", "请选择更正后的违规类别（至少一项）")
    unknown = [c for c in chosen if c not in CATEGORY_LABELS]
    if unknown:
        raise FieldError("categories", f"未知的违规类别：{'、'.join(unknown[:3])}")
    if len(chosen) > CATEGORIES_MAX:
        raise FieldError("categories", f"最多选择 {CATEGORIES_MAX} 个类别")
    return chosen


def effective_categories(case: bot_models.ReviewCase) -> list[str]:
    """What a case stands for now: the reviewer's correction, else what the pipeline found."""
    found = case.corrected_categories if case.corrected_categories else case.categories
    return [c for c in found or [] if isinstance(c, str)]


def check_case_ids(raw: Sequence[str]) -> list[int]:
    ids = sorted({int(v) for v in raw if v.isdigit()})
    if not ids or len(ids) != len(set(raw)):
        raise FieldError("case_ids", "请勾选要批量处理的案件")
    if len(ids) > BULK_MAX:
        raise FieldError("case_ids", f"一次最多批量处理 {BULK_MAX} 件")
    return ids


async def compliance_reviewers() -> list[Operator]:
    """Who a case may be assigned to: active compliance operators."""
    return await admin_service.operators_with_role(role="compliance", status="active")


# ------------------------------------------------------------------ actions


async def do_assign_case(
    *,
    actor: Actor,
    source: str,
    case_id: int,
    assignee_id: int,
    reach: frozenset[str] | None,
) -> Operator:
    await case_in_reach(case_id=case_id, reach=reach)
    assignee = await admin_service.operator_by_id(operator_id=assignee_id)
    if assignee is None or assignee.role != "compliance" or assignee.status != "active":
        raise FieldError("assignee", "只能分派给在职的合规人员")
    async with in_transaction() as conn:
        await bot_service.assign_review_case(
            conn=conn,
            case_id=case_id,
            assignee_id=assignee.id,
            assignee_name=assignee.display_name or assignee.name,
        )
        await audit.append(
            conn=conn,
            actor=actor,
            action="review.assign",
            target=case_target(case_id),
            source=source,
            detail={"assignee": f"operator:{assignee.id}", "assignee_name": assignee.name},
        )
    return assignee


@dataclass(frozen=True)
class Decided:
    decided: list[int]
    # Already final (decided by someone else meanwhile): left as they were.
    skipped: list[int]


async def do_decide_cases(
    *,
    actor: Actor,
    source: str,
    case_ids: Sequence[int],
    decision: str,
    comment: str,
    reach: frozenset[str] | None,
) -> Decided:
    """Decide one case or several (bulk, for obvious duplicates), one audit entry each.

    A final decision (confirmed / false_positive) is never overwritten: two reviewers
    deciding the same case at once — the second finds it decided and is told so.
    """
    decision = check_decision(decision)
    # Reviewers quote the chat; a personal number in a comment is masked before it is
    # stored or written to the audit log (PIPL art. 51).
    comment = mask_free_text(check_comment(comment))
    for case_id in case_ids:
        await case_in_reach(case_id=case_id, reach=reach)
    at = now()
    async with in_transaction() as conn:
        open_ids = await bot_service.undecided_case_ids(conn=conn, case_ids=case_ids)
        if open_ids:
            await bot_service.decide_review_cases(
                conn=conn,
                case_ids=open_ids,
                status=decision,
                comment=comment,
                decided_by=actor.name or actor.ref,
                at=at,
            )
        for case_id in open_ids:
            await audit.append(
                conn=conn,
                actor=actor,
                action="review.decide",
                target=case_target(case_id),
                source=source,
                at=at,
                detail={
                    "decision": decision,
                    "comment": comment,
                    "bulk": len(case_ids) > 1,
                },
            )
    return Decided(decided=open_ids, skipped=[i for i in case_ids if i not in open_ids])


class NotConfirmed(ValueError):
    """Only a confirmed case's category is corrected (the others have no category to fix)."""


async def do_correct_category(
    *,
    actor: Actor,
    source: str,
    case_id: int,
    categories: Sequence[str],
    comment: str,
    reach: frozenset[str] | None,
) -> bot_models.ReviewCase:
    """Correct a confirmed case's category, with a mandatory comment, audited.

    The pipeline's categories stay on the row beside the correction, so the audit entry
    and the case page say what was found and what it was corrected to; the labelled
    export (``siyu review export-labels``) uses the correction.  Correcting again
    replaces the previous correction (each one audited).
    """
    chosen = check_categories(categories)
    comment = mask_free_text(check_comment(comment))
    case = await case_in_reach(case_id=case_id, reach=reach)
    if case.status != "confirmed":
        raise NotConfirmed(case.status)
    before = effective_categories(case)
    if chosen == sorted(before):
        raise FieldError("categories", "更正后的类别与当前类别相同")
    at = now()
    async with in_transaction() as conn:
        changed = await bot_service.correct_review_case(
            conn=conn,
            case_id=case_id,
            categories=chosen,
            comment=comment,
            corrected_by=actor.name or actor.ref,
            at=at,
        )
        if not changed:  # decided otherwise meanwhile
            raise NotConfirmed("changed")
        await audit.append(
            conn=conn,
            actor=actor,
            action="review.correct_category",
            target=case_target(case_id),
            source=source,
            at=at,
            detail={"from": before, "to": chosen, "detected": case.categories, "comment": comment},
        )
    return await case_in_reach(case_id=case_id, reach=reach)


async def do_unmask_case(
    *,
    actor: Actor,
    source: str,
    case_id: int,
    reason: str,
    keyring: Keyring,
    reach: frozenset[str] | None,
) -> str:
    """The flagged message's original text, for this case only, with the reason audited.

    The text is returned to be shown once, never stored.  A failed opening (a key
    not configured in this process) is audited too: the attempt is what matters.
    """
    reason = mask_free_text(check_reason(reason))
    case = await case_in_reach(case_id=case_id, reach=reach)
    message: bot_models.Message = case.message
    try:
        text = original_text(message, keyring=keyring)
    except DecryptionError as exc:
        await audit.append_alone(
            actor=actor,
            action="review.unmask",
            target=case_target(case_id),
            result="failure",
            source=source,
            detail={"reason": reason, "message": message.id, "error": type(exc).__name__},
        )
        raise FieldError("reason", "原文无法解密：本进程未配置封存该消息时使用的密钥") from None
    await audit.append_alone(
        actor=actor,
        action="review.unmask",
        target=case_target(case_id),
        source=source,
        detail={"reason": reason, "message": message.id},
    )
    return text


# ------------------------------------------------------------------ the case page


Segment = tuple[str, str, str]
"""(text, css class, title): a run of a message's text, highlighted or not."""


def finding_range(
    masked: str, finding: dict[str, Any], pii: Sequence[dict[str, Any]]
) -> tuple[int, int] | None:
    """Where a finding sits in the *masked* text.

    Offsets refer to the original.  The default mask styles replace digits by ``*``
    one for one, so an offset stays valid — except e-mail addresses (the local part
    becomes at least three ``*``) and the ``tag`` style (a number becomes 「[手机号]」).
    The evidence is the masked text of the span widened to every number it touches
    (``compliance_nlp.pii.mask_span``), so: take the span, widen it the same way, and
    trust it only when the masked text there *is* the evidence.  Otherwise fall back
    to the evidence's occurrence nearest the original offset; None when it is absent.
    """
    evidence = str(finding.get("evidence") or "")
    start, end = finding.get("start"), finding.get("end")
    if isinstance(start, int) and isinstance(end, int) and 0 <= start < end:
        touching = [
            p
            for p in pii
            if isinstance(p.get("start"), int)
            and isinstance(p.get("end"), int)
            and p["start"] < end
            and start < p["end"]
        ]
        lo = min([start, *(p["start"] for p in touching)])
        hi = max([end, *(p["end"] for p in touching)])
        if hi <= len(masked) and (not evidence or masked[lo:hi] == evidence):
            return lo, hi
    if not evidence:
        return None
    hits = []
    at = masked.find(evidence)
    while at >= 0:
        hits.append(at)
        at = masked.find(evidence, at + 1)
    if not hits:
        return None
    near = start if isinstance(start, int) else 0
    best = min(hits, key=lambda h: abs(h - near))
    return best, best + len(evidence)


def segments(text: str, marks: Sequence[tuple[int, int, str, str]]) -> list[Segment]:
    """Cut ``text`` into plain and highlighted runs; overlapping marks are merged
    (the first mark's class and every title)."""
    spans = sorted((s, e, c, t) for s, e, c, t in marks if 0 <= s < e <= len(text))
    merged: list[list[Any]] = []
    for s, e, c, t in spans:
        if merged and s < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
            if t and t not in merged[-1][3]:
                merged[-1][3] = f"{merged[-1][3]}；{t}" if merged[-1][3] else t
        else:
            merged.append([s, e, c, t])
    out: list[Segment] = []
    pos = 0
    for s, e, c, t in merged:
        if s > pos:
            out.append((text[pos:s], "", ""))
        out.append((text[s:e], c, t))
        pos = e
    if pos < len(text):
        out.append((text[pos:], "", ""))
    return out


@dataclass(frozen=True)
class FindingView:
    category: str
    category_label: str
    severity: str
    source: str
    rule_id: str
    score: float | None
    basis: str
    evidence: str
    located: bool
    context_evidence: str
    # The id of the stored message that gave the line its meaning, when found.
    context_message_id: int | None


@dataclass(frozen=True)
class TurnView:
    id: int
    flagged: bool
    side: str  # advisor | customer | other
    sender_label: str
    msgtime: datetime
    msgtype: str
    segments: list[Segment]
    context_for: list[str]


@dataclass(frozen=True)
class CaseView:
    case: bot_models.ReviewCase
    message: bot_models.Message
    findings: list[FindingView]
    turns: list[TurnView]
    advisor: bot_service.AdvisorInfo | None
    leader: bot_service.AdvisorInfo | None
    customer_name: str
    customer_id: str
    earlier: list[EarlierCase]
    audit_entries: list[audit.AuditRecord]
    # How the message came in: through an API key (named), the archive puller, a callback.
    ingested_via: str


# The pipeline hands an advisor line the last CONTEXT_TURNS text turns of its
# conversation within a day (bot.pipeline); ``context_index`` indexes that list.
CONTEXT_TURNS = 8
CONTEXT_WINDOW = timedelta(hours=24)
TURNS_BEFORE = 12
TURNS_AFTER = 6


def _side(m: bot_models.Message | bot_service.ConversationLine) -> str:
    return m.sender_role if m.sender_role in ("advisor", "customer") else "other"


def _context_source(
    finding: dict[str, Any],
    flagged: bot_models.Message,
    prior: Sequence[bot_service.ConversationLine],
) -> bot_service.ConversationLine | None:
    """The earlier message a finding's ``context_index`` names, checked by its evidence."""
    evidence = str(finding.get("context_evidence") or "")
    index = finding.get("context_index")
    if index is None and not evidence:
        return None
    window = [m for m in prior if m.masked_text and m.msgtime >= flagged.msgtime - CONTEXT_WINDOW][
        -CONTEXT_TURNS:
    ]
    if isinstance(index, int) and 0 <= index < len(window):
        candidate = window[index]
        if not evidence or evidence in candidate.masked_text:
            return candidate
    if evidence:
        for m in reversed(prior):
            if evidence in m.masked_text:
                return m
    return None


_LINE_COLUMNS = '"id", "sender_role", "sender_id", "msgtime", "msgtype", "masked_text"'


def _conversation_sql(*, in_room: bool) -> str:
    same = (
        '"roomid" = ?' if in_room else '"roomid" IS NULL AND "advisor_id" = ? AND "customer_id" = ?'
    )
    side = (  # identifiers and placeholders only
        'SELECT {later} AS "later", ' + _LINE_COLUMNS + ' FROM "bot_message" WHERE ' + same + " "  # noqa: S608
        'AND ("msgtime" {op} ? OR ("msgtime" = ? AND "id" {op} ?)) '
        'ORDER BY "msgtime" {order}, "id" {order} LIMIT ?'
    )
    earlier = side.format(later=0, op="<", order="DESC")
    later = side.format(later=1, op=">", order="ASC")
    return f'SELECT * FROM ({earlier}) "b" UNION ALL SELECT * FROM ({later}) "f"'  # noqa: S608 - identifiers and placeholders only


_CONVERSATION_SQL = {True: _conversation_sql(in_room=True), False: _conversation_sql(in_room=False)}


async def conversation_around(
    *, message: bot_models.Message, before: int, after: int
) -> tuple[list[bot_service.ConversationLine], list[bot_service.ConversationLine]]:
    """``bot.service.conversation_lines_around`` in one statement: the ``before`` turns
    before the message (oldest first) and the ``after`` turns after it, of the same
    conversation (its group chat, or the advisor and customer's one-to-one chat) — the
    same conditions, order and columns, both sides asked at once."""
    field = bot_models.Message._meta.fields_map["msgtime"]
    at = field.to_db_value(message.msgtime, bot_models.Message)
    same: list[Any] = (
        [message.roomid] if message.roomid else [message.advisor_id, message.customer_id]  # type: ignore[attr-defined]
    )
    bounds = [at, at, message.id]
    found = await rows.fetch(
        _CONVERSATION_SQL[bool(message.roomid)],
        [*same, *bounds, max(0, before), *same, *bounds, max(0, after)],
    )
    prior: list[bot_service.ConversationLine] = []
    following: list[bot_service.ConversationLine] = []
    for r in found:
        line = bot_service.ConversationLine(
            id=int(r["id"]),
            sender_role=str(r["sender_role"]),
            sender_id=str(r["sender_id"]),
            msgtime=field.to_python_value(rows.parse_times(r, ("msgtime",))["msgtime"]),
            msgtype=str(r["msgtype"]),
            masked_text=str(r["masked_text"] or ""),
        )
        (following if r["later"] else prior).append(line)
    # A union's rows come in no promised order: each side put oldest first here.
    prior.sort(key=_line_order)
    following.sort(key=_line_order)
    return prior, following


def _line_order(line: bot_service.ConversationLine) -> tuple[datetime, int]:
    return line.msgtime, line.id


async def case_view(*, case: bot_models.ReviewCase, people: People | None = None) -> CaseView:
    """What the case page shows around the case; ``people`` is its advisor and team lead
    when read with it (``case_page_read``), else read here."""
    message: bot_models.Message = case.message
    analysis = message.analysis if isinstance(message.analysis, dict) else {}
    raw_findings = [f for f in analysis.get("violations") or [] if isinstance(f, dict)]
    pii = [p for p in analysis.get("pii") or [] if isinstance(p, dict)]
    # The page's reads depend on the case alone: asked together (PostgreSQL answers them
    # on the pool's connections at once; SQLite's thread reads while the next is built).
    # What needs no read (the people read with the case, a message not sent through an
    # API key) is not made a task of its own.
    optional: list[Coroutine[Any, Any, Any]] = []
    if people is None:
        optional.append(advisor_and_leader(case.advisor_userid))
    via_key = (message.ingested_by or "").startswith("api_key:")
    if via_key:
        optional.append(ingested_via(message))
    (prior, following), earlier, audit_entries, *more = await asyncio.gather(
        conversation_around(message=message, before=TURNS_BEFORE, after=TURNS_AFTER),
        advisor_cases(advisor_userid=case.advisor_userid, exclude_id=case.id),
        audit.entries(where=audit.AuditFilter(target=case_target(case.id)), limit=20),
        *optional,
    )
    advisor, leader = people if people is not None else more.pop(0)
    via = more.pop(0) if via_key else _ingested_label(message)
    findings: list[FindingView] = []
    flagged_marks: list[tuple[int, int, str, str]] = []
    context_marks: dict[int, list[tuple[int, int, str, str]]] = {}
    context_notes: dict[int, list[str]] = {}
    for f in raw_findings:
        category = str(f.get("category", ""))
        label = CATEGORY_LABELS.get(category, category)
        where = finding_range(message.masked_text, f, pii)
        if where is not None:
            tone = "hl-violation" if f.get("severity") == "violation" else "hl-review"
            flagged_marks.append((where[0], where[1], tone, label))
        source_msg = _context_source(f, message, prior)
        ctx_evidence = str(f.get("context_evidence") or "")
        if source_msg is not None:
            at = source_msg.masked_text.find(ctx_evidence) if ctx_evidence else -1
            if at >= 0:
                context_marks.setdefault(source_msg.id, []).append(
                    (at, at + len(ctx_evidence), "hl-context", f"语境：{label}")
                )
            context_notes.setdefault(source_msg.id, []).append(label)
        score = f.get("score")
        findings.append(
            FindingView(
                category=category,
                category_label=label,
                severity=str(f.get("severity", "")),
                source=str(f.get("source", "")),
                rule_id=str(f.get("rule_id", "")),
                score=float(score) if isinstance(score, int | float) else None,
                basis=str(f.get("basis") or ""),
                evidence=str(f.get("evidence") or ""),
                located=where is not None,
                context_evidence=ctx_evidence,
                context_message_id=source_msg.id if source_msg is not None else None,
            )
        )
    customer = message.customer
    customer_name = customer.name if customer is not None else ""
    customer_id = customer.external_userid if customer is not None else ""

    def label_of(m: bot_models.Message | bot_service.ConversationLine) -> str:
        if m.sender_role == "advisor":
            return (
                advisor.name if advisor and m.sender_id == advisor.userid else ""
            ) or m.sender_id
        if m.sender_role == "customer":
            # A group chat has many customers: only this case's customer is named.
            same = customer is not None and m.sender_id == customer.external_userid
            return customer_name if same and customer_name else "客户"
        return m.sender_id

    turns = []
    shown: list[bot_models.Message | bot_service.ConversationLine] = [*prior, message, *following]
    for m in shown:
        flagged = m.id == message.id
        marks = flagged_marks if flagged else context_marks.get(m.id, [])
        turns.append(
            TurnView(
                id=m.id,
                flagged=flagged,
                side=_side(m),
                sender_label=label_of(m),
                msgtime=m.msgtime,
                msgtype=m.msgtype,
                segments=segments(m.masked_text, marks),
                context_for=context_notes.get(m.id, []),
            )
        )
    return CaseView(
        case=case,
        message=message,
        findings=findings,
        turns=turns,
        advisor=advisor,
        leader=leader,
        customer_name=customer_name,
        customer_id=customer_id,
        earlier=earlier,
        audit_entries=audit_entries,
        ingested_via=via,
    )


def _advisor_info(row: dict[str, Any], prefix: str = "") -> bot_service.AdvisorInfo:
    return bot_service.AdvisorInfo(
        userid=str(row[prefix + "userid"]),
        name=str(row[prefix + "name"] or ""),
        department=str(row[prefix + "department"] or ""),
        manager_userid=str(row[prefix + "manager_userid"] or ""),
    )


async def advisor_and_leader(userid: str) -> People:
    """The case's advisor and their team lead (WeCom direct_leader) in one statement;
    a lead not (yet) synced is named by userid alone."""
    found = await rows.fetch(
        'SELECT "a"."userid", "a"."name", "a"."department", "a"."manager_userid", '
        '"l"."userid" AS "l_userid", "l"."name" AS "l_name", "l"."department" AS "l_department", '
        '"l"."manager_userid" AS "l_manager_userid" FROM "bot_advisor" "a" '
        'LEFT JOIN "bot_advisor" "l" ON "l"."userid" = "a"."manager_userid" '
        'WHERE "a"."userid" = ?',
        [userid],
    )
    return _people(found[0], "", "l_") if found else (None, None)


@dataclass(frozen=True)
class EarlierCase:
    """One line of a case page's 「该客户经理的其他案件」: what the table shows."""

    id: int
    categories: list[str]
    status: str
    created_at: datetime


async def advisor_cases(
    *, advisor_userid: str, exclude_id: int, limit: int = 10
) -> list[EarlierCase]:
    """``bot.service.advisor_cases`` written out, the four columns the table shows: the
    advisor's other cases, newest first (a whole case per line cost the page more than
    its statement)."""
    found = await rows.fetch(
        'SELECT "c"."id", "c"."categories", "c"."status", "c"."created_at" '
        'FROM "bot_review_case" "c" WHERE "c"."advisor_userid" = ? AND "c"."id" <> ? '
        'ORDER BY "c"."created_at" DESC, "c"."id" DESC LIMIT ?',
        [advisor_userid, exclude_id, limit],
    )
    fields = bot_models.ReviewCase._meta.fields_map
    categories, created_at = fields["categories"], fields["created_at"]
    return [
        EarlierCase(
            id=int(r["id"]),
            categories=list(categories.to_python_value(r["categories"]) or []),
            status=str(r["status"]),
            created_at=created_at.to_python_value(
                rows.parse_times(r, ("created_at",))["created_at"]
            ),
        )
        for r in found
    ]


async def ingested_via(message: bot_models.Message) -> str:
    """「API 密钥 core-banking（ab12cd34）」, 「会话存档拉取」 or 「企业微信回调」."""
    sender = message.ingested_by or ""
    if sender.startswith("api_key:"):
        key_id = sender.split(":", 1)[1]
        key = await admin_service.api_key_by_key_id(key_id=key_id)
        if key_id == "bootstrap":
            return "API 令牌 SIYU_API__TOKEN（已弃用）"
        return f"API 密钥 {key.name}（{key_id}）" if key is not None else f"API 密钥 {key_id}"
    return _ingested_label(message)


def _ingested_label(message: bot_models.Message) -> str:
    """How a message not sent through an API key came in (no read needed)."""
    sender = message.ingested_by or ""
    if sender:
        return sender
    return "会话存档拉取" if message.source == "archive" else "企业微信回调"


def department_label(department: str) -> str:
    """The advisor's department as a reviewer can read it.

    WeCom's user/get gives department *ids* (「2」, 「[2, 3]」); until names are synced
    an id tells a reviewer nothing, so it is not shown.
    """
    return "" if re.fullmatch(r"[\d,\s\[\]]*", department) else department


def age_of(opened: datetime, *, at: datetime) -> tuple[str, str]:
    """A case's age as a reviewer reads it (「2天3小时」) and its SLA tone."""
    delta = max(at - opened, timedelta(0))
    days, rest = divmod(int(delta.total_seconds()), 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        text = f"{days}天{hours}小时"
    elif hours:
        text = f"{hours}小时{minutes}分"
    else:
        text = f"{minutes}分钟"
    tone = "bad" if delta >= SLA_BREACH else "warn" if delta >= SLA_WARN else "ok"
    return text, tone


# ------------------------------------------------------------------ labelled data


def _turn_role(m: bot_models.Message) -> str | None:
    return m.sender_role if m.sender_role in ("advisor", "customer") else None


async def label_line(case: bot_models.ReviewCase) -> dict[str, Any] | None:
    """One decided case as a line of compliance_nlp's labelled format (ANNOTATION.md).

    confirmed → the case's categories; false_positive → ``violations: []`` (a hard
    negative the next model learns from).  ``context`` holds the masked turns the
    pipeline read before the line (ANNOTATION_THREADS.md: a line judged in its
    conversation).  Masked text only: an original never leaves the sealed column.
    """
    message: bot_models.Message = case.message
    if not message.masked_text.strip():
        return None
    prior, _ = await bot_service.conversation_around(message=message, before=TURNS_BEFORE, after=0)
    window = [
        m
        for m in prior
        if m.masked_text and _turn_role(m) and m.msgtime >= message.msgtime - CONTEXT_WINDOW
    ][-CONTEXT_TURNS:]
    # A reviewer's correction of the category is the label (the pipeline's was wrong).
    violations = (
        [{"category": c} for c in effective_categories(case)] if case.status == "confirmed" else []
    )
    return {
        "id": f"review-{case.id}",
        "text": message.masked_text,
        "role": "advisor",
        "intent": None,
        "sentiment": None,
        "violations": violations,
        # Personal numbers were masked before storage: none is left to label.
        "pii": [],
        "context": [{"role": _turn_role(m), "text": m.masked_text} for m in window],
        "review": {
            "case": case.id,
            "decision": case.status,
            "decided_at": case.decided_at.isoformat() if case.decided_at else None,
            "corrected_at": case.corrected_at.isoformat() if case.corrected_at else None,
        },
    }


def _judged_at(line: dict[str, Any]) -> str:
    # The latest word on a line: its decision or a later correction of its category.
    review = line["review"]
    return max(review["decided_at"] or "", review["corrected_at"] or "")


async def do_export_labels(
    *, actor: Actor, source: str, since: datetime, until: datetime | None
) -> list[dict[str, Any]]:
    """Every case decided final in [since, until) as labelled lines, the export audited.

    A line decided twice over (the same words in the same context, e.g. a bulk of
    duplicates) is written once, with the latest decision.
    """
    lines: dict[tuple[str, str], dict[str, Any]] = {}
    after = 0
    while True:
        batch = await bot_service.decided_cases(since=since, until=until, after_id=after)
        if not batch:
            break
        after = batch[-1].id
        for case in batch:
            line = await label_line(case)
            if line is None:
                continue
            key = (line["text"], repr(line["context"]))
            previous = lines.get(key)
            if previous is None or _judged_at(line) >= _judged_at(previous):
                lines[key] = line
    out = sorted(lines.values(), key=lambda line: int(line["review"]["case"]))
    await audit.append_alone(
        actor=actor,
        action="review.export_labels",
        target="review_case:*",
        source=source,
        detail={
            "since": since.isoformat(),
            "until": until.isoformat() if until else None,
            "lines": len(out),
        },
    )
    return out


# ------------------------------------------------------------------ the queue's reads
#
# ``bot.service.review_cases`` / ``review_facets`` / ``review_advisors`` written out:
# the same filters, counts and order, in seven statements where the ORM built some
# twenty (a count per category, IN lists of every advisor with a case, a prefetch per
# relation) — on a bank's thousand advisors the statements' building and the IN lists
# cost more than the counting.

_CATEGORY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def _has_category_sql(category: str, *, postgres: bool) -> str:
    if not _CATEGORY_NAME.match(category):
        raise ValueError(f"not a category name: {category!r}")
    # A checked category name and a constant column: nothing user-typed.
    if postgres:
        return f'jsonb_exists("c"."categories", \'{category}\')'
    return f'EXISTS (SELECT 1 FROM json_each("c"."categories") WHERE value = \'{category}\')'  # noqa: S608


def _queue_where(
    where: bot_service.ReviewFilter, *, without: str = "", postgres: bool
) -> tuple[str, list[Any]]:
    """``bot.service._review_query``'s conditions on ``"c"`` (the facet ``without`` left out)."""
    created = bot_models.ReviewCase._meta.fields_map["created_at"]
    conds: list[str] = []
    params: list[Any] = []

    def among(column: str, values: Sequence[str]) -> None:
        conds.append(f'"c"."{column}" IN ({", ".join("?" * len(values))})')
        params.extend(values)

    if where.statuses and without != "status":
        among("status", list(where.statuses))
    if where.severity and without != "severity":
        among("severity", [where.severity])
    if where.advisor_userid and without != "advisor":
        among("advisor_userid", [where.advisor_userid])
    if where.team_leader and without != "team":
        conds.append(
            '"c"."advisor_userid" IN (SELECT "t"."userid" FROM "bot_advisor" "t" '
            'WHERE "t"."manager_userid" = ?)'
        )
        params.append(where.team_leader)
    if where.since is not None:
        conds.append('"c"."created_at" >= ?')
        params.append(created.to_db_value(where.since, bot_models.ReviewCase))
    if where.until is not None:
        conds.append('"c"."created_at" < ?')
        params.append(created.to_db_value(where.until, bot_models.ReviewCase))
    if where.advisors is not None:
        among("advisor_userid", sorted(where.advisors) or [""])
    if where.category and without != "category":
        conds.append(_has_category_sql(where.category, postgres=postgres))
    return " AND ".join(conds) or "1 = 1", params


@dataclass(frozen=True)
class QueueAdvisors:
    """Advisors with at least one case (the advisor choices), and their leads (teams)."""

    advisors: list[bot_service.AdvisorInfo]
    leaders: list[tuple[str, bot_service.AdvisorInfo | None]]


async def queue_advisors(*, advisors: frozenset[str] | None) -> QueueAdvisors:
    """``bot.service.review_advisors`` and their leads' names, in one statement."""
    reach, params = "", []
    if advisors is not None:
        wanted = sorted(advisors) or [""]
        reach = f' WHERE "advisor_userid" IN ({", ".join("?" * len(wanted))})'
        params = wanted
    found = await rows.fetch(
        'SELECT "d"."advisor_userid" AS "userid", "a"."name", "a"."department", '  # noqa: S608 - placeholders only
        '"a"."manager_userid", "l"."userid" AS "l_userid", "l"."name" AS "l_name", '
        '"l"."department" AS "l_department", "l"."manager_userid" AS "l_manager_userid" '
        f'FROM (SELECT DISTINCT "advisor_userid" FROM "bot_review_case"{reach}) "d" '
        'LEFT JOIN "bot_advisor" "a" ON "a"."userid" = "d"."advisor_userid" '
        'LEFT JOIN "bot_advisor" "l" ON "l"."userid" = "a"."manager_userid"',
        params,
    )
    infos = sorted((_advisor_info(r) for r in found), key=lambda a: a.userid)
    leads = {str(r["l_userid"]): _advisor_info(r, "l_") for r in found if r["l_userid"]}
    leader_ids = sorted({a.manager_userid for a in infos if a.manager_userid})
    return QueueAdvisors(advisors=infos, leaders=[(u, leads.get(u)) for u in leader_ids])


async def queue_page(
    *, where: bot_service.ReviewFilter, offset: int, limit: int
) -> list[bot_models.ReviewCase]:
    """One page of the queue, oldest first, each case with its message and customer."""
    b = bot_models
    w, params = _queue_where(where, postgres=rows.is_postgres())
    found = await rows.fetch(
        f"SELECT {rows.columns(b.ReviewCase, 'c', 'c__')}, {rows.columns(b.Message, 'm', 'm__')}, "  # noqa: S608 - model columns and checked conditions only
        f"{rows.columns(b.Customer, 'cu', 'cu__')} "
        # The page's cases first, then their messages: joined before the LIMIT,
        # PostgreSQL hashed every message (a scan of the whole table) for 50 rows.
        f'FROM (SELECT * FROM "bot_review_case" "c" WHERE {w} '
        'ORDER BY "c"."created_at", "c"."id" LIMIT ? OFFSET ?) "c" '
        'JOIN "bot_message" "m" ON "m"."id" = "c"."message_id" '
        'LEFT JOIN "bot_customer" "cu" ON "cu"."id" = "m"."customer_id" '
        'ORDER BY "c"."created_at", "c"."id"',
        [*params, limit, offset],
    )
    out = []
    for row in found:
        case = rows.hydrate(b.ReviewCase, row, "c__")
        message = rows.hydrate(b.Message, row, "m__")
        assert case is not None and message is not None  # an inner join: both are there
        rows.attach(message, "customer", rows.hydrate(b.Customer, row, "cu__"))
        rows.attach(case, "message", message)
        out.append(case)
    return out


async def queue_counts(
    *,
    where: bot_service.ReviewFilter,
    categories: Sequence[str],
    managers: dict[str, str],
) -> tuple[int, bot_service.ReviewFacets]:
    """The queue's total and how many cases each filter value would show, given the
    other filters (``bot.service.review_facets``).  ``managers``: advisor → their lead
    (``queue_advisors``), which sums the advisors' counts into teams."""
    postgres = rows.is_postgres()

    async def grouped(column: str, facet: str) -> dict[str, int]:
        w, params = _queue_where(where, without=facet, postgres=postgres)
        found = await rows.fetch(
            f'SELECT "c"."{column}" AS "k", COUNT(*) AS "n" FROM "bot_review_case" "c" '  # noqa: S608 - identifiers and checked conditions only
            f'WHERE {w} GROUP BY "c"."{column}"',
            params,
        )
        return {str(r["k"]): int(r["n"]) for r in found}

    # Every category's count under the other filters, and with no category filter all
    # of them: one statement (the total is one of these counts).
    cats = list(categories)
    w, params = _queue_where(where, without="category", postgres=postgres)
    sums = ", ".join(
        f'SUM(CASE WHEN {_has_category_sql(c, postgres=postgres)} THEN 1 ELSE 0 END) AS "k{i}"'
        for i, c in enumerate(cats)
    )
    row = (
        await rows.fetch(
            f'SELECT COUNT(*) AS "all"{", " + sums if sums else ""} '  # noqa: S608 - checked conditions only
            f'FROM "bot_review_case" "c" WHERE {w}',
            params,
        )
    )[0]
    by_category = {c: int(row[f"k{i}"] or 0) for i, c in enumerate(cats)}
    if where.category:
        total = (
            by_category[where.category]
            if where.category in by_category
            else int(await _count(where, postgres=postgres))
        )
    else:
        total = int(row["all"])
    by_team: dict[str, int] = {}
    for userid, n in (await grouped("advisor_userid", "team")).items():
        lead = managers.get(userid, "")
        if lead:
            by_team[lead] = by_team.get(lead, 0) + n
    return total, bot_service.ReviewFacets(
        status=await grouped("status", "status"),
        severity=await grouped("severity", "severity"),
        category=by_category,
        advisor=await grouped("advisor_userid", "advisor"),
        team=by_team,
    )


async def _count(where: bot_service.ReviewFilter, *, postgres: bool) -> int:
    w, params = _queue_where(where, postgres=postgres)
    found = await rows.fetch(
        f'SELECT COUNT(*) AS "n" FROM "bot_review_case" "c" WHERE {w}',  # noqa: S608 - checked conditions only
        params,
    )
    return int(found[0]["n"])
