"""Custom attribute fields after they are added: edit and retire.

An edit may loosen a field freely (a longer text, a wider range, a new enum value)
but tightens it only when no stored value breaks the new check: a field describes
data already imported, and a schema that refuses what it holds would make the next
import of the same customer fail for a value nobody sent.  The type (and whether
the field is sealed) never changes — stored values were checked, and sealed or not,
under the old one; a new field is the way to a new type.

Retiring takes a field out of new use (imports, rules, audiences refuse it) while its
values stay stored and readable.  A rule, a saved audience or another domain's use
(an SOP campaign, through ``core.domain.Domain.attribute_uses``) blocks it, listed by
name, so nothing that runs today stops matching silently.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from core import audit
from core.audit import Actor
from core.crypto import DecryptionError, Keyring
from tagging import attributes, audience, service
from tagging.attributes import FieldError
from tagging.models import AttributeField, SealedAttribute

log = logging.getLogger(__name__)

#: Another domain's uses of attributes: given the names (a field and its band), the
#: uses as labels an operator recognises (``core.domain.Domain.attribute_uses``).
AttributeUses = Callable[[frozenset[str]], Awaitable[list[str]]]


@dataclass(frozen=True)
class FieldEdit:
    """What an edit changes; None leaves it as it is."""

    label: str | None = None
    description: str | None = None
    required: bool | None = None
    minimum: str | None = None
    maximum: str | None = None
    enum_values: tuple[str, ...] | None = None
    max_length: int | None = None
    # Given only to be refused when it differs (a type never changes).
    type: str | None = None


@dataclass(frozen=True)
class Tightening:
    """What an edit narrows: the stored values to check before it is saved."""

    # Set when the values a field admits narrowed: a stored value outside them breaks.
    allowed: tuple[str, ...] | None = None
    minimum: str | None = None  # the new lower bound, when it rose
    maximum: str | None = None  # the new upper bound, when it fell
    max_length: int | None = None  # the new length limit, when it fell

    def __bool__(self) -> bool:
        return bool(
            self.allowed is not None
            or self.minimum is not None
            or self.maximum is not None
            or self.max_length is not None
        )


class FieldConflict(FieldError):
    """Refused for what is stored or what uses the field (HTTP 409), with the detail."""

    def __init__(self, field_name: str, message: str, *, code: str, detail: dict[str, Any]) -> None:
        super().__init__(field_name, message)
        self.code = code
        self.detail = detail


@dataclass
class Breaking:
    """How many customers' stored values an edit would break, by check."""

    total: int = 0
    by_check: dict[str, int] = field(default_factory=dict)


class UnknownField(LookupError):
    pass


# ---------------------------------------------------------------- checks (no side effects)


def _bound(kind: str, name: str, text: str) -> Decimal | str | None:
    """A range bound as the field compares it (a number or an ISO date), or None."""
    if kind == "date":
        day = attributes._field_date(name, text)
        return day.isoformat() if day else None
    return attributes._field_number(name, text)


def _looser(kind: str, old: str | None, new: str | None, *, lower: bool) -> bool:
    """Whether the new bound admits every value the old one did."""
    if new is None:
        return True
    if old is None:
        return False
    a, b = _bound(kind, "x", old), _bound(kind, "x", new)
    assert a is not None and b is not None
    return b <= a if lower else b >= a  # type: ignore[operator]


