"""The reply library's use cases: write, approve, re-check, count uses, keep media fresh.

Marketing writes a snippet (text, image, link card or mini-program); it waits for a
compliance reviewer, who approves it under the rules in force — the approval records
who, when and which rule version (shipped lexicon and the institution's overlay) — or
sends it back with a reason. An edit is a new revision and goes back to review. When
compliance publishes a lexicon change, every approved snippet is checked against the new
rules in the publishing transaction; one that now breaks a rule is withdrawn to review
with the finding as its reason, so no advisor sends it again.

Images are kept in the database and uploaded to WeCom as temporary media when an advisor
asks for the library: a media id lives three days (``media/upload``), so one older than
``MEDIA_FRESH_FOR`` is uploaded again before it is handed out.

As in ``admin.flows``: ``check_*`` validates, ``do_*`` changes state with its audit entry
in the same transaction; refusals raise ``FieldError``.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from admin.flows import FieldError, NotFound
from admin.snippets import service
from admin.snippets.models import Snippet
from bot import media as bot_media
from bot.flows import CATEGORY_LABELS
from compliance_nlp.overlay import Overlay
from core import audit
from core.audit import Actor
from core.crypto import Keyring

log = logging.getLogger(__name__)

KIND_LABELS = {"text": "文本", "image": "图片", "link": "图文链接", "miniprogram": "小程序"}
STATUS_LABELS = {
    "pending": "待审核",
    "approved": "已通过",
    "rejected": "已退回",
    "withdrawn": "已撤回待复审",
    "disabled": "已停用",
}
SEGMENT_LABELS = {
    "": "通用",
    "bank": "银行",
    "securities": "证券/基金",
    "insurance": "保险",
    "consumer_finance": "消费金融",
}
# WeCom takes images up to 10 MB; the library keeps them in the database and the console
# takes request bodies up to 1 MB (SIYU_HTTP__MAX_BODY_BYTES), so smaller.
IMAGE_MAX_BYTES = 900 * 1024
IMAGE_TYPES = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}
TEXT_MAX = 1000
CAPTION_MAX = 500
REASON_MIN = 4
REASON_MAX = 500
# Temporary media live 3 days (72 h); re-upload once older than MEDIA_FRESH_FOR, so an
# id handed to an advisor stays valid for at least the 12 hours after (bot.media).
MEDIA_LIFETIME = bot_media.MEDIA_LIFETIME
MEDIA_FRESH_FOR = bot_media.MEDIA_FRESH_FOR
_APPID = bot_media.APPID
_URL = re.compile(r"^https?://[^\s]{3,}$")
# sendChatMessage opens a mini-program page by a path ending in ".html" (WeCom's JS-SDK:
# without it WeChat answers that the page does not exist); WeCom takes no query string.
_MP_PAGE = re.compile(r"^/?[A-Za-z0-9_\-./]+\.html$")
# A mini-program cover as the JS-SDK takes it: an http(s) URL (imgUrl), fetched by the
# WeCom client, not by the page, so with none of the page's cookies.  siyu serves an
# approved snippet's cover at a URL naming its revision and a keyed token: stable while
# the snippet is unchanged, unguessable, gone once the snippet is edited or withdrawn.
COVER_PURPOSE = "snippet-cover"
COVER_EXT = {"image/png": "png", "image/jpeg": "jpg"}


def snippet_target(snippet_id: int) -> str:
    return f"snippet:{snippet_id}"


def now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------ checks


@dataclass(frozen=True)
class SnippetInput:
    kind: str
    title: str
    topic: str
    segment: str = ""
    text: str = ""
    link_title: str = ""
    link_url: str = ""
    link_desc: str = ""
    link_picurl: str = ""
    mp_appid: str = ""
    mp_title: str = ""
    mp_page: str = ""
    image: bytes | None = None
    image_name: str = ""
    image_type: str = ""


def _text(value: str, field_name: str, limit: int, what: str, *, required: bool = False) -> str:
    value = value.strip()
    if required and not value:
        raise FieldError(field_name, f"请填写{what}")
    if len(value) > limit:
        raise FieldError(field_name, f"{what}最多 {limit} 个字符")
    return value


def check_image(content: bytes, content_type: str) -> str:
    if not content:
        raise FieldError("image", "请上传图片")
    if len(content) > IMAGE_MAX_BYTES:
        raise FieldError("image", f"图片不能超过 {IMAGE_MAX_BYTES // 1024} KB")
    for kind, magic in IMAGE_TYPES.items():
        if content.startswith(magic):
            return kind
    raise FieldError("image", "图片须为 PNG 或 JPEG 格式")


def check_snippet(data: SnippetInput, *, existing: Snippet | None = None) -> dict[str, Any]:
    """The columns of a valid snippet (the image only when a new one was given)."""
    if data.kind not in KIND_LABELS:
        raise FieldError("kind", "请选择话术类型")
    if existing is not None and existing.kind != data.kind:
        raise FieldError("kind", "话术类型不能修改；请新建一条")
    if data.segment not in SEGMENT_LABELS:
        raise FieldError("segment", "请选择适用行业")
    values: dict[str, Any] = {
        "kind": data.kind,
        "title": _text(data.title, "title", 64, "标题", required=True),
        "topic": _text(data.topic, "topic", 32, "主题", required=True),
        "segment": data.segment,
        "text": _text(
            data.text,
            "text",
            TEXT_MAX if data.kind == "text" else CAPTION_MAX,
            "话术内容" if data.kind == "text" else "说明",
            required=data.kind == "text",
        ),
        "link_title": "",
        "link_url": "",
        "link_desc": "",
        "link_picurl": "",
        "mp_appid": "",
        "mp_title": "",
        "mp_page": "",
    }
    if data.kind == "link":
        url = _text(data.link_url, "link_url", 1024, "链接地址", required=True)
        if not _URL.match(url):
            raise FieldError("link_url", "链接地址须以 http:// 或 https:// 开头")
        picurl = _text(data.link_picurl, "link_picurl", 1024, "封面图地址")
        if picurl and not _URL.match(picurl):
            raise FieldError("link_picurl", "封面图地址须以 http:// 或 https:// 开头")
        values.update(
            link_title=_text(data.link_title, "link_title", 128, "卡片标题", required=True),
            link_url=url,
            link_desc=_text(data.link_desc, "link_desc", 512, "卡片摘要"),
            link_picurl=picurl,
        )
    elif data.kind == "miniprogram":
        appid = data.mp_appid.strip()
        if not _APPID.match(appid):
            raise FieldError("mp_appid", "小程序 AppID 形如 wx 加 16 位十六进制字符")
        page = _text(data.mp_page, "mp_page", 256, "小程序页面路径", required=True)
        if not _MP_PAGE.match(page) or ".." in page:
            raise FieldError(
                "mp_page", "小程序页面路径须以 .html 结尾且不带参数，如 pages/index/index.html"
            )
        values.update(
            mp_appid=appid,
            mp_title=_text(data.mp_title, "mp_title", 64, "小程序标题", required=True),
            mp_page=page,
        )
    if data.kind in ("image", "miniprogram"):
        if data.image:
            values.update(
                image=data.image,
                image_type=check_image(data.image, data.image_type),
                image_name=data.image_name.strip()[-128:] or "image",
                media_id=None,
                media_uploaded_at=None,
            )
        elif existing is None or not existing.image_name:
            raise FieldError(
                "image", "请上传图片" if data.kind == "image" else "请上传小程序封面图"
            )
    return values


def check_reason(reason: str) -> str:
    reason = reason.strip()
    if len(reason) < REASON_MIN:
        raise FieldError("reason", f"请说明原因（至少 {REASON_MIN} 个字）")
    if len(reason) > REASON_MAX:
        raise FieldError("reason", f"原因最多 {REASON_MAX} 个字符")
    return reason


def customer_parts(s: Snippet) -> list[tuple[str, str]]:
    """What the customer reads, labelled: each part is judged as an advisor's line."""
    parts = [
        ("话术内容" if s.kind == "text" else "说明", s.text),
        ("卡片标题", s.link_title),
        ("卡片摘要", s.link_desc),
        ("小程序标题", s.mp_title),
    ]
    return [(label, text) for label, text in parts if text.strip()]


