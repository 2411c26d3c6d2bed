"""Where campaigns use customer attributes: what the tagging domain asks before it
retires a custom field (``core.domain.AttributeUses``).

A campaign that is not archived uses an attribute when a version that runs or may
run (active, approved, waiting for approval, or a draft being edited) names it in
its audience expression or triggers on it as a date.  Retiring the field under it
would make the audience refuse to compile and the trigger match nobody.
"""

from __future__ import annotations

from sop.models import Campaign, CampaignStatus, CampaignVersion, VersionStatus
from tagging import audience as tagging_audience

_LIVE_VERSIONS = (
    VersionStatus.DRAFT,
    VersionStatus.PENDING_APPROVAL,
    VersionStatus.APPROVED,
    VersionStatus.ACTIVE,
)


def _names_in(expr: str | None) -> set[str]:
    if not expr:
        return set()
    try:
        return set(tagging_audience.attribute_names(tagging_audience.parse(expr)))
    except tagging_audience.ExpressionError:
        return set()


async def attribute_uses(names: frozenset[str]) -> list[str]:
    """``SOP 活动「…」（#id）`` for each campaign using any of ``names``."""
    versions = (
        await CampaignVersion.filter(status__in=_LIVE_VERSIONS)
        .exclude(campaign__status=CampaignStatus.ARCHIVED)
        .order_by("campaign_id", "version")
        .values_list("campaign_id", "audience", "trigger")
    )
    using: list[int] = []
    for campaign_id, expr, trigger in versions:
        if campaign_id in using:
            continue
        dated = (
            isinstance(trigger, dict)
            and trigger.get("kind") == "attribute_date"
            and trigger.get("attribute") in names
        )
        if dated or names & _names_in(expr):
            using.append(int(campaign_id))
    if not using:
        return []
    titles = dict(await Campaign.filter(id__in=using).values_list("id", "name"))
    return [f"SOP 活动「{titles.get(i, '')}」（#{i}）" for i in using]
