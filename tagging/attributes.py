"""Institution attributes imported from core banking / CRM systems: the typed schema
(built-in fields and the institution's own, added at run time), per-value validation,
sealing of sensitive values, and the bulk import (API, CSV, console) with its history.

An import reports every rejected row with its row number and reason and applies the
rest in one transaction; unknown customers are reported, never created (a customer
exists once WeCom has told ``bot`` about them).  Re-importing the same values changes
nothing (``unchanged``), so a nightly feed can be replayed safely.

Sensitive attributes (AUM, holdings, any custom field marked sensitive) never reach
``bot_customer.attributes`` in the clear: their values are sealed with the field keys
(``core.crypto``, AES-GCM bound to customer and attribute) in
``tagging_sealed_attribute``.  What audiences need stays in the clear, coarsened: the
AUM's band (``aum_band``, derived on import), a sensitive number's band when the field
defines band edges, and a holding's product code, product risk and maturity date
without its amount.  See docs/tagging.md ("Sensitive attributes").
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, cast

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.transactions import in_transaction

from bot import service as bot_service
from core import audit
from core.audit import Actor
from core.crypto import DecryptionError, Keyring
from tagging import service
from tagging.models import AttributeField, AttributeImport, ImportReject, SealedAttribute

log = logging.getLogger(__name__)

AttrType = Literal["enum", "int", "decimal", "date", "string", "list"]
ATTR_TYPES: tuple[AttrType, ...] = ("string", "int", "decimal", "date", "enum", "list")
MAX_ROWS = 10_000
HOLDING_RISK = ("R1", "R2", "R3", "R4", "R5")
#: A custom list holds at most this many values (a feature list, not a ledger).
LIST_MAX_ITEMS = 100
#: Rejected rows kept per import for the console and the rejects file; the counts
#: stay exact beyond it.
REJECTS_KEPT = 50_000
NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class AttrSpec:
    type: AttrType
    values: tuple[str, ...] = ()  # enum values, in rank order (risk levels compare by rank)
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    max_length: int = 64
    # Shown masked to roles without ``customers:unmask`` (marketing sees the band).
    masked_by_role: bool = False
    # Sealed at rest (AES-GCM); never compared in SQL (audiences use the band).
    sensitive: bool = False
    label: str = ""
    required: bool = False
    # A sensitive number's band kept in the clear: the band attribute's name, its edges.
    band: str | None = None
    band_edges: tuple[Decimal, ...] = ()
    # Date range (inclusive), for date attributes.
    earliest: date | None = None
    latest: date | None = None
    builtin: bool = True
    # A band attribute derived from a sensitive number (set on import, not given).
    derived_from: str | None = None
    description: str = ""
    # A retired custom field: imports, rules and audiences refuse it; stored values
    # stay readable (see ``do_retire_field``).
    retired: bool = False


Schema = Mapping[str, AttrSpec]

_AUM_EDGES = (Decimal(500_000), Decimal(3_000_000), Decimal(10_000_000))

#: The built-in attributes; an institution adds its own (``tagging_attribute_field``).
BUILTIN: dict[str, AttrSpec] = {
    # Customer risk tolerance (投资者风险承受能力 C1–C5, 《证券期货投资者适当性管理办法》).
    "risk_level": AttrSpec("enum", ("C1", "C2", "C3", "C4", "C5"), label="风险承受能力"),
    "aum_band": AttrSpec(
        "enum", ("<50万", "50万-300万", "300万-1000万", "1000万+"), label="资产规模区间"
    ),
    "age": AttrSpec("int", minimum=Decimal(0), maximum=Decimal(150), label="年龄"),
    "aum": AttrSpec(
        "decimal",
        minimum=Decimal(0),
        masked_by_role=True,
        sensitive=True,
        label="资产规模（AUM，元）",
        band="aum_band",
        band_edges=_AUM_EDGES,
    ),
    "birthday": AttrSpec("date", masked_by_role=True, label="生日"),
    "maturity_date": AttrSpec("date", label="最近到期日"),
    "branch": AttrSpec("string", max_length=64, label="所属网点"),
    # [{product_code, risk_level R1–R5, maturity_date, amount}], product risk per 适当性
    # rules.  Sealed whole; the clear copy keeps all but the amounts (audiences need them).
    "holdings": AttrSpec("list", masked_by_role=True, sensitive=True, label="持仓"),
}
#: Kept for callers that validate against the built-in fields only.
ATTRIBUTES = BUILTIN
TYPE_LABELS = {
    "string": "文本",
    "int": "整数",
    "decimal": "小数",
    "date": "日期",
    "enum": "枚举",
    "list": "列表",
}


def band_labels(edges: Sequence[Decimal]) -> tuple[str, ...]:
    """``<e1``, ``e1-e2``, …, ``ek+``: the bands a sensitive number falls into."""
    text = [_plain(e) for e in edges]
    labels = [f"<{text[0]}"]
    labels += [f"{a}-{b}" for a, b in zip(text, text[1:], strict=False)]
    labels.append(f"{text[-1]}+")
    return tuple(labels)


def _plain(d: Decimal) -> str:
    """Normalised without an exponent: 1200000.00 → "1200000" (not "1.2E+6")."""
    return format(d.normalize(), "f")


def band_of(spec: AttrSpec, bands: AttrSpec, value: Decimal) -> str:
    index = sum(1 for edge in spec.band_edges if value >= edge)
    return bands.values[index]


# ---------------------------------------------------------------- the schema


def spec_of_field(row: AttributeField) -> AttrSpec:
    kind = cast(AttrType, row.type)
    earliest = latest = None
    minimum = maximum = None
    if kind == "date":
        earliest = date.fromisoformat(row.minimum) if row.minimum else None
        latest = date.fromisoformat(row.maximum) if row.maximum else None
    elif kind in ("int", "decimal"):
        minimum = Decimal(row.minimum) if row.minimum else None
        maximum = Decimal(row.maximum) if row.maximum else None
    edges = tuple(Decimal(str(e)) for e in row.bands or ())
    return AttrSpec(
        kind,
        values=tuple(str(v) for v in row.enum_values or ()),
        minimum=minimum,
        maximum=maximum,
        max_length=row.max_length,
        masked_by_role=row.masked_by_role or row.sensitive,
        sensitive=row.sensitive,
        label=row.label,
        required=row.required,
        band=f"{row.name}_band" if edges else None,
        band_edges=edges,
        earliest=earliest,
        latest=latest,
        builtin=False,
        description=row.description,
        retired=row.retired_at is not None,
    )


def schema_from(rows: Sequence[AttributeField]) -> dict[str, AttrSpec]:
    schema: dict[str, AttrSpec] = dict(BUILTIN)
    for row in rows:
        if row.name in schema:
            continue  # a built-in name is refused on save; never let a row shadow one
        spec = spec_of_field(row)
        schema[row.name] = spec
        if spec.band:
            schema[spec.band] = AttrSpec(
                "enum",
                band_labels(spec.band_edges),
                label=f"{spec.label or row.name}区间",
                builtin=False,
                derived_from=row.name,
                retired=spec.retired,
            )
    return schema


async def load_schema(*, conn: BaseDBAsyncClient | None = None) -> dict[str, AttrSpec]:
    """Built-in and custom attributes (one small query: fields are few and read often)."""
    q = AttributeField.all().order_by("id")
    return schema_from(await (q.using_db(conn) if conn else q))


# ---------------------------------------------------------------- values


def check_value(name: str, raw: Any, schema: Schema = BUILTIN) -> Any:
    """The stored form of ``raw`` for attribute ``name``, or ValueError saying why."""
    spec = schema.get(name)
    if spec is None:
        raise ValueError(f"unknown attribute {name!r}")
    if spec.retired:
        raise ValueError(f"{name}: retired (已停用), no longer accepted")
    if spec.type == "list":
        return _holdings(raw) if name == "holdings" else _list(name, raw, spec)
    text = str(raw).strip() if raw is not None else ""
    if not text:
        raise ValueError(f"{name}: empty value")
    if spec.type == "enum":
        if text not in spec.values:
            raise ValueError(f"{name}: must be one of {', '.join(spec.values)}")
        return text
    if spec.type in ("int", "decimal"):
        number = _number(name, text, spec)
        # Decimals as text keep their precision; both databases cast them for comparison.
        return int(number) if spec.type == "int" else _plain(number)
    if spec.type == "date":
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{name}: not a date YYYY-MM-DD") from None
        if spec.earliest and day < spec.earliest:
            raise ValueError(f"{name}: before {spec.earliest.isoformat()}")
        if spec.latest and day > spec.latest:
            raise ValueError(f"{name}: after {spec.latest.isoformat()}")
        return day.isoformat()
    if len(text) > spec.max_length:
        raise ValueError(f"{name}: longer than {spec.max_length} characters")
    return text


def _number(name: str, text: str, spec: AttrSpec) -> Decimal:
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{name}: not a number") from None
    if not number.is_finite():
        raise ValueError(f"{name}: not a number")
    if spec.type == "int" and number != number.to_integral_value():
        raise ValueError(f"{name}: must be a whole number")
    if spec.minimum is not None and number < spec.minimum:
        raise ValueError(f"{name}: below {spec.minimum}")
    if spec.maximum is not None and number > spec.maximum:
        raise ValueError(f"{name}: above {spec.maximum}")
    return number


def _list(name: str, raw: Any, spec: AttrSpec) -> list[str]:
    """A custom list: a JSON array of strings, or ``a|b|c`` (a CSV cell)."""
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            try:
                raw = json.loads(text)
            except ValueError:
                raise ValueError(f"{name}: not JSON") from None
        else:
            raw = [part.strip() for part in text.split("|") if part.strip()]
    if not isinstance(raw, list) or not raw or len(raw) > LIST_MAX_ITEMS:
        raise ValueError(f"{name}: must be a list of 1..{LIST_MAX_ITEMS} values")
    out: list[str] = []
    for i, item in enumerate(raw):
        if not isinstance(item, str | int) or isinstance(item, bool):
            raise ValueError(f"{name}[{i}]: must be text")
        value = str(item).strip()
        if not value or len(value) > spec.max_length:
            raise ValueError(f"{name}[{i}]: 1..{spec.max_length} characters")
        if spec.values and value not in spec.values:
            raise ValueError(f"{name}[{i}]: must be one of {', '.join(spec.values)}")
        if value not in out:
            out.append(value)
    return out


_HOLDING_KEYS = {"product_code", "risk_level", "maturity_date", "amount"}


def _holdings(raw: Any) -> list[dict[str, str]]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ValueError("holdings: not JSON") from None
    if not isinstance(raw, list) or len(raw) > 200:
        raise ValueError("holdings: must be a list of at most 200 holdings")
    out = []
    for i, h in enumerate(raw):
        if not isinstance(h, dict) or set(h) - _HOLDING_KEYS:
            raise ValueError(
                f"holdings[{i}]: needs product_code, risk_level, maturity_date (amount optional)"
            )
        code = str(h.get("product_code") or "")
        if not code or len(code) > 32:
            raise ValueError(f"holdings[{i}].product_code: 1..32 characters")
        if h.get("risk_level") not in HOLDING_RISK:
            raise ValueError(f"holdings[{i}].risk_level: one of R1..R5")
        item = {"product_code": code, "risk_level": str(h["risk_level"])}
        if h.get("maturity_date"):
            try:
                item["maturity_date"] = date.fromisoformat(str(h["maturity_date"])).isoformat()
            except ValueError:
                raise ValueError(f"holdings[{i}].maturity_date: not a date") from None
        if h.get("amount") not in (None, ""):
            try:
                amount = Decimal(str(h["amount"]))
            except InvalidOperation:
                raise ValueError(f"holdings[{i}].amount: not a number") from None
            if not amount.is_finite() or amount < 0:
                raise ValueError(f"holdings[{i}].amount: a number ≥ 0")
            item["amount"] = _plain(amount)
        out.append(item)
    return out


def split_sensitive(
    checked: Mapping[str, Any], schema: Schema
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(clear, sealed)``: what goes into ``bot_customer.attributes`` and what is sealed.

    A sensitive number with a band leaves its band in the clear (a band given beside
    it must agree); holdings leave all but their amounts.
    """
    clear: dict[str, Any] = {}
    sealed: dict[str, Any] = {}
    for name, value in checked.items():
        spec = schema[name]
        if spec.derived_from is not None:
            continue  # set from its number below; a given one must agree
        if not spec.sensitive:
            clear[name] = value
            continue
        sealed[name] = value
        if spec.band:
            bands = schema[spec.band]
            band = band_of(spec, bands, Decimal(str(value)))
            given = checked.get(spec.band)
            if given is not None and given != band:
                raise ValueError(f"{spec.band}: {given} disagrees with {name} (band {band})")
            clear[spec.band] = band
        if name == "holdings":
            clear[name] = [{k: v for k, v in h.items() if k != "amount"} for h in value]
    for name, value in checked.items():
        derived = schema[name].derived_from
        if derived is not None and derived not in checked:
            clear[name] = value  # a band alone (the exact number kept elsewhere)
    return clear, sealed


