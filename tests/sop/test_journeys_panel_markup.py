"""The customer page's SOP box, written out in Python (sop.panels.journeys_html),
draws what its template draws: the same journeys and touches, every value escaped."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import jinja2

from admin.fragments import cst
from sop import panels
from sop.pages import sop_static_url

AT = datetime(2026, 12, 1, 1, 2, 3, tzinfo=UTC)


def _template(**context: Any) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("sop").joinpath("templates"))),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["cst"] = cst
    return env.get_template("sop_panel_journeys.html").render(sop_static=sop_static_url, **context)


BLOCK = re.compile(
    r"\s*(</?(?:div|table|thead|tbody|tr|td|th|ol|li|p|details|summary|link)\b[^>]*>)\s*"
)


def _same(html: str) -> str:
    # Whitespace beside a block's tag is the template's indentation, not content;
    # between inline elements it is a space, and compared as one.
    return BLOCK.sub(r"\1", re.sub(r"\s+", " ", html)).strip()


def _touch(i: int, **kw: Any) -> panels.TouchLine:
    base: dict[str, Any] = {
        "id": i,
        "position": i,
        "step_name": "",
        "delivery": "",
        "due_at": AT,
        "state": "planned",
        "state_label": "已计划",
        "tone": "",
        "reason": "",
    }
    return panels.TouchLine(**{**base, **kw})


def _journey(i: int, **kw: Any) -> panels.JourneyLine:
    base: dict[str, Any] = {
        "id": i,
        "campaign_id": 3,
        "campaign": "到期提醒",
        "version": 2,
        "state": "active",
        "state_label": "进行中",
        "tone": "info",
        "entered_at": AT,
        "advisor": "王经理",
        "exit_reason": "",
        "exited_at": None,
        "goal_reached_at": None,
        "touches": [],
    }
    return panels.JourneyLine(**{**base, **kw})


def test_journeys_touches_and_escaping_are_the_templates() -> None:
    journeys = [
        _journey(
            1,
            campaign='<b>"活动"&</b>',
            advisor="<i>周</i>",
            goal_reached_at=AT,
            touches=[
                _touch(1, step_name="到期<前>", delivery="群发", tone="ok", state_label="已发送"),
                _touch(2, state="skipped", tone="warn", reason="客户<退订>"),
            ],
        ),
        _journey(2, state="exited", exit_reason="回复<退订>", exited_at=AT, tone=""),
        _journey(3, exit_reason="目标达成", exited_at=None),
    ]
    for url in (lambda cid: f"/campaigns/{cid}?x=1&y=2", None):
        for more in (0, 4):
            context = {"journeys": journeys, "more": more, "campaign_url": url}
            mine = panels.journeys_html(**context, cst=cst)
            assert _same(mine) == _same(_template(**context)), (url, more)
            assert "<b>" not in mine and "&lt;i&gt;周&lt;/i&gt;" in mine
    empty = {"journeys": [], "more": 0, "campaign_url": None}
    mine = panels.journeys_html(**empty, cst=cst)
    assert _same(mine) == _same(_template(**empty)) and "未参加 SOP 旅程" in mine
