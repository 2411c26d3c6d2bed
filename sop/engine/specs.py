"""The shapes the engine reads from a campaign version: trigger, exits, goal, content.

They are stored as JSON on ``CampaignVersion``/``CampaignStep``; the campaign builder
validates them with these same models when a version is saved (``check_*``), so the
engine never meets a shape it cannot run.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from datetime import time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from sop.engine.timing import SHANGHAI, StepTiming

__all__ = [
    "VARIABLES",
    "ContentError",
    "ExitSpec",
    "GoalSpec",
    "TriggerSpec",
    "check_exits",
    "check_goal",
    "check_trigger",
    "content_text",
    "missing_variables",
    "parse_clock",
    "render",
    "timing_of",
    "variables_in",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CustomerAdded(_Strict):
    kind: Literal["customer_added"]
    # Only contacts added through this 联系我 channel (the QR code's State); None = any.
    state: str | None = Field(default=None, max_length=64)


class TagAdded(_Strict):
    kind: Literal["tag_added"]
    tag: str = Field(min_length=1, max_length=64)


class TagRemoved(_Strict):
    kind: Literal["tag_removed"]
    tag: str = Field(min_length=1, max_length=64)


class IntentDetected(_Strict):
    kind: Literal["intent"]
    intent: str = Field(min_length=1, max_length=64)


class AttributeDate(_Strict):
    """A date attribute reached: ``days_before`` the date (``birthday`` yearly)."""

    kind: Literal["attribute_date"]
    attribute: Literal["birthday", "maturity_date", "holding.maturity_date"]
    days_before: int = Field(default=0, ge=0, le=366)


class Inactivity(_Strict):
    kind: Literal["inactivity"]
    days: int = Field(ge=1, le=366)


class Manual(_Strict):
    kind: Literal["manual"]


TriggerSpec = Annotated[
    CustomerAdded | TagAdded | TagRemoved | IntentDetected | AttributeDate | Inactivity | Manual,
    Field(discriminator="kind"),
]


class ExitSpec(_Strict):
    kind: Literal["replied", "tag_added", "tag_removed", "opted_out", "relation_deleted", "goal"]
    tag: str | None = Field(default=None, max_length=64)


class GoalSpec(_Strict):
    # The customer shows this intent (e.g. purchase_intent), or gets this tag.
    intent: str | None = Field(default=None, max_length=64)
    tag: str | None = Field(default=None, max_length=64)


_TRIGGER: TypeAdapter[Any] = TypeAdapter(TriggerSpec)
_EXITS: TypeAdapter[list[ExitSpec]] = TypeAdapter(list[ExitSpec])


def check_trigger(raw: Any) -> Any:
    """The trigger as a typed spec, or None; ``ValueError`` for a shape the engine can't run."""
    if raw is None:
        return None
    try:
        return _TRIGGER.validate_python(raw)
    except ValidationError as exc:
        raise ValueError(f"trigger: {exc.errors()[0]['msg']}") from None


def check_exits(raw: Any) -> list[ExitSpec]:
    try:
        exits = _EXITS.validate_python(raw or [])
    except ValidationError as exc:
        raise ValueError(f"exit_conditions: {exc.errors()[0]['msg']}") from None
    for e in exits:
        if e.kind in ("tag_added", "tag_removed") and not e.tag:
            raise ValueError(f"exit_conditions: {e.kind} names a tag")
    return exits


def check_goal(raw: Any) -> GoalSpec | None:
    if raw is None:
        return None
    try:
        goal = GoalSpec.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"goal: {exc.errors()[0]['msg']}") from None
    if not goal.intent and not goal.tag:
        raise ValueError("goal: name an intent or a tag")
    return goal


# ---------------------------------------------------------------- content

#: Variables a step's text may use, filled per customer at send time.
VARIABLES: dict[str, str] = {
    "customer_name": "客户称呼",
    "advisor_name": "客户经理姓名",
    "product_name": "产品名称",
    "maturity_date": "到期日",
}
_FIELD = re.compile(r"\{([a-z_]+)\}")


class ContentError(ValueError):
    pass


def variables_in(text: str) -> list[str]:
    """The ``{variables}`` a text uses; ``ContentError`` for a malformed brace."""
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise ContentError(f"malformed variable: {exc}") from None
    return names


def content_text(content: Mapping[str, Any]) -> str:
    """The text of a step's content (also a link card's title and description)."""
    parts = [str(content.get("text") or "")]
    link = content.get("link")
    if isinstance(link, Mapping):
        parts += [str(link.get("title") or ""), str(link.get("desc") or "")]
    mini = content.get("miniprogram")
    if isinstance(mini, Mapping):
        parts.append(str(mini.get("title") or ""))
    return "\n".join(p for p in parts if p)


#: Variables that read naturally with a neutral word when a customer lacks the value
#: (「您好」 for a customer without a name); any other missing value skips the touch.
FALLBACKS: dict[str, str] = {"customer_name": "您", "advisor_name": "您的客户经理"}


class _Keep(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render(text: str, values: Mapping[str, str]) -> str:
    """Fill ``{variables}``; a name missing for this customer leaves a neutral word.

    A variable with neither a value nor a neutral word is left as written: callers ask
    :func:`missing_variables` first and do not send such a text.
    """
    filled = _Keep(dict(FALLBACKS))
    filled.update({k: v for k, v in values.items() if v})
    return _FIELD.sub(lambda m: filled[m.group(1)], text)


def missing_variables(content: Mapping[str, Any], values: Mapping[str, str]) -> list[str]:
    """The variables a step's texts use that this customer has no value for (e.g. no
    maturity date imported): the touch is skipped (``missing_variable``), never sent
    with a literal ``{maturity_date}``."""
    used = dict.fromkeys(m.group(1) for m in _FIELD.finditer(content_text(content)))
    return [v for v in used if not values.get(v) and v not in FALLBACKS]


# ---------------------------------------------------------------- timing


def parse_clock(raw: str | None, *, field: str) -> time | None:
    if raw is None or raw == "":
        return None
    m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", raw)
    if m is None:
        raise ValueError(f"{field}: a time HH:MM, got {raw!r}")
    return time(int(m.group(1)), int(m.group(2)))


def timing_of(step: Any, *, tz: ZoneInfo = SHANGHAI) -> StepTiming:
    """A ``CampaignStep`` row's timing fields as :class:`StepTiming`, read in ``tz``
    (its version's zone)."""
    return StepTiming(
        offset_days=int(step.offset_days),
        offset_minutes=int(step.offset_minutes),
        at_time=parse_clock(step.at_time, field="at_time"),
        window_start=parse_clock(step.window_start, field="window_start") or time(8),
        window_end=parse_clock(step.window_end, field="window_end") or time(21),
        skip_weekends=bool(step.skip_weekends),
        skip_holidays=bool(step.skip_holidays),
        tz=tz,
    )