# ------------------------------------------------------------------ mini-program covers


def cover_token(
    keyring: Keyring, *, snippet_id: int, revision: int, key_id: str | None = None
) -> str:
    """The keyed token in a cover's URL (a MAC under the field key, per purpose)."""
    return keyring.blind_index(f"{snippet_id}:{revision}", purpose=COVER_PURPOSE, key_id=key_id)


def cover_path(s: Snippet, *, keyring: Keyring) -> str | None:
    """Where siyu serves a mini-program snippet's cover: ``/snippets/covers/…``."""
    ext = COVER_EXT.get(s.image_type)
    if s.kind != "miniprogram" or ext is None:
        return None
    token = cover_token(keyring, snippet_id=s.id, revision=s.revision)
    return f"/snippets/covers/{s.id}/{s.revision}/{token}.{ext}"


async def cover_image(
    *, keyring: Keyring, snippet_id: int, revision: int, name: str
) -> tuple[bytes, str] | None:
    """An approved mini-program snippet's cover, when ``name`` is its current one.

    Every key the process holds is tried, so a URL handed out before a key rotation
    keeps working; a snippet edited since (another revision), withdrawn or disabled
    serves nothing.
    """
    token, _, ext = name.rpartition(".")
    key_id = token.partition(".")[0]
    if not token or key_id not in keyring.keys:
        return None
    expected = cover_token(keyring, snippet_id=snippet_id, revision=revision, key_id=key_id)
    if not hmac.compare_digest(token.encode(), expected.encode()):
        return None
    row = await service.snippet(snippet_id=snippet_id)
    if (
        row is None
        or row.kind != "miniprogram"
        or row.status != "approved"
        or row.revision != revision
        or not row.image
        or COVER_EXT.get(row.image_type) != ext
    ):
        return None
    return bytes(row.image), row.image_type


