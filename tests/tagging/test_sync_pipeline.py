"""Corp-tag callbacks through the real edge: receiver → worker → tagging's on_event hook → job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.keys import HOOKS, WECOM_CLIENT
from tagging import service
from tagging.jobs import TagSyncJob
from tagging.models import CustomerTag, SyncRequest, TagSource

FIXTURES = Path(__file__).parent.parent / "fixtures" / "wecom"


def _fixture(name: str, **replace: str) -> str:
    text = (FIXTURES / name).read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


async def test_callbacks_reach_the_hook_and_the_job_pulls_what_they_name(edge: Any) -> None:
    assert "tagging.on_event" in edge.app[HOOKS].names["on_event"]
    state = edge.state
    userid = next(u for u, f in state.follows.items() if f)
    ext = next(iter(state.follows[userid]))
    contact_xml = _fixture(
        "event_change_external_contact_edit_external_contact.xml",
        zhangwei=userid,
        wmqPmRDQAAq7Wvr3yV0jsZQbLdBZBZbA=ext,
    )
    tag_xml = _fixture("event_change_external_tag_update.xml")
    for xml in (contact_xml, tag_xml, tag_xml):  # the repeat is deduplicated
        status, _ = await edge.post_callback(xml)
        assert status == 200
    await edge.process_all()
    kinds = sorted(r.kind for r in await SyncRequest.all())
    assert kinds == ["contact", "library"]

    job = TagSyncJob(client=edge.app[WECOM_CLIENT])
    assert await job.tick() > 0
    assert not await SyncRequest.filter(done_at=None).exists()
    groups = {g.name for g in await service.live_groups()}
    assert groups == {g.group_name for g in state.tag_groups.values()}
    rows = await CustomerTag.all().prefetch_related("tag")
    assert {r.tag.wecom_tag_id for r in rows} == set(state.follows[userid][ext].tags)
    assert {r.source for r in rows} == {TagSource.WECOM}