def check_edit(row: AttributeField, edit: FieldEdit) -> tuple[dict[str, Any], Tightening]:
    """``(changes, tightening)`` for an edit of ``row``, or FieldError naming the field."""
    kind = row.type
    if edit.type is not None and edit.type != kind:
        raise FieldError(
            "type",
            f"字段类型不能修改（已存的值按「{attributes.TYPE_LABELS.get(kind, kind)}」校验）；"
            "需要其他类型请新增字段",
        )
    changes: dict[str, Any] = {}
    if edit.label is not None:
        label = " ".join(edit.label.split())
        if len(label) > 64:
            raise FieldError("label", "显示名至多 64 个字符")
        changes["label"] = label
    if edit.description is not None:
        description = " ".join(edit.description.split())
        if len(description) > 255:
            raise FieldError("description", "说明至多 255 个字符")
        changes["description"] = description
    if edit.required is not None:
        changes["required"] = bool(edit.required)
    allowed: tuple[str, ...] | None = None
    if edit.enum_values is not None:
        values = tuple(dict.fromkeys(v.strip() for v in edit.enum_values if v.strip()))
        if kind not in ("enum", "list"):
            if values:
                raise FieldError("enum_values", "只有枚举或列表字段可以列出取值")
        else:
            if kind == "enum" and not values:
                raise FieldError("enum_values", "枚举字段须列出取值（按等级从低到高）")
            if len(values) > 100 or any(len(v) > 64 for v in values):
                raise FieldError("enum_values", "至多 100 个取值，每个至多 64 个字符")
            old = [str(v) for v in row.enum_values or ()]
            if kind == "enum":
                kept_new = [v for v in values if v in old]
                kept_old = [v for v in old if v in values]
                if kept_new != kept_old:
                    # Rules and audiences compare an enum by rank: reordering would
                    # change what `>= 白金` selects behind their backs.
                    raise FieldError(
                        "enum_values", "已有取值的先后（等级）不能调整；新取值可插入任意位置"
                    )
            # A list without values accepts any text: unrestricting is a loosening,
            # restricting one that was open narrows it.
            if values and (not old or any(v not in values for v in old)):
                allowed = values
            changes["enum_values"] = list(values)
    new_min = old_min = row.minimum
    new_max = old_max = row.maximum
    if edit.minimum is not None or edit.maximum is not None:
        if kind not in ("int", "decimal", "date"):
            if (edit.minimum or "").strip() or (edit.maximum or "").strip():
                raise FieldError("minimum", "只有数字或日期字段可以设范围")
        else:
            if edit.minimum is not None:
                new_min = edit.minimum.strip() or None
            if edit.maximum is not None:
                new_max = edit.maximum.strip() or None
            lo = _bound(kind, "minimum", new_min or "")
            hi = _bound(kind, "maximum", new_max or "")
            if kind == "int" and any(
                isinstance(v, Decimal) and v != v.to_integral_value() for v in (lo, hi)
            ):
                raise FieldError("minimum", "整数字段的范围须为整数")
            if lo is not None and hi is not None and lo > hi:  # type: ignore[operator]
                raise FieldError(
                    "maximum", "最晚日期不能早于最早日期" if kind == "date" else "上限不能小于下限"
                )
            # Stored in the form the add check keeps (a plain number, an ISO date).
            new_min = None if lo is None else (lo if isinstance(lo, str) else attributes._plain(lo))
            new_max = None if hi is None else (hi if isinstance(hi, str) else attributes._plain(hi))
            changes["minimum"], changes["maximum"] = new_min, new_max
    new_len: int | None = None
    if edit.max_length is not None:
        if not 1 <= edit.max_length <= 255:
            raise FieldError("max_length", "长度上限须在 1–255 之间")
        changes["max_length"] = edit.max_length
        if kind in ("string", "list") and edit.max_length < row.max_length:
            new_len = edit.max_length
    tightening = Tightening(
        allowed=allowed,
        minimum=None if _looser(kind, old_min, new_min, lower=True) else new_min,
        maximum=None if _looser(kind, old_max, new_max, lower=False) else new_max,
        max_length=new_len,
    )
    changes = {k: v for k, v in changes.items() if getattr(row, k) != v}
    return changes, tightening


_CHECK_LABELS = {
    "enum_values": "取值已不在可选值中",
    "minimum": "低于新的下限",
    "maximum": "高于新的上限",
    "max_length": "超过新的长度上限",
}


def _breaking_message(breaking: Breaking) -> str:
    parts = "，".join(f"{_CHECK_LABELS[k]} {n} 位" for k, n in breaking.by_check.items() if n)
    return f"{breaking.total} 位客户已存的值不符合新的设置（{parts}）；请先更正这些客户的值"


async def _sealed_breaking(
    conn: BaseDBAsyncClient,
    keyring: Keyring,
    name: str,
    spec: attributes.AttrSpec,
    tightening: Tightening,
) -> Breaking:
    """Sealed values cannot be compared in SQL: open each and check it in Python."""
    out = Breaking(by_check={k: 0 for k in _CHECK_LABELS})
    after = 0
    while True:
        rows = await (
            SealedAttribute.filter(name=name, id__gt=after).using_db(conn).order_by("id").limit(500)
        )
        if not rows:
            return out
        for row in rows:
            after = row.id
            try:
                value = attributes.open_value(keyring, row)
            except DecryptionError:
                log.warning("sealed attribute not opened for an edit check", extra={"id": row.id})
                continue
            hit = _python_breaks(value, spec, tightening)
            for check in hit:
                out.by_check[check] += 1
            out.total += bool(hit)


def _python_breaks(value: Any, spec: attributes.AttrSpec, t: Tightening) -> list[str]:
    items = value if isinstance(value, list) else [value]
    hit: list[str] = []
    if t.allowed is not None and any(str(v) not in t.allowed for v in items):
        hit.append("enum_values")
    if spec.type in ("int", "decimal"):
        number = Decimal(str(value))
        if t.minimum is not None and number < Decimal(t.minimum):
            hit.append("minimum")
        if t.maximum is not None and number > Decimal(t.maximum):
            hit.append("maximum")
    if spec.type == "date":
        if t.minimum is not None and str(value) < t.minimum:
            hit.append("minimum")
        if t.maximum is not None and str(value) > t.maximum:
            hit.append("maximum")
    if t.max_length is not None and any(len(str(v)) > t.max_length for v in items):
        hit.append("max_length")
    return hit