# ------------------------------------------------------------------ compliance check


@dataclass(frozen=True)
class PartFinding:
    part: str
    category: str
    severity: str
    evidence: str
    rule_id: str
    basis: str
    suggestion: str

    @property
    def category_label(self) -> str:
        return CATEGORY_LABELS.get(self.category, self.category)

    def reason(self) -> str:
        return f"{self.part}「{self.evidence}」：{self.category_label}（{self.rule_id}）"


@dataclass(frozen=True)
class Checked:
    findings: list[PartFinding]
    rules: str  # the analyzer's version string: shipped lexicon, overlay, models

    @property
    def violations(self) -> list[PartFinding]:
        return [f for f in self.findings if f.severity == "violation"]


async def _analyze(analyzer: Any, items: list[tuple[str, str]], overlay: Any) -> list[Any]:
    if overlay == "current":
        return list(await analyzer.analyze_many(items))
    return list(await analyzer.analyze_many(items, None, overlay=overlay))


async def check_content(
    *, analyzer: Any, snippets: Sequence[Snippet], overlay: Overlay | None | str = "current"
) -> list[Checked]:
    """Each snippet's customer-facing parts through the analyzer, as an advisor's lines."""
    items: list[tuple[str, str]] = []
    owners: list[tuple[int, str]] = []
    for i, s in enumerate(snippets):
        for label, text in customer_parts(s):
            items.append((text, "advisor"))
            owners.append((i, label))
    results = await _analyze(analyzer, items, overlay) if items else []
    found: list[list[PartFinding]] = [[] for _ in snippets]
    rules = ""
    for (i, label), analysis in zip(owners, results, strict=True):
        rules = rules or analysis.model_version
        found[i] += [
            PartFinding(
                part=label,
                category=f.category,
                severity=f.severity,
                evidence=f.evidence,
                rule_id=f.rule_id if f.source == "rule" else "模型",
                basis=f.basis,
                suggestion=f.suggestion or "",
            )
            for f in analysis.violations
        ]
    if not rules:
        # A snippet with no text part (an image alone): name the rules all the same.
        (probe,) = await _analyze(analyzer, [("您好", "advisor")], overlay)
        rules = probe.model_version
    return [Checked(findings=f, rules=rules) for f in found]


# ------------------------------------------------------------------ writing


async def do_create(*, actor: Actor, source: str, data: SnippetInput) -> Snippet:
    values = check_snippet(data)
    async with in_transaction() as conn:
        row = await service.insert(
            conn=conn, status="pending", created_by=actor.name, updated_by=actor.name, **values
        )
        await audit.append(
            conn=conn,
            actor=actor,
            action="snippet.create",
            target=snippet_target(row.id),
            source=source,
            detail={"kind": row.kind, "topic": row.topic, "segment": row.segment},
        )
    return row


async def do_edit(*, actor: Actor, source: str, snippet_id: int, data: SnippetInput) -> Snippet:
    """New content is a new revision, back to review (an approval covers a text, not an id)."""
    row = await service.snippet(snippet_id=snippet_id)
    if row is None:
        raise NotFound(snippet_target(snippet_id))
    values = check_snippet(data, existing=row)
    async with in_transaction() as conn:
        await service.edit(
            conn=conn,
            snippet_id=row.id,
            status="pending",
            status_reason="",
            updated_by=actor.name,
            approved_by="",
            approved_at=None,
            approved_rules="",
            **values,
        )
        await audit.append(
            conn=conn,
            actor=actor,
            action="snippet.edit",
            target=snippet_target(row.id),
            source=source,
            detail={"revision": row.revision + 1, "was": row.status},
        )
    updated = await service.snippet(snippet_id=row.id)
    assert updated is not None
    return updated


