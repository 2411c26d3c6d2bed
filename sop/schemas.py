"""Shapes of a campaign as the API, the console and the CLI hand it over.

The shapes check types and plain bounds; what needs the database or WeCom's limits
(a tag that exists, an audience that selects someone, content that fits
``add_msg_template``, timing that can ever happen, compliance findings) is checked by
``sop.campaigns.check_campaign``, which names the field of every problem.

These shapes are also the contract of the JSON columns the engine reads:
``CampaignVersion.trigger`` is a :class:`TriggerIn` dump, ``exit_conditions`` a list
of :class:`ExitIn`, ``goal`` a :class:`GoalIn`, ``product`` a :class:`ProductIn` and
``CampaignStep.content`` a :class:`ContentIn` (``None`` members left out).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sop.models import Anchor, Delivery, Reentry, Segment

TriggerKind = Literal[
    "customer_added", "tag_added", "tag_removed", "intent", "attribute_date", "inactivity", "manual"
]
ExitKind = Literal["replied", "tag_added", "tag_removed", "opted_out", "relation_deleted", "goal"]
ContentKind = Literal["text", "image", "link", "miniprogram", "file"]
DateAttribute = Literal["maturity_date", "birthday", "holding.maturity_date"]
RiskLevel = Literal["R1", "R2", "R3", "R4", "R5"]

# Generous bounds against abuse; WeCom's real limits are checked in bytes by
# sop.campaigns, where the error can say how far over a text is.
_TEXT_MAX_CHARS = 20_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class TriggerIn(_Strict):
    """What enrols a customer.

    - ``customer_added``: a new external contact; ``state`` limits it to one channel
      (the contact way's ``State``, WeCom's ≤ 30 characters).
    - ``tag_added`` / ``tag_removed``: ``tag`` (a tag name in the library).
    - ``intent``: ``intent`` detected in a customer's message (compliance_nlp's labels).
    - ``attribute_date``: ``days_before`` (0..366) a date ``attribute``: the imported
      ``maturity_date``, a holding's ``maturity_date``, or ``birthday`` (each year).
    - ``inactivity``: no message either way for ``days``.
    - ``manual``: an operator enrols a list or a snapshot of the audience.
    """

    kind: TriggerKind
    state: str | None = Field(default=None, max_length=64)
    tag: str | None = Field(default=None, max_length=64)
    intent: str | None = Field(default=None, max_length=64)
    attribute: DateAttribute | None = None
    days_before: int | None = Field(default=None, ge=0, le=366)
    days: int | None = Field(default=None, ge=1, le=366)


class ExitIn(_Strict):
    """Ends an enrolment: ``tag`` for tag_added / tag_removed; ``goal`` needs a goal."""

    kind: ExitKind
    tag: str | None = Field(default=None, max_length=64)


class GoalIn(_Strict):
    """What counts as success: an ``intent`` detected, or a ``tag`` applied."""

    intent: str | None = Field(default=None, max_length=64)
    tag: str | None = Field(default=None, max_length=64)


class ProductIn(_Strict):
    """The product a campaign promotes: suitability is checked against it at send time."""

    code: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=64)
    risk_level: RiskLevel


class MediaIn(_Strict):
    """An image or a file: uploaded through media/upload when sent (ids live 3 days)."""

    url: str = Field(min_length=1, max_length=2048)
    name: str = Field(default="", max_length=128)


class LinkIn(_Strict):
    title: str = Field(max_length=_TEXT_MAX_CHARS)
    url: str = Field(max_length=4096)
    desc: str = Field(default="", max_length=_TEXT_MAX_CHARS)
    picurl: str = Field(default="", max_length=4096)


class MiniprogramIn(_Strict):
    title: str = Field(max_length=_TEXT_MAX_CHARS)
    appid: str = Field(max_length=64)
    page: str = Field(max_length=4096)
    pic_url: str = Field(default="", max_length=2048)


class ContentIn(_Strict):
    """A step's message: optional text plus, per ``kind``, one attachment."""

    kind: ContentKind = "text"
    text: str = Field(default="", max_length=_TEXT_MAX_CHARS)
    media: MediaIn | None = None
    link: LinkIn | None = None
    miniprogram: MiniprogramIn | None = None


class StepIn(_Strict):
    name: str = Field(default="", max_length=64)
    anchor: Anchor = Anchor.ENTRY
    offset_days: int = Field(default=0, ge=-10_000, le=10_000)
    offset_minutes: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    at_time: str | None = Field(default=None, max_length=5)
    window_start: str = Field(default="08:00", max_length=5)
    window_end: str = Field(default="21:00", max_length=5)
    skip_weekends: bool = False
    skip_holidays: bool = False
    delivery: Delivery = Delivery.MASS_SEND
    content: ContentIn


class CampaignIn(_Strict):
    """A campaign as marketing saves it (a new campaign, or its next version)."""

    name: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=255)
    segment: Segment = Segment.ALL
    trigger: TriggerIn | None = None
    audience: str | None = Field(default=None, max_length=2000)
    reentry: Reentry = Reentry.NEVER
    exit_conditions: list[ExitIn] = Field(default_factory=list, max_length=10)
    goal: GoalIn | None = None
    product: ProductIn | None = None
    #: Customer-local time for step clock times, send windows and days (an IANA name).
    timezone: str = Field(default="Asia/Shanghai", min_length=1, max_length=40)
    steps: list[StepIn] = Field(default_factory=list, max_length=50)


class DecisionIn(_Strict):
    """Compliance's decision on the version waiting for approval."""

    version: int | None = Field(default=None, ge=1)
    comment: str = Field(default="", max_length=2000)


class EnrolIn(_Strict):
    """A manual enrolment: these external_userids, or (none given) the audience now."""

    customers: list[str] | None = Field(default=None, max_length=10_000)


class ContentCheckIn(_Strict):
    """One step's content, checked as the builder types it (nothing is saved)."""

    content: ContentIn
    has_product: bool = False


def dump(model: BaseModel | None) -> Any:
    """A shape as its JSON column stores it: members left unset or None are omitted."""
    if model is None:
        return None
    return model.model_dump(mode="json", exclude_none=True)
