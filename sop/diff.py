"""What a version changes against the one running (or, failing that, the one before it),
for the approval view: entry (trigger, audience, re-entry), exits, goal, product, and
step by step — added, removed, or changed in name, delivery, timing, content kind and
text (a character diff: Chinese has no spaces to split words on).

Steps are paired by position, as activation pairs them (``sop.engine.planner.
adopt_version`` hands the running version's touches not yet due to the new version's
step of the same position, and skips those of a step that is gone), so what the
reviewer reads is what the customers waiting in the journey will get.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sop.models import Campaign, CampaignStep, CampaignVersion

# (path in the step's content, label) of every value a customer sees or opens.
CONTENT_FIELDS: tuple[tuple[str, str], ...] = (
    ("text", "正文"),
    ("link.title", "链接标题"),
    ("link.desc", "链接摘要"),
    ("link.url", "链接地址"),
    ("link.picurl", "链接封面图"),
    ("media.url", "素材地址"),
    ("media.name", "素材名称"),
    ("miniprogram.title", "小程序标题"),
    ("miniprogram.appid", "小程序 AppID"),
    ("miniprogram.page", "小程序页面"),
    ("miniprogram.pic_url", "小程序封面图"),
)
TIMING_FIELDS = (
    "anchor",
    "offset_days",
    "offset_minutes",
    "at_time",
    "window_start",
    "window_end",
    "skip_weekends",
    "skip_holidays",
)
VERSION_FIELDS = ("trigger", "audience", "reentry", "exit_conditions", "goal", "product")


@dataclass(frozen=True)
class Segment:
    op: Literal["equal", "insert", "delete"]
    text: str


@dataclass(frozen=True)
class TextChange:
    field: str
    label: str
    before: str
    after: str
    segments: list[Segment]


@dataclass(frozen=True)
class StepDiff:
    position: int
    change: Literal["added", "removed", "changed", "same"]
    old: CampaignStep | None
    new: CampaignStep | None
    # Of "name", "delivery", "timing", "kind": what changed besides the texts.
    fields: list[str] = field(default_factory=list)
    texts: list[TextChange] = field(default_factory=list)


@dataclass(frozen=True)
class VersionDiff:
    base: CampaignVersion
    # "running": the version customers are in now; "previous": the one before.
    base_role: Literal["running", "previous"]
    fields: list[str]
    audience: TextChange | None
    steps: list[StepDiff]

    @property
    def changed(self) -> bool:
        return bool(self.fields) or any(s.change != "same" for s in self.steps)

    def step(self, position: int) -> StepDiff | None:
        return next((s for s in self.steps if s.position == position), None)


def text_segments(before: str, after: str) -> list[Segment]:
    """``before`` → ``after`` as kept, deleted and inserted runs of characters."""
    out: list[Segment] = []
    matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            out.append(Segment("equal", before[i1:i2]))
            continue
        if i2 > i1:
            out.append(Segment("delete", before[i1:i2]))
        if j2 > j1:
            out.append(Segment("insert", after[j1:j2]))
    return out


def _text_change(field_name: str, label: str, before: str, after: str) -> TextChange | None:
    if before == after:
        return None
    return TextChange(field_name, label, before, after, text_segments(before, after))


def _path(content: Mapping[str, Any], path: str) -> str:
    value: Any = content
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return "" if value is None else str(value)


def _exits(raw: Any) -> list[tuple[str, str]]:
    # Order carries no meaning in the exit list: compare as a set.
    return sorted((str(e.get("kind", "")), str(e.get("tag") or "")) for e in raw or [])


def _same(name: str, old: CampaignVersion, new: CampaignVersion) -> bool:
    if name == "exit_conditions":
        return _exits(old.exit_conditions) == _exits(new.exit_conditions)
    a, b = getattr(old, name), getattr(new, name)
    if name == "reentry":
        return str(getattr(a, "value", a)) == str(getattr(b, "value", b))
    if name == "audience":
        return (a or "").strip() == (b or "").strip()
    return bool(a == b) or (not a and not b)


def step_diff(old: CampaignStep | None, new: CampaignStep | None) -> StepDiff:
    position = (new or old).position  # type: ignore[union-attr]
    if old is None:
        return StepDiff(position, "added", None, new)
    if new is None:
        return StepDiff(position, "removed", old, None)
    fields: list[str] = []
    if old.name != new.name:
        fields.append("name")
    if old.delivery != new.delivery:
        fields.append("delivery")
    if any(getattr(old, f) != getattr(new, f) for f in TIMING_FIELDS):
        fields.append("timing")
    before, after = dict(old.content or {}), dict(new.content or {})
    if before.get("kind") != after.get("kind"):
        fields.append("kind")
    texts = [
        change
        for path, label in CONTENT_FIELDS
        if (change := _text_change(path, label, _path(before, path), _path(after, path)))
    ]
    return StepDiff(position, "changed" if fields or texts else "same", old, new, fields, texts)


def diff_versions(
    base: CampaignVersion,
    base_steps: Sequence[CampaignStep],
    version: CampaignVersion,
    steps: Sequence[CampaignStep],
    *,
    base_role: Literal["running", "previous"],
) -> VersionDiff:
    """What ``version`` changes against ``base`` (pure: the rows are given)."""
    fields = [name for name in VERSION_FIELDS if not _same(name, base, version)]
    audience = _text_change("audience", "受众", base.audience or "", version.audience or "")
    old = {s.position: s for s in base_steps}
    new = {s.position: s for s in steps}
    return VersionDiff(
        base=base,
        base_role=base_role,
        fields=fields,
        audience=audience if "audience" in fields else None,
        steps=[step_diff(old.get(p), new.get(p)) for p in sorted(old.keys() | new.keys())],
    )


async def review_diff(campaign: Campaign, version: CampaignVersion) -> VersionDiff | None:
    """``version`` against the running version, or the one before it; None for a first."""
    if campaign.current_version and campaign.current_version != version.version:
        number, role = campaign.current_version, "running"
    elif version.version > 1:
        number, role = version.version - 1, "previous"
    else:
        return None
    base = await CampaignVersion.get_or_none(campaign_id=campaign.id, version=number)
    if base is None:
        return None
    base_steps = await CampaignStep.filter(version_id=base.id).order_by("position")
    steps = await CampaignStep.filter(version_id=version.id).order_by("position")
    return diff_versions(base, base_steps, version, steps, base_role=role)  # type: ignore[arg-type]