def sealed_aad(customer_id: int, name: str) -> str:
    """Binds a sealed value to its customer and attribute: it opens nowhere else."""
    return f"tagging.attr:{customer_id}:{name}"


def seal_value(keyring: Keyring, *, customer_id: int, name: str, value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return keyring.seal_text(text, aad=sealed_aad(customer_id, name))


def open_value(keyring: Keyring, row: SealedAttribute) -> Any:
    customer_id = int(row.customer_id)  # type: ignore[attr-defined]
    return json.loads(keyring.open_text(row.sealed, aad=sealed_aad(customer_id, row.name)))


# ---------------------------------------------------------------- rows and reports


@dataclass(frozen=True)
class Row:
    number: int  # as the caller counts (array index + 1, or the CSV line)
    key: Literal["external_userid", "unionid"]
    value: str
    attributes: dict[str, Any]  # in the clear
    sealed: dict[str, Any] = field(default_factory=dict)


@dataclass
class ImportReport:
    accepted: int = 0  # changed something
    unchanged: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {row, error}
    unknown: list[dict[str, Any]] = field(default_factory=list)  # {row, key}
    import_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "accepted": self.accepted,
            "unchanged": self.unchanged,
            "rejected": len(self.rejected) + len(self.unknown),
            "errors": [*self.rejected, *({**u, "error": "unknown customer"} for u in self.unknown)],
        }
        if self.import_id is not None:
            out["import_id"] = self.import_id
        return out

    def merge(self, other: ImportReport) -> None:
        self.accepted += other.accepted
        self.unchanged += other.unchanged
        self.rejected += other.rejected
        self.unknown += other.unknown


