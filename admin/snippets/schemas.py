"""Pydantic shapes of the reply library's API (what the sidebar reads)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class LinkOut(BaseModel):
    title: str
    url: str
    desc: str
    picurl: str


class MiniprogramOut(BaseModel):
    appid: str
    title: str
    page: str
    picurl: str | None = Field(
        default=None,
        description="the cover at a URL siyu serves while the snippet is approved "
        "(sendChatMessage's imgUrl)",
    )
    pic_media_id: str | None = Field(description="the cover as WeCom temporary media")


class SnippetOut(BaseModel):
    id: int
    title: str
    topic: str
    segment: str = Field(description="bank, securities, insurance, consumer_finance; '' for all")
    kind: Literal["text", "image", "link", "miniprogram"]
    text: str = Field(description="the message (text) or a caption sent along (others)")
    media_id: str | None = Field(
        default=None,
        description="image: WeCom temporary media id, valid at least 12 more hours",
    )
    media_error: str | None = Field(
        default=None, description="why no media id could be given (WeCom unreachable …)"
    )
    link: LinkOut | None = None
    miniprogram: MiniprogramOut | None = None
    use_count: int


class SnippetsOut(BaseModel):
    """Approved snippets only, most used first."""

    items: list[SnippetOut]
