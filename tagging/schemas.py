"""Shapes passed between the API, the CLI and the flows, validated once at the edge."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: WeCom refuses a corp tag or group name longer than 30 characters (add_corp_tag /
#: edit_corp_tag "name": 标签名称长度限制为30个字符); local names keep to it, so any
#: tag can later be marked to sync without a rename.
NAME_MAX = 30
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


def check_name(value: str, *, what: str = "name") -> str:
    name = " ".join(value.split())
    if not name:
        raise ValueError(f"{what} must not be empty")
    if len(name) > NAME_MAX:
        raise ValueError(f"{what} must be at most {NAME_MAX} characters (WeCom's limit)")
    if any(ord(c) < 32 for c in name):
        raise ValueError(f"{what} must not contain control characters")
    return name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class GroupIn(_Strict):
    name: str
    order: int = Field(default=0, ge=0, le=2**31 - 1)
    colour: str = ""
    description: str = Field(default="", max_length=255)
    owner: str = Field(default="", max_length=64)
    sync_to_wecom: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)

    @field_validator("colour")
    @classmethod
    def _colour(cls, v: str) -> str:
        if v and not _COLOUR.match(v):
            raise ValueError("colour must be #RRGGBB")
        return v


class TagIn(GroupIn):
    group_id: int


class TagEdit(_Strict):
    name: str | None = None
    order: int | None = Field(default=None, ge=0, le=2**31 - 1)
    colour: str | None = None
    description: str | None = Field(default=None, max_length=255)
    owner: str | None = Field(default=None, max_length=64)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else check_name(v)

    @field_validator("colour")
    @classmethod
    def _colour(cls, v: str | None) -> str | None:
        if v and not _COLOUR.match(v):
            raise ValueError("colour must be #RRGGBB")
        return v

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class GroupEdit(TagEdit):
    # Marking a siyu group to sync pushes its tags; unmarking stops future pushes (what
    # WeCom already has stays there: deleting it is a separate, explicit act).
    sync_to_wecom: bool | None = None


class CustomerTagIn(_Strict):
    external_userid: str = Field(min_length=1, max_length=64)
    tag_id: int
    reason: str = Field(default="", max_length=200)


class AudienceIn(_Strict):
    name: str = Field(min_length=1, max_length=64)
    expr: str = Field(min_length=1, max_length=2000)