def check_row(number: int, raw: Any, schema: Schema = BUILTIN) -> Row:
    """Validate one input row (no side effects); ValueError names what is wrong."""
    if not isinstance(raw, Mapping):
        raise ValueError("must be an object")
    keys = [k for k in ("external_userid", "unionid") if raw.get(k)]
    if len(keys) != 1:
        raise ValueError("give exactly one of external_userid or unionid")
    key = keys[0]
    value = str(raw[key])
    if len(value) > 64:
        raise ValueError(f"{key}: longer than 64 characters")
    attrs = raw.get("attributes")
    if attrs is None:  # a flat row (CSV): every other non-empty column is an attribute
        attrs = {k: v for k, v in raw.items() if k not in ("external_userid", "unionid")}
        attrs = {k: v for k, v in attrs.items() if v not in (None, "")}
    if not isinstance(attrs, Mapping) or not attrs:
        raise ValueError("no attributes given")
    checked = {str(k): check_value(str(k), v, schema) for k, v in attrs.items()}
    clear, sealed = split_sensitive(checked, schema)
    return Row(number, cast(Literal["external_userid", "unionid"], key), value, clear, sealed)


def _masked_key(value: str) -> str:
    from bot.outbox import mask_external_userid

    return mask_external_userid(value)


async def start_import(*, actor: Actor, source: str, filename: str = "") -> AttributeImport:
    """An import that spans several transactions (a CSV file, chunk by chunk)."""
    return await AttributeImport.create(
        actor=actor.ref[:96],
        actor_name=actor.name[:96],
        source=source[:16],
        filename=filename[:255],
        started_at=datetime.now(UTC),
    )