async def _decide(
    *,
    actor: Actor,
    source: str,
    snippet_id: int,
    revision: int,
    from_statuses: Sequence[str],
    action: str,
    values: dict[str, Any],
    detail: dict[str, Any],
) -> None:
    async with in_transaction() as conn:
        moved = await service.update_if(
            conn=conn,
            snippet_id=snippet_id,
            statuses=from_statuses,
            revision=revision,
            **values,
        )
        if not moved:
            raise FieldError("revision", "该话术刚被修改或已处理，请刷新后再操作")
        await audit.append(
            conn=conn,
            actor=actor,
            action=action,
            target=snippet_target(snippet_id),
            source=source,
            detail=detail,
        )


async def do_approve(
    *, actor: Actor, source: str, snippet_id: int, revision: int, analyzer: Any
) -> Checked:
    """Approve the revision the reviewer saw, unless the rules in force find a violation."""
    row = await service.snippet(snippet_id=snippet_id)
    if row is None:
        raise NotFound(snippet_target(snippet_id))
    if row.status not in ("pending", "withdrawn"):
        raise FieldError("revision", "只有待审核或已撤回的话术可以审核通过")
    (checked,) = await check_content(analyzer=analyzer, snippets=[row])
    if checked.violations:
        raise FieldError(
            "approve",
            "现行规则判定含违规表述，不能通过："
            + "；".join(f.reason() for f in checked.violations[:3]),
        )
    at = now()
    await _decide(
        actor=actor,
        source=source,
        snippet_id=row.id,
        revision=revision,
        from_statuses=("pending", "withdrawn"),
        action="snippet.approve",
        values={
            "status": "approved",
            "status_reason": "",
            "approved_by": actor.name,
            "approved_at": at,
            "approved_rules": checked.rules[:255],
            "checked_rules": checked.rules[:255],
            "checked_at": at,
        },
        detail={"revision": revision, "rules": checked.rules[:200]},
    )
    return checked


async def do_reject(
    *, actor: Actor, source: str, snippet_id: int, revision: int, reason: str
) -> None:
    reason = check_reason(reason)
    await _decide(
        actor=actor,
        source=source,
        snippet_id=snippet_id,
        revision=revision,
        from_statuses=("pending", "withdrawn"),
        action="snippet.reject",
        values={"status": "rejected", "status_reason": reason},
        detail={"revision": revision, "reason": reason},
    )


async def do_withdraw(
    *, actor: Actor, source: str, snippet_id: int, revision: int, reason: str
) -> None:
    """Compliance takes an approved snippet back to review (advisors stop seeing it)."""
    reason = check_reason(reason)
    await _decide(
        actor=actor,
        source=source,
        snippet_id=snippet_id,
        revision=revision,
        from_statuses=("approved",),
        action="snippet.withdraw",
        values={"status": "withdrawn", "status_reason": reason},
        detail={"revision": revision, "reason": reason},
    )


async def do_disable(
    *, actor: Actor, source: str, snippet_id: int, revision: int, reason: str
) -> None:
    reason = check_reason(reason)
    await _decide(
        actor=actor,
        source=source,
        snippet_id=snippet_id,
        revision=revision,
        from_statuses=tuple(s for s in STATUS_LABELS if s != "disabled"),
        action="snippet.disable",
        values={"status": "disabled", "status_reason": reason},
        detail={"revision": revision, "reason": reason},
    )


async def do_count_use(*, actor: Actor, source: str, snippet_id: int) -> None:
    """An advisor sent it: counted (approved snippets only) and audited."""
    async with in_transaction() as conn:
        if not await service.count_use(conn=conn, snippet_id=snippet_id, at=now()):
            raise NotFound(snippet_target(snippet_id))
        await audit.append(
            conn=conn,
            actor=actor,
            action="snippet.use",
            target=snippet_target(snippet_id),
            source=source,
        )


# ------------------------------------------------------------------ re-check


@dataclass(frozen=True)
class Withdrawal:
    snippet_id: int
    revision: int
    title: str
    reason: str


@dataclass
class Recheck:
    rules: str
    withdrawals: list[Withdrawal] = field(default_factory=list)
    clean: list[int] = field(default_factory=list)


def _judged(rows: Sequence[Snippet], results: Sequence[Checked], why: str) -> Recheck:
    out = Recheck(rules=results[0].rules if results else "")
    for row, checked in zip(rows, results, strict=True):
        if checked.violations:
            reason = why + "：" + "；".join(f.reason() for f in checked.violations[:3])
            out.withdrawals.append(
                Withdrawal(snippet_id=row.id, revision=row.revision, title=row.title, reason=reason)
            )
        else:
            out.clean.append(row.id)
    return out


