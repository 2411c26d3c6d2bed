"""Institution attributes imported from core banking / CRM systems: the typed schema,
per-value validation, and the bulk import (API and CSV).

An import reports every rejected row with its row number and reason and applies the
rest in one transaction; unknown customers are reported, never created (a customer
exists once WeCom has told ``bot`` about them).  Re-importing the same values changes
nothing (``unchanged``), so a nightly feed can be replayed safely.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from tortoise.transactions import in_transaction

from bot import service as bot_service
from core import audit
from core.audit import Actor
from tagging import service

log = logging.getLogger(__name__)

AttrType = Literal["enum", "int", "decimal", "date", "string", "list"]
MAX_ROWS = 10_000
HOLDING_RISK = ("R1", "R2", "R3", "R4", "R5")


@dataclass(frozen=True)
class AttrSpec:
    type: AttrType
    values: tuple[str, ...] = ()  # enum values, in rank order (risk levels compare by rank)
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    max_length: int = 64
    # Shown masked to roles without customers:read in full (marketing sees a band).
    masked_by_role: bool = False


#: The attributes an import may set and an audience may name.
ATTRIBUTES: dict[str, AttrSpec] = {
    # Customer risk tolerance (投资者风险承受能力 C1–C5, 《证券期货投资者适当性管理办法》).
    "risk_level": AttrSpec("enum", ("C1", "C2", "C3", "C4", "C5")),
    "aum_band": AttrSpec("enum", ("<50万", "50万-300万", "300万-1000万", "1000万+")),
    "age": AttrSpec("int", minimum=Decimal(0), maximum=Decimal(150)),
    "aum": AttrSpec("decimal", minimum=Decimal(0), masked_by_role=True),
    "birthday": AttrSpec("date", masked_by_role=True),
    "maturity_date": AttrSpec("date"),
    "branch": AttrSpec("string", max_length=64),
    # [{product_code, risk_level R1–R5, maturity_date}], product risk per 适当性 rules.
    "holdings": AttrSpec("list", masked_by_role=True),
}


def check_value(name: str, raw: Any) -> Any:
    """The stored form of ``raw`` for attribute ``name``, or ValueError saying why."""
    spec = ATTRIBUTES.get(name)
    if spec is None:
        raise ValueError(f"unknown attribute {name!r}")
    if spec.type == "list":
        return _holdings(raw)
    text = str(raw).strip() if raw is not None else ""
    if not text:
        raise ValueError(f"{name}: empty value")
    if spec.type == "enum":
        if text not in spec.values:
            raise ValueError(f"{name}: must be one of {', '.join(spec.values)}")
        return text
    if spec.type in ("int", "decimal"):
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
        # Decimals as text keep their precision; both databases cast them for comparison.
        return int(number) if spec.type == "int" else str(number.normalize())
    if spec.type == "date":
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            raise ValueError(f"{name}: not a date YYYY-MM-DD") from None
    if len(text) > spec.max_length:
        raise ValueError(f"{name}: longer than {spec.max_length} characters")
    return text


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
        if not isinstance(h, dict) or set(h) - {"product_code", "risk_level", "maturity_date"}:
            raise ValueError(f"holdings[{i}]: needs product_code, risk_level, maturity_date")
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
        out.append(item)
    return out


@dataclass(frozen=True)
class Row:
    number: int  # as the caller counts (array index + 1, or the CSV line)
    key: Literal["external_userid", "unionid"]
    value: str
    attributes: dict[str, Any]


@dataclass
class ImportReport:
    accepted: int = 0  # changed something
    unchanged: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {row, error}
    unknown: list[dict[str, Any]] = field(default_factory=list)  # {row, key}

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "unchanged": self.unchanged,
            "rejected": len(self.rejected) + len(self.unknown),
            "errors": [*self.rejected, *({**u, "error": "unknown customer"} for u in self.unknown)],
        }

    def merge(self, other: ImportReport) -> None:
        self.accepted += other.accepted
        self.unchanged += other.unchanged
        self.rejected += other.rejected
        self.unknown += other.unknown


def check_row(number: int, raw: Any) -> Row:
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
    checked = {str(k): check_value(str(k), v) for k, v in attrs.items()}
    return Row(number, key, value, checked)  # type: ignore[arg-type]


async def do_import_attributes(
    *, rows: Sequence[Any], actor: Actor, first_number: int = 1, source: str = "api"
) -> ImportReport:
    """Validate every row, apply the valid ones in one transaction, audit once."""
    report = ImportReport()
    good: list[Row] = []
    for i, raw in enumerate(rows):
        number = first_number + i
        try:
            good.append(check_row(number, raw))
        except ValueError as exc:
            report.rejected.append({"row": number, "error": str(exc)})
    by_ext = await service.customer_ids_by(
        key="external_userid", values=[r.value for r in good if r.key == "external_userid"]
    )
    by_union = await service.customer_ids_by(
        key="unionid", values=[r.value for r in good if r.key == "unionid"]
    )
    async with in_transaction() as conn:
        for row in good:
            cid = (by_ext if row.key == "external_userid" else by_union).get(row.value)
            if cid is None:
                report.unknown.append({"row": row.number, "key": row.key})
                continue
            if await bot_service.merge_customer_attributes(
                conn=conn, customer_id=cid, attributes=row.attributes
            ):
                report.accepted += 1
            else:
                report.unchanged += 1
        if report.accepted:
            await audit.append(
                conn=conn,
                actor=actor,
                action="tagging.attributes.import",
                target=f"customers:{report.accepted}",
                source=source,
                detail={
                    "accepted": report.accepted,
                    "unchanged": report.unchanged,
                    "rejected": len(report.rejected) + len(report.unknown),
                },
            )
    return report