async def finish_import(*, batch: AttributeImport, ok: bool = True) -> None:
    await AttributeImport.filter(id=batch.id).update(
        status="done" if ok else "failed",
        finished_at=datetime.now(UTC),
        updated_at=datetime.now(UTC),
    )


async def _required_missing(
    conn: BaseDBAsyncClient, schema: Schema, rows: Sequence[tuple[Row, int]]
) -> dict[int, str]:
    """Row number → the required attribute it leaves missing (given nowhere, stored nowhere)."""
    required = [n for n, s in schema.items() if s.required and not s.retired]
    if not required or not rows:
        return {}
    ids = [cid for _, cid in rows]
    current = await service.customer_attributes(conn=conn, customer_ids=ids)
    sealed = await service.sealed_names(conn=conn, customer_ids=ids)
    out: dict[int, str] = {}
    for row, cid in rows:
        have = {k for k, v in current.get(cid, {}).items() if v is not None}
        have |= set(row.attributes) | set(row.sealed) | sealed.get(cid, set())
        for name in required:
            if name not in have:
                out[row.number] = f"{name}: required"
                break
    return out


async def do_import_attributes(
    *,
    rows: Sequence[Any],
    actor: Actor,
    keyring: Keyring,
    first_number: int = 1,
    source: str = "api",
    filename: str = "",
    batch: AttributeImport | None = None,
    address: str = "",
) -> ImportReport:
    """Validate every row, apply the valid ones in one transaction, record and audit.

    Without ``batch`` the call is one import of its own (the API); with it, one chunk
    of a longer import (``start_import`` / ``finish_import``).
    """
    schema = await load_schema()
    report = ImportReport()
    good: list[Row] = []
    for i, raw in enumerate(rows):
        number = first_number + i
        try:
            good.append(check_row(number, raw, schema))
        except ValueError as exc:
            report.rejected.append({"row": number, "error": str(exc), **_who(raw)})
    by_ext = await service.customer_ids_by(
        key="external_userid", values=[r.value for r in good if r.key == "external_userid"]
    )
    by_union = await service.customer_ids_by(
        key="unionid", values=[r.value for r in good if r.key == "unionid"]
    )
    async with in_transaction() as conn:
        known: list[tuple[Row, int]] = []
        for row in good:
            cid = (by_ext if row.key == "external_userid" else by_union).get(row.value)
            if cid is None:
                report.unknown.append(
                    {"row": row.number, "key": row.key, "who": _masked_key(row.value)}
                )
            else:
                known.append((row, cid))
        missing = await _required_missing(conn, schema, known)
        existing = await service.sealed_rows(
            conn=conn,
            customer_ids=[cid for row, cid in known if row.sealed],
            names=sorted({n for row, _ in known for n in row.sealed}),
        )
        for row, cid in known:
            if row.number in missing:
                report.rejected.append(
                    {"row": row.number, "error": missing[row.number], "key": row.key}
                )
                continue
            changed = False
            if row.attributes:
                changed = await bot_service.merge_customer_attributes(
                    conn=conn, customer_id=cid, attributes=row.attributes
                )
            for name, value in row.sealed.items():
                if await _store_sealed(conn, keyring, existing, cid, name, value):
                    changed = True
            if changed:
                report.accepted += 1
            else:
                report.unchanged += 1
        report.rejected.sort(key=lambda e: int(e["row"]))
        if batch is None:
            batch = await AttributeImport.create(
                using_db=conn,
                actor=actor.ref[:96],
                actor_name=actor.name[:96],
                source=source[:16],
                filename=filename[:255],
                started_at=datetime.now(UTC),
                finished_at=datetime.now(UTC),
                status="done",
            )
        await _record(conn, batch, report, rows=len(rows))
        report.import_id = batch.id
        if report.accepted:
            await audit.append(
                conn=conn,
                actor=actor,
                action="tagging.attributes.import",
                target=f"customers:{report.accepted}",
                source=address or source,
                detail={
                    "import_id": batch.id,
                    "accepted": report.accepted,
                    "unchanged": report.unchanged,
                    "rejected": len(report.rejected) + len(report.unknown),
                },
            )
    return report


