"""The customer page's tag box, written out in Python (tagging.pages.tags_panel_html),
draws what its template draws: the same rows in the same order, every value escaped."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from importlib import resources
from types import SimpleNamespace
from typing import Any

import jinja2

from admin.fragments import cst
from tagging import pages

AT = datetime(2026, 12, 1, 1, 2, 3, tzinfo=UTC)


def _template(**context: Any) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("tagging").joinpath("templates"))),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["cst"] = cst
    return env.get_template("tagging_panel_tags.html").render(**pages._globals(), **context)


BLOCK = re.compile(
    r"\s*(</?(?:div|table|thead|tbody|tr|td|th|ol|li|p|details|summary|link)\b[^>]*>)\s*"
)


def _same(html: str) -> str:
    # Whitespace beside a block's tag is the template's indentation, not content;
    # between inline elements it is a space, and compared as one.
    return BLOCK.sub(r"\1", re.sub(r"\s+", " ", html)).strip()


def _tag(i: int, name: str, colour: str, deleted: datetime | None = None) -> Any:
    return SimpleNamespace(id=i, name=name, colour=colour, deleted_at=deleted)


def test_rows_history_and_escaping_are_the_templates() -> None:
    odd = _tag(7, '高<净>值"&', 'red" onload="x')
    plain = _tag(8, "养老客群", "#1f5fbf", deleted=AT)
    current = [
        {
            "tag": odd,
            "source": "manual",
            "applied_by": "用户 <#1>",
            "applied_at": AT,
            "expires_at": AT,
            "reason": "<script>alert(1)</script>",
        },
        {
            "tag": plain,
            "source": "made-up",
            "applied_by": "规则「养老」",
            "applied_at": AT,
            "expires_at": None,
            "reason": "",
        },
    ]
    history = [
        {
            "tag": odd,
            "tag_id": 7,
            "action": "add",
            "source": "rule",
            "actor": "a&b",
            "reason": "依据<消息>",
            "at": AT,
        },
        {
            "tag": plain,
            "tag_id": 8,
            "action": "remove",
            "source": "wecom",
            "actor": "企业微信",
            "reason": "",
            "at": AT,
        },
        {
            "tag": None,
            "tag_id": 99,
            "action": "remove",
            "source": "import",
            "actor": "导入",
            "reason": None,
            "at": AT,
        },
    ]
    for can_read in (True, False):
        context = {
            "current": current,
            "history": history,
            "tag_url": lambda i: f"/tags/{i}?a=1&b=2",
            "can_read_tags": can_read,
        }
        mine = pages.tags_panel_html(**context, cst=cst)
        assert _same(mine) == _same(_template(**context)), can_read
        assert "<script>" not in mine and "&lt;script&gt;" in mine
        assert 'fill="#c3cad6"' in mine  # an invalid colour never reaches the attribute
    empty = {"current": [], "history": [], "tag_url": str, "can_read_tags": True}
    mine = pages.tags_panel_html(**empty, cst=cst)
    assert _same(mine) == _same(_template(**empty))
    assert "暂无标签" in mine and "customer-tags-history" not in mine
