"""The lexicon's use cases: edit the draft, publish it (after a dry run), roll back.

Compliance reviewers edit one shared working draft of the institution's overlay
(``admin_lexicon_entry``). Publishing turns the draft into the next version: its
entries and the overlay document built from them are kept (``admin_lexicon_version``,
with who, when and why), the document becomes what every analyzer runs
(``bot.rules_overlay``), approved reply snippets that now break a rule go back to
review — all in one transaction with its audit entries. A publish names the dry run
it follows (the draft's hash): the reviewer has seen what the change adds and removes
on the labelled sets, and a draft edited since must be run again.

As in ``admin.flows``: ``check_*`` validates (no side effects), ``do_*`` changes state
and writes its audit entry in the same transaction; refusals raise ``FieldError``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from admin.flows import FieldError, NotFound
from admin.lexicon import service
from admin.lexicon.models import LexiconEntry, LexiconVersion
from admin.snippets import flows as snippet_flows
from bot import rules_overlay
from bot.flows import CATEGORY_LABELS
from compliance_nlp.overlay import (
    MAX_TERM_CHARS,
    OVERLAY_FORMAT,
    SEGMENTS,
    Overlay,
    check_overlay,
    normalize_term,
)
from compliance_nlp.rules import load_ruleset
from core import audit
from core.audit import Actor

KINDS = ("term", "exception", "rewording", "basis", "segment")
KIND_LABELS = {
    "term": "词条",
    "exception": "例外",
    "rewording": "改写建议",
    "basis": "监管依据",
    "segment": "行业包",
}
SEGMENT_LABELS = {
    "bank": "银行",
    "securities": "证券/基金",
    "insurance": "保险",
    "consumer_finance": "消费金融",
}
SEVERITY_LABELS = {"violation": "违规", "review": "待复核"}
NOTE_MAX = 500
SUGGESTION_MAX = 200
BASIS_MAX = 500
REASON_MIN = 4
REASON_MAX = 1000
_BASIS_KEY = re.compile(r"^[A-Z][A-Z0-9_]{1,31}$")


def entry_target(code: str) -> str:
    return f"lexicon_entry:{code}"


def version_target(number: int) -> str:
    return f"lexicon_version:{number}"


# ------------------------------------------------------------------ checks


@dataclass(frozen=True)
class EntryInput:
    kind: str
    text: str = ""
    body: str = ""
    category: str = ""
    categories: tuple[str, ...] = ()
    basis: str = ""
    severity: str = "violation"
    segment: str = ""
    suggestion: str = ""
    note: str = ""


def shipped_bases() -> dict[str, str]:
    return dict(load_ruleset().bases)


def shipped_rules() -> dict[str, str]:
    """Shipped rule ids and what each is about (rewordings may name them)."""
    return {r.id: r.description for r in load_ruleset().rules}


def _limited(value: str, field: str, limit: int, what: str) -> str:
    value = value.strip()
    if len(value) > limit:
        raise FieldError(field, f"{what}最多 {limit} 个字符")
    return value


def check_entry(data: EntryInput, *, draft_bases: set[str]) -> dict[str, Any]:
    """The columns of a valid entry, or ``FieldError`` naming the field at fault."""
    if data.kind not in KINDS:
        raise FieldError("kind", "请选择条目类型")
    note = _limited(data.note, "note", NOTE_MAX, "备注")
    segment = data.segment.strip()
    if segment and segment not in SEGMENTS:
        raise FieldError("segment", "请选择有效的行业包")
    values: dict[str, Any] = {"kind": data.kind, "note": note, "segment": ""}
    if data.kind in ("term", "exception"):
        text = data.text.strip()
        if not normalize_term(text):
            raise FieldError("text", "请填写词语")
        if len(normalize_term(text)) > MAX_TERM_CHARS:
            raise FieldError("text", f"词语最多 {MAX_TERM_CHARS} 个字")
        values.update(text=text[:200], segment=segment)
    if data.kind == "term":
        if data.category not in CATEGORY_LABELS:
            raise FieldError("category", "请选择违规类别")
        if data.basis not in shipped_bases() and data.basis not in draft_bases:
            raise FieldError("basis", "请选择监管依据（内置依据或本机构添加的依据）")
        if data.severity not in SEVERITY_LABELS:
            raise FieldError("severity", "请选择严重程度")
        values.update(
            category=data.category,
            basis=data.basis,
            severity=data.severity,
            suggestion=_limited(data.suggestion, "suggestion", SUGGESTION_MAX, "改写建议"),
        )
    elif data.kind == "exception":
        unknown = [c for c in data.categories if c not in CATEGORY_LABELS]
        if unknown:
            raise FieldError("categories", "请选择有效的违规类别")
        values["categories"] = sorted(set(data.categories))
    elif data.kind == "basis":
        key = data.text.strip().upper()
        if not _BASIS_KEY.match(key):
            raise FieldError("text", "依据代码为 2–32 位大写字母、数字或下划线，以字母开头")
        if key in shipped_bases():
            raise FieldError("text", "该代码已是内置依据，请换一个代码")
        body = _limited(data.body, "body", BASIS_MAX, "依据条文")
        if not body:
            raise FieldError("body", "请填写依据条文（文件名称与条款）")
        values.update(text=key, body=body)
    elif data.kind == "rewording":
        target = data.text.strip()
        if target not in shipped_rules() and target not in CATEGORY_LABELS:
            raise FieldError("text", "请选择内置规则或违规类别")
        body = _limited(data.body, "body", SUGGESTION_MAX, "改写建议")
        if not body:
            raise FieldError("body", "请填写改写建议")
        values.update(text=target, body=body)
    elif data.kind == "segment":
        if data.text not in SEGMENTS:
            raise FieldError("text", "请选择行业包")
        values.update(text=data.text)
    return values


def check_reason(reason: str) -> str:
    reason = reason.strip()
    if len(reason) < REASON_MIN:
        raise FieldError("reason", f"请说明本次变更的原因（至少 {REASON_MIN} 个字）")
    if len(reason) > REASON_MAX:
        raise FieldError("reason", f"原因最多 {REASON_MAX} 个字符")
    return reason


# ------------------------------------------------------------------ the draft


async def draft_snapshot() -> list[dict[str, Any]]:
    return [service.snapshot(e) for e in await service.entries()]


def snapshot_hash(rows: Sequence[dict[str, Any]]) -> str:
    """Which draft a dry run judged: the entries without their codes' order mattering."""
    canonical = json.dumps(
        sorted(rows, key=lambda r: str(r["code"])), ensure_ascii=False, sort_keys=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def build_document(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """compliance_nlp's overlay document from the entries (``compliance_nlp.overlay``)."""
    by_kind: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    for row in sorted(rows, key=lambda r: str(r["code"])):
        by_kind.setdefault(str(row["kind"]), []).append(row)
    rewordings = by_kind["rewording"]
    return {
        "format": OVERLAY_FORMAT,
        "segments": sorted(str(r["text"]) for r in by_kind["segment"]),
        "bases": {str(r["text"]): str(r["body"]) for r in by_kind["basis"]},
        "terms": [
            {
                "id": r["code"],
                "term": r["text"],
                "category": r["category"],
                "basis": r["basis"],
                "severity": r["severity"],
                "segment": r["segment"],
                "suggestion": r["suggestion"],
            }
            for r in by_kind["term"]
        ],
        "exceptions": [
            {
                "id": r["code"],
                "phrase": r["text"],
                "categories": list(r["categories"] or []),
                "segment": r["segment"],
            }
            for r in by_kind["exception"]
        ],
        "suggestions": {
            "by_rule": {
                str(r["text"]): str(r["body"])
                for r in rewordings
                if r["text"] not in CATEGORY_LABELS
            },
            "by_category": {
                str(r["text"]): str(r["body"]) for r in rewordings if r["text"] in CATEGORY_LABELS
            },
        },
    }


def overlay_of(rows: Sequence[dict[str, Any]], version: str) -> Overlay:
    return Overlay.from_data(version, build_document(rows))


@dataclass(frozen=True)
class Change:
    """One difference between two sets of entries (a diff line)."""

    op: str  # added | removed | changed
    code: str
    kind: str
    text: str
    segment: str
    fields: tuple[str, ...] = ()
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


def diff_entries(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[Change]:
    before = {str(r["code"]): r for r in old}
    after = {str(r["code"]): r for r in new}
    out: list[Change] = []
    for code in sorted(set(before) | set(after)):
        a, b = before.get(code), after.get(code)
        row = b or a
        assert row is not None
        kind, text, segment = str(row["kind"]), str(row["text"]), str(row["segment"])
        if a is None:
            out.append(Change("added", code, kind, text, segment, after=b))
        elif b is None:
            out.append(Change("removed", code, kind, text, segment, before=a))
        else:
            changed = tuple(f for f in service.ENTRY_FIELDS if f != "code" and a.get(f) != b.get(f))
            if changed:
                out.append(Change("changed", code, kind, text, segment, changed, a, b))
    order = {"added": 0, "changed": 1, "removed": 2}
    return sorted(out, key=lambda c: (order[c.op], KINDS.index(c.kind), c.text))


async def published_rows() -> tuple[LexiconVersion | None, list[dict[str, Any]]]:
    latest = await service.latest_version()
    return latest, list(latest.entries) if latest is not None else []


async def pending_changes() -> list[Change]:
    """What the draft would change if published now."""
    _latest, published = await published_rows()
    return diff_entries(published, await draft_snapshot())


# ------------------------------------------------------------------ editing


async def _draft_bases() -> set[str]:
    return {e.text for e in await service.entries() if e.kind == "basis"}


async def do_add_entry(*, actor: Actor, source: str, data: EntryInput) -> LexiconEntry:
    values = check_entry(data, draft_bases=await _draft_bases())
    same = await service.entry_by_key(
        kind=values["kind"], text=values["text"], segment=values["segment"]
    )
    if same is not None:
        raise FieldError("text", "草稿中已有相同的条目")
    try:
        async with in_transaction() as conn:
            row = await service.insert_entry(conn=conn, updated_by=actor.name, **values)
            await audit.append(
                conn=conn,
                actor=actor,
                action="lexicon.entry_add",
                target=entry_target(row.code),
                source=source,
                detail={"kind": row.kind, "segment": row.segment, "category": row.category},
            )
    except IntegrityError:
        raise FieldError("text", "草稿中已有相同的条目") from None
    return row


async def do_update_entry(
    *, actor: Actor, source: str, entry_id: int, data: EntryInput
) -> LexiconEntry:
    row = await service.entry_by_id(entry_id=entry_id)
    if row is None:
        raise NotFound(f"lexicon_entry:{entry_id}")
    if data.kind != row.kind:
        raise FieldError("kind", "条目类型不能修改；请删除后重新添加")
    values = check_entry(data, draft_bases=await _draft_bases())
    if row.kind == "basis" and values["text"] != row.text:
        raise FieldError("text", "依据代码不能修改（词条按代码引用它）")
    other = await service.entry_by_key(
        kind=row.kind, text=values["text"], segment=values["segment"]
    )
    if other is not None and other.id != row.id:
        raise FieldError("text", "草稿中已有相同的条目")
    before = service.snapshot(row)
    changed = sorted(k for k, v in values.items() if before.get(k) != v)
    try:
        async with in_transaction() as conn:
            await service.update_entry(conn=conn, entry_id=row.id, updated_by=actor.name, **values)
            await audit.append(
                conn=conn,
                actor=actor,
                action="lexicon.entry_edit",
                target=entry_target(row.code),
                source=source,
                detail={"fields": changed},
            )
    except IntegrityError:
        raise FieldError("text", "草稿中已有相同的条目") from None
    updated = await service.entry_by_id(entry_id=row.id)
    assert updated is not None
    return updated


async def do_delete_entry(*, actor: Actor, source: str, entry_id: int) -> LexiconEntry:
    row = await service.entry_by_id(entry_id=entry_id)
    if row is None:
        raise NotFound(f"lexicon_entry:{entry_id}")
    if row.kind == "basis" and await service.terms_citing(basis=row.text):
        raise FieldError("text", "仍有词条引用该依据，请先修改或删除这些词条")
    async with in_transaction() as conn:
        await service.delete_entry(conn=conn, entry_id=row.id)
        await audit.append(
            conn=conn,
            actor=actor,
            action="lexicon.entry_delete",
            target=entry_target(row.code),
            source=source,
            detail={"kind": row.kind, "segment": row.segment},
        )
    return row


async def do_set_segments(*, actor: Actor, source: str, segments: Sequence[str]) -> list[str]:
    """Switch the segment packs on or off (entries of a switched-off pack stay, unused)."""
    wanted = sorted(set(segments))
    unknown = [s for s in wanted if s not in SEGMENTS]
    if unknown:
        raise FieldError("segments", "请选择有效的行业包")
    current = {e.text: e for e in await service.entries() if e.kind == "segment"}
    if set(current) == set(wanted):
        return wanted
    async with in_transaction() as conn:
        for name, entry in current.items():
            if name not in wanted:
                await service.delete_entry(conn=conn, entry_id=entry.id)
        for name in wanted:
            if name not in current:
                await service.insert_entry(
                    conn=conn, updated_by=actor.name, kind="segment", text=name
                )
        await audit.append(
            conn=conn,
            actor=actor,
            action="lexicon.segments",
            target="lexicon:draft",
            source=source,
            detail={"segments": wanted, "before": sorted(current)},
        )
    return wanted


@functools.cache
def starter_packs() -> dict[str, list[dict[str, str]]]:
    """Each segment's starter terms (``packs.json``)."""
    text = resources.files("admin.lexicon").joinpath("packs.json").read_text("utf-8")
    packs: dict[str, list[dict[str, str]]] = json.loads(text)["packs"]
    return packs


async def do_import_pack(*, actor: Actor, source: str, segment: str) -> int:
    """A segment's starter terms into the draft, in that segment's pack; returns how many.

    Terms already in the draft stay as the reviewer left them; the pack applies once it
    is switched on, dry-run and published.
    """
    if segment not in SEGMENTS:
        raise FieldError("segment", "请选择有效的行业包")
    added: list[str] = []
    async with in_transaction() as conn:
        for item in starter_packs().get(segment, []):
            data = EntryInput(
                kind="term",
                text=item["term"],
                category=item["category"],
                basis=item["basis"],
                severity=item.get("severity", "violation"),
                segment=segment,
                suggestion=item.get("suggestion", ""),
                note="行业包示例词条",
            )
            values = check_entry(data, draft_bases=set())
            if await service.entry_by_key(
                kind="term", text=values["text"], segment=segment, conn=conn
            ):
                continue
            row = await service.insert_entry(conn=conn, updated_by=actor.name, **values)
            added.append(row.code)
        await audit.append(
            conn=conn,
            actor=actor,
            action="lexicon.import_pack",
            target="lexicon:draft",
            source=source,
            detail={"segment": segment, "added": len(added)},
        )
    return len(added)


async def do_discard_draft(*, actor: Actor, source: str) -> int:
    """The draft goes back to the published version (every unpublished edit dropped)."""
    latest, published = await published_rows()
    changes = await pending_changes()
    if not changes:
        return 0
    async with in_transaction() as conn:
        await service.replace_entries(conn=conn, rows=published, updated_by=actor.name)
        await audit.append(
            conn=conn,
            actor=actor,
            action="lexicon.discard_draft",
            target="lexicon:draft",
            source=source,
            detail={"version": latest.number if latest else 0, "changes": len(changes)},
        )
    return len(changes)


# ------------------------------------------------------------------ publishing


@dataclass(frozen=True)
class Published:
    version: LexiconVersion
    changes: list[Change]
    withdrawn: list[snippet_flows.Withdrawal]


def check_document(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    document = build_document(rows)
    problems = check_overlay(document, load_ruleset())
    if problems:
        raise FieldError("draft", "草稿无法生效：" + "；".join(problems[:5]))
    return document


async def _publish(
    *,
    actor: Actor,
    source: str,
    rows: list[dict[str, Any]],
    reason: str,
    analyzer: Any,
    effect: dict[str, Any] | None,
    rollback_of: int | None,
    replace_draft: bool,
) -> Published:
    reason = check_reason(reason)
    document = check_document(rows)
    latest, published = await published_rows()
    changes = diff_entries(published, rows)
    if not changes and rollback_of is None:
        raise FieldError("draft", "草稿与已发布版本相同，没有需要发布的修改")
    number = (latest.number if latest else 0) + 1
    overlay = Overlay.from_data(str(number), document)
    # Snippets are judged before the transaction (analysis is slow and needs no lock);
    # the transaction withdraws only those still approved with the text judged.
    recheck = await snippet_flows.recheck_approved(analyzer=analyzer, overlay=overlay)
    base_version = load_ruleset().version
    try:
        async with in_transaction() as conn:
            if replace_draft:
                await service.replace_entries(conn=conn, rows=rows, updated_by=actor.name)
            row = await service.insert_version(
                conn=conn,
                number=number,
                reason=reason,
                published_by_id=int(actor.id) if actor.id.isdigit() else None,
                published_by=actor.name,
                entries=rows,
                document=overlay.document,
                base_version=base_version,
                rollback_of=rollback_of,
                effect=effect,
            )
            await rules_overlay.publish_overlay(
                conn=conn, version=str(number), document=overlay.document, published_by=actor.name
            )
            await audit.append(
                conn=conn,
                actor=actor,
                action="lexicon.rollback" if rollback_of is not None else "lexicon.publish",
                target=version_target(number),
                source=source,
                detail={
                    "reason": reason,
                    "changes": len(changes),
                    "rollback_of": rollback_of,
                    "findings_added": int((effect or {}).get("findings_added", 0)),
                    "findings_removed": int((effect or {}).get("findings_removed", 0)),
                },
            )
            withdrawn = await snippet_flows.apply_recheck(
                conn=conn,
                actor=Actor.system("lexicon"),
                source=source,
                recheck=recheck,
                version=number,
            )
    except IntegrityError:
        raise FieldError("draft", "另一位审核人刚刚发布了新版本，请刷新后重新试运行") from None
    return Published(version=row, changes=changes, withdrawn=withdrawn)


async def do_publish(
    *,
    actor: Actor,
    source: str,
    reason: str,
    draft_hash: str,
    effect: dict[str, Any] | None,
    analyzer: Any,
) -> Published:
    """Publish the draft as the next version; ``effect`` is the dry run of ``draft_hash``."""
    rows = await draft_snapshot()
    if effect is None or snapshot_hash(rows) != draft_hash:
        raise FieldError("draft", "草稿在试运行之后有改动（或试运行已过期），请重新试运行后再发布")
    return await _publish(
        actor=actor,
        source=source,
        rows=rows,
        reason=reason,
        analyzer=analyzer,
        effect=effect,
        rollback_of=None,
        replace_draft=False,
    )


async def do_rollback(
    *, actor: Actor, source: str, number: int, reason: str, analyzer: Any
) -> Published:
    """Publish version ``number``'s entries again as a new version (the draft follows)."""
    target = await service.version(number=number)
    if target is None:
        raise NotFound(version_target(number))
    latest = await service.latest_version()
    if latest is not None and latest.number == number:
        raise FieldError("reason", "该版本就是当前生效的版本")
    return await _publish(
        actor=actor,
        source=source,
        rows=list(target.entries),
        reason=reason,
        analyzer=analyzer,
        effect=None,
        rollback_of=number,
        replace_draft=True,
    )