def _who(raw: Any) -> dict[str, str]:
    """The key a rejected row named, masked, so the history can point at it."""
    if not isinstance(raw, Mapping):
        return {}
    for key in ("external_userid", "unionid"):
        value = raw.get(key)
        if isinstance(value, str) and value:
            return {"key": key, "who": _masked_key(value[:64])}
    return {}


async def _store_sealed(
    conn: BaseDBAsyncClient,
    keyring: Keyring,
    existing: Mapping[tuple[int, str], SealedAttribute],
    customer_id: int,
    name: str,
    value: Any,
) -> bool:
    """Seal ``value`` unless the stored one opens to the same; True when it changed."""
    row = existing.get((customer_id, name))
    if row is not None:
        try:
            if open_value(keyring, row) == value:
                return False
        except DecryptionError:
            pass  # unreadable under these keys: the import's value replaces it
        row.sealed = seal_value(keyring, customer_id=customer_id, name=name, value=value)
        await row.save(using_db=conn, update_fields=["sealed", "updated_at"])
        return True
    # Two imports sealing one customer's value at once: the unique (customer, name)
    # key fails the later transaction whole, so nothing is half-applied.
    await SealedAttribute.create(
        using_db=conn,
        customer_id=customer_id,
        name=name,
        sealed=seal_value(keyring, customer_id=customer_id, name=name, value=value),
    )
    return True