async def recheck_approved(*, analyzer: Any, overlay: Overlay | None) -> Recheck:
    """Judge every approved snippet under ``overlay`` (before a lexicon change commits)."""
    rows = await service.approved_with_text()
    if not rows:
        return Recheck(rules="")
    results = await check_content(analyzer=analyzer, snippets=rows, overlay=overlay)
    return _judged(rows, results, "词库变更后复核发现违规")


async def do_recheck_stale(*, analyzer: Any, lexicon_version: int) -> list[Withdrawal]:
    """Approved snippets last judged under other rules than this process runs, judged now.

    A release brings new shipped rules (and models) without any lexicon publish: the
    snippets approved under the old ones are judged again on the next tick of the
    ``snippets-recheck`` job, and withdrawn when they now break a rule.
    """
    (probe,) = await _analyze(analyzer, [("您好", "advisor")], "current")
    rules = str(probe.model_version)[:255]
    rows = [r for r in await service.approved_with_text() if r.checked_rules != rules]
    if not rows:
        return []
    results = await check_content(analyzer=analyzer, snippets=rows)
    recheck = _judged(rows, results, "规则版本更新后复核发现违规")
    async with in_transaction() as conn:
        return await apply_recheck(
            conn=conn,
            actor=Actor.system("snippets"),
            source="job:snippets-recheck",
            recheck=recheck,
            version=lexicon_version,
        )


async def apply_recheck(
    *, conn: BaseDBAsyncClient, actor: Actor, source: str, recheck: Recheck, version: int
) -> list[Withdrawal]:
    """Inside the publishing transaction: withdraw what now breaks a rule, note the rest."""
    at = now()
    withdrawn: list[Withdrawal] = []
    for w in recheck.withdrawals:
        moved = await service.update_if(
            conn=conn,
            snippet_id=w.snippet_id,
            statuses=("approved",),
            revision=w.revision,
            status="withdrawn",
            status_reason=w.reason[:1000],
            checked_rules=recheck.rules[:255],
            checked_at=at,
        )
        if not moved:
            continue  # edited or disabled meanwhile: not approved at this revision anymore
        withdrawn.append(w)
        await audit.append(
            conn=conn,
            actor=actor,
            action="snippet.withdraw",
            target=snippet_target(w.snippet_id),
            source=source,
            detail={"revision": w.revision, "lexicon_version": version, "reason": w.reason[:400]},
        )
    await service.mark_checked(conn=conn, ids=recheck.clean, rules=recheck.rules, at=at)
    return withdrawn


# ------------------------------------------------------------------ media


@dataclass(frozen=True)
class MediaState:
    media_id: str | None
    error: str = ""


async def fresh_media(
    *, rows: Sequence[Snippet], client: Any, at: datetime | None = None
) -> dict[int, MediaState]:
    """A media id valid for the next hours for each image / mini-program snippet.

    Uploaded again when older than ``MEDIA_FRESH_FOR`` (WeCom forgets it after three
    days); without a WeCom client, or when the upload fails, the id is None and the
    reason says why — the rest of the library is still served.
    """
    at = at or now()
    out: dict[int, MediaState] = {}
    for row in rows:
        if row.kind not in ("image", "miniprogram"):
            continue
        uploaded = row.media_uploaded_at
        if row.media_id and bot_media.is_fresh(uploaded, at):
            out[row.id] = MediaState(row.media_id)
            continue
        if client is None:
            out[row.id] = MediaState(None, "未配置企业微信应用，无法上传图片")
            continue
        full = await service.snippet(snippet_id=row.id)
        if full is None or not full.image:
            out[row.id] = MediaState(None, "图片缺失")
            continue
        try:
            media_id = await bot_media.upload(
                client,
                "image",
                filename=full.image_name or f"snippet-{row.id}.png",
                content=bytes(full.image),
                content_type=full.image_type or "image/png",
            )
        except Exception as exc:  # noqa: BLE001 - any WeCom/transport failure: serve the rest
            log.warning(
                "snippet media upload failed",
                extra={"snippet": row.id, "error": type(exc).__name__},
            )
            out[row.id] = MediaState(None, "图片上传企业微信失败，请稍后重试")
            continue
        async with in_transaction() as conn:
            await service.set_media(
                conn=conn, snippet_id=row.id, revision=row.revision, media_id=media_id, at=at
            )
            await audit.append(
                conn=conn,
                actor=Actor.system("snippets"),
                action="snippet.media_upload",
                target=snippet_target(row.id),
                detail={"revision": row.revision},
            )
        out[row.id] = MediaState(media_id)
    return out