async def _breaking(
    conn: BaseDBAsyncClient,
    keyring: Keyring | None,
    row: AttributeField,
    spec: attributes.AttrSpec,
    tightening: Tightening,
) -> Breaking:
    if row.sensitive:
        if keyring is None:
            raise FieldError(
                "minimum", "加密字段的已存值须用字段密钥逐一核对，请在控制台或 API 操作"
            )
        return await _sealed_breaking(conn, keyring, row.name, spec, tightening)
    counts = await service.count_attribute_breaking(
        conn=conn,
        name=row.name,
        kind=row.type,
        allowed=tightening.allowed,
        minimum=tightening.minimum,
        maximum=tightening.maximum,
        max_length=tightening.max_length,
    )
    return Breaking(total=counts.pop("total", 0), by_check=counts)


# ---------------------------------------------------------------- use cases


async def _custom_row(conn: BaseDBAsyncClient, name: str) -> AttributeField:
    if name in attributes.BUILTIN:
        raise FieldError("name", f"{name} 是内置字段，不能修改或停用")
    row = await AttributeField.filter(name=name).using_db(conn).select_for_update().first()
    if row is None:
        raise UnknownField(name)
    return row


async def do_edit_field(
    *, name: str, edit: FieldEdit, actor: Actor, keyring: Keyring | None = None
) -> AttributeField:
    """Change a custom field's label, description, required flag, range, values or
    length; a tightening is refused while stored values break it (FieldConflict)."""
    async with in_transaction() as conn:
        row = await _custom_row(conn, name)
        changes, tightening = check_edit(row, edit)
        if not changes:
            return row
        if tightening:
            after = AttributeField(**{**_row_values(row), **changes})
            spec = attributes.spec_of_field(after)
            breaking = await _breaking(conn, keyring, row, spec, tightening)
            if breaking.total:
                first = next(k for k, n in breaking.by_check.items() if n)
                raise FieldConflict(
                    first,
                    _breaking_message(breaking),
                    code="values_break",
                    detail={"breaking": breaking.total, "by_check": breaking.by_check},
                )
        before = {k: getattr(row, k) for k in changes}
        for key, value in changes.items():
            setattr(row, key, value)
        await row.save(using_db=conn, update_fields=[*changes, "updated_at"])
        await audit.append(
            conn=conn,
            actor=actor,
            action="tagging.attribute_field.edit",
            target=f"attribute_field:{row.name}",
            # Each changed setting as "[before, after]" (the detail holds flat values).
            detail={
                k: json.dumps([before[k], v], ensure_ascii=False, default=str)
                for k, v in changes.items()
            },
        )
    return row


def _row_values(row: AttributeField) -> dict[str, Any]:
    return {k: getattr(row, k) for k in row._meta.fields_map if k not in ("id",)}


def _uses_in(expr: str, names: frozenset[str]) -> bool:
    try:
        node = audience.parse(expr)
    except audience.ExpressionError:
        return False  # a broken expression uses nothing (and matches nobody)
    return bool(names & set(audience.attribute_names(node)))


async def field_uses(
    *, names: frozenset[str], elsewhere: Sequence[AttributeUses] = ()
) -> list[str]:
    """What uses any of ``names`` today: rules, saved audiences, other domains' uses."""
    uses: list[str] = []
    for rule in await service.rules_with_audience():
        if _uses_in(str(rule.spec.get("when", {}).get("audience") or ""), names):
            uses.append(f"打标规则「{rule.name}」（#{rule.id}）")
    for saved in await service.audiences():
        if _uses_in(saved.expr, names):
            uses.append(f"已保存人群「{saved.name}」")
    for other in elsewhere:
        uses += await other(names)
    return uses


async def do_retire_field(
    *, name: str, actor: Actor, elsewhere: Sequence[AttributeUses] = ()
) -> AttributeField:
    """Take a custom field out of new use; refused (FieldConflict) while anything uses it."""
    async with in_transaction() as conn:
        row = await _custom_row(conn, name)
        if row.retired_at is not None:
            return row
        names = frozenset({row.name, *((f"{row.name}_band",) if row.bands else ())})
        uses = await field_uses(names=names, elsewhere=elsewhere)
        if uses:
            raise FieldConflict(
                "name",
                f"字段 {row.name} 仍被使用，不能停用：" + "；".join(uses),
                code="field_in_use",
                detail={"uses": uses},
            )
        row.retired_at = datetime.now(UTC)
        row.retired_by = actor.ref[:96]
        await row.save(using_db=conn, update_fields=["retired_at", "retired_by", "updated_at"])
        await audit.append(
            conn=conn,
            actor=actor,
            action="tagging.attribute_field.retire",
            target=f"attribute_field:{row.name}",
            detail={},
        )
    return row


async def do_restore_field(*, name: str, actor: Actor) -> AttributeField:
    """Put a retired field back in use; its stored values were kept."""
    async with in_transaction() as conn:
        row = await _custom_row(conn, name)
        if row.retired_at is None:
            return row
        row.retired_at = None
        row.retired_by = ""
        await row.save(using_db=conn, update_fields=["retired_at", "retired_by", "updated_at"])
        await audit.append(
            conn=conn,
            actor=actor,
            action="tagging.attribute_field.restore",
            target=f"attribute_field:{row.name}",
            detail={},
        )
    return row