async def _record(
    conn: BaseDBAsyncClient, batch: AttributeImport, report: ImportReport, *, rows: int
) -> None:
    errors = report.as_dict()["errors"]
    kept = await ImportReject.filter(batch_id=batch.id).using_db(conn).count()
    room = max(0, REJECTS_KEPT - kept)
    if errors and room:
        await ImportReject.bulk_create(
            [
                ImportReject(
                    batch_id=batch.id,
                    row=int(e["row"]),
                    key=str(e.get("key", ""))[:16],
                    who=str(e.get("who", ""))[:64],
                    error=str(e["error"])[:255],
                )
                for e in sorted(errors, key=lambda e: int(e["row"]))[:room]
            ],
            using_db=conn,
        )
    await (
        AttributeImport.filter(id=batch.id)
        .using_db(conn)
        .update(
            rows=F("rows") + rows,
            accepted=F("accepted") + report.accepted,
            unchanged=F("unchanged") + report.unchanged,
            rejected=F("rejected") + len(errors),
            updated_at=datetime.now(UTC),
        )
    )


# ---------------------------------------------------------------- custom fields


@dataclass(frozen=True)
class FieldIn:
    """A custom attribute as an operator or the API gives it (checked by ``check_field``)."""

    name: str
    type: str
    label: str = ""
    required: bool = False
    minimum: str = ""
    maximum: str = ""
    enum_values: tuple[str, ...] = ()
    max_length: int = 64
    masked_by_role: bool = False
    sensitive: bool = False
    bands: tuple[str, ...] = ()


class FieldError(ValueError):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


def check_field(spec: FieldIn, schema: Schema) -> dict[str, Any]:
    """The row to store for a new custom attribute, or FieldError naming the field."""
    name = spec.name.strip()
    if not NAME_RE.match(name):
        raise FieldError(
            "name", "字段名须以小写字母或下划线开头，只含小写字母、数字、下划线，至多 64 个字符"
        )
    if name in schema or name in ("external_userid", "unionid"):
        raise FieldError("name", f"字段 {name} 已存在")
    if spec.type not in ATTR_TYPES:
        raise FieldError("type", "请选择字段类型")
    label = " ".join(spec.label.split())
    if len(label) > 64:
        raise FieldError("label", "显示名至多 64 个字符")
    if not 1 <= spec.max_length <= 255:
        raise FieldError("max_length", "长度上限须在 1–255 之间")
    values = tuple(dict.fromkeys(v.strip() for v in spec.enum_values if v.strip()))
    if spec.type == "enum" and not values:
        raise FieldError("enum_values", "枚举字段须列出取值（按等级从低到高）")
    if spec.type not in ("enum", "list") and values:
        raise FieldError("enum_values", "只有枚举或列表字段可以列出取值")
    if len(values) > 100 or any(len(v) > 64 for v in values):
        raise FieldError("enum_values", "至多 100 个取值，每个至多 64 个字符")
    minimum, maximum = spec.minimum.strip(), spec.maximum.strip()
    if spec.type in ("int", "decimal"):
        lo, hi = (_field_number("minimum", minimum), _field_number("maximum", maximum))
        if spec.type == "int" and any(
            v is not None and v != v.to_integral_value() for v in (lo, hi)
        ):
            raise FieldError("minimum", "整数字段的范围须为整数")
        if lo is not None and hi is not None and lo > hi:
            raise FieldError("maximum", "上限不能小于下限")
    elif spec.type == "date":
        lo_d, hi_d = (_field_date("minimum", minimum), _field_date("maximum", maximum))
        if lo_d and hi_d and lo_d > hi_d:
            raise FieldError("maximum", "最晚日期不能早于最早日期")
    elif minimum or maximum:
        raise FieldError("minimum", "只有数字或日期字段可以设范围")
    bands: list[str] = []
    if spec.bands:
        if spec.type not in ("int", "decimal") or not spec.sensitive:
            raise FieldError("bands", "只有敏感的数字字段可以设区间（区间以明文保存，供人群圈选）")
        edges = [_field_number("bands", b.strip()) for b in spec.bands if b.strip()]
        clean = [e for e in edges if e is not None]
        if not clean or len(clean) > 12 or clean != sorted(set(clean)):
            raise FieldError("bands", "区间分界须为 1–12 个从小到大、不重复的数")
        bands = [_plain(e) for e in clean]
        if f"{name}_band" in schema:
            raise FieldError("name", f"字段 {name}_band 已存在")
    return {
        "name": name,
        "label": label,
        "type": spec.type,
        "required": spec.required,
        "minimum": minimum or None,
        "maximum": maximum or None,
        "enum_values": list(values),
        "max_length": spec.max_length,
        "masked_by_role": spec.masked_by_role or spec.sensitive,
        "sensitive": spec.sensitive,
        "bands": bands,
    }


def _field_number(name: str, text: str) -> Decimal | None:
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise FieldError(name, "须为数字") from None
    if not value.is_finite():
        raise FieldError(name, "须为数字")
    return value


def _field_date(name: str, text: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise FieldError(name, "须为日期 YYYY-MM-DD") from None


async def do_add_field(*, spec: FieldIn, actor: Actor) -> AttributeField:
    """Add a custom attribute at run time; imports and audiences know it at once."""
    async with in_transaction() as conn:
        values = check_field(spec, await load_schema(conn=conn))
        try:
            row = await AttributeField.create(using_db=conn, created_by=actor.ref[:96], **values)
        except IntegrityError:
            raise FieldError("name", f"字段 {values['name']} 已存在") from None
        await audit.append(
            conn=conn,
            actor=actor,
            action="tagging.attribute_field.create",
            target=f"attribute_field:{row.name}",
            detail={"type": row.type, "sensitive": row.sensitive, "required": row.required},
        )
    return row


# ---------------------------------------------------------------- showing values


def masked(spec: AttrSpec, value: Any) -> str:
    """What a viewer without ``customers:unmask`` sees of a masked-by-role value."""
    if spec.type == "date":
        return "****-**-**"
    return "***"


def display(value: Any) -> str:
    if isinstance(value, list):
        if value and isinstance(value[0], dict):
            return "；".join(
                " ".join(str(h.get(k, "")) for k in ("product_code", "risk_level", "maturity_date"))
                + (f" 金额 {h['amount']}" if "amount" in h else "")
                for h in value
            )
        return "、".join(str(v) for v in value)
    return "" if value is None else str(value)


async def do_open_sealed(
    *, customer_id: int, keyring: Keyring, actor: Actor
) -> list[tuple[str, Any]]:
    """A customer's sealed attributes, opened for one reader and audited: ``(name, value)``,
    value None where the keys cannot open it (a retired key no longer configured)."""
    rows = await service.sealed_of_customer(customer_id=customer_id)
    out: list[tuple[str, Any]] = []
    for row in rows:
        try:
            out.append((row.name, open_value(keyring, row)))
        except DecryptionError:
            log.warning("sealed attribute not opened", extra={"customer": customer_id})
            out.append((row.name, None))
    async with in_transaction() as conn:
        await audit.append(
            conn=conn,
            actor=actor,
            action="tagging.attributes.open",
            target=f"customer:{customer_id}",
            detail={"attributes": [name for name, _ in out]},
        )
    return out


# ---------------------------------------------------------------- sealing what is in the clear


async def do_seal_existing(*, keyring: Keyring, batch_size: int = 500) -> int:
    """Seal sensitive values stored in the clear before they were sealed on import
    (``siyu tags seal-attributes``); returns the customers changed.

    Each customer is handled in its own transaction and only while the clear value is
    still there, so a second run, or one beside live imports, changes nothing more.
    """
    schema = await load_schema()
    sensitive = [n for n, s in schema.items() if s.sensitive]
    changed = 0
    after = 0
    while rows := await service.customers_with_attributes(after=after, limit=batch_size):
        for cid, attrs in rows:
            after = cid
            present = {n: attrs[n] for n in sensitive if attrs.get(n) is not None and n in attrs}
            if not present:
                continue
            if "holdings" in present and not any(
                "amount" in h for h in present["holdings"] if isinstance(h, dict)
            ):
                # A clear projection already (no amounts): still seal the full list once.
                if await service.has_sealed(customer_id=cid, name="holdings"):
                    present.pop("holdings")
            if not present:
                continue
            try:
                checked = {n: check_value(n, v, schema) for n, v in present.items()}
                clear, sealed = split_sensitive(checked, schema)
            except ValueError:
                log.warning(
                    "a stored sensitive value does not validate; left as is",
                    extra={"customer": cid},
                )
                continue
            # What was in the clear and is now sealed leaves the clear copy (holdings
            # keep their projection; the AUM its band).
            drop = [name for name in present if name not in clear]
            async with in_transaction() as conn:
                existing = await service.sealed_rows(
                    conn=conn, customer_ids=[cid], names=sorted(sealed)
                )
                for name, value in sealed.items():
                    await _store_sealed(conn, keyring, existing, cid, name, value)
                await bot_service.merge_customer_attributes(
                    conn=conn, customer_id=cid, attributes=clear, drop=drop
                )
            changed += 1
    return changed
