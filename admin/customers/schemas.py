"""Pydantic shapes of ``/api/v1/customers``: what the list and one customer answer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class CustomersQuery(BaseModel):
    """The list's query string."""

    q: str = Field(
        default="",
        max_length=64,
        description="姓名或备注的一部分，或完整手机号（按密钥化索引精确匹配）",
    )
    page: int = Field(default=1, ge=1, le=100_000)
    per_page: int = Field(default=50, ge=1, le=100)


class CustomerAdvisorOut(BaseModel):
    userid: str
    name: str
    status: str = Field(description="active | lost | removed")
    remark: str = Field(description="备注，个人号码已脱敏")
    added_at: datetime | None


class CustomerOut(BaseModel):
    id: int
    external_userid: str
    name: str
    corp_name: str
    phones: list[str] = Field(description="脱敏后的手机号（138****5678）")
    advisors: list[CustomerAdvisorOut]
    last_message_at: datetime | None
    created_at: datetime


class CustomerListOut(BaseModel):
    items: list[CustomerOut]
    total: int
    page: int
    per_page: int


class FindingOut(BaseModel):
    category: str
    severity: str


class TimelineMessageOut(BaseModel):
    id: int
    msgtime: datetime
    sender_role: str = Field(description="advisor | customer | other")
    sender: str
    text: str = Field(description="已脱敏的文字")
    msgtype: str
    in_group: bool
    intent: str | None
    findings: list[FindingOut]
    case_id: int | None


class AlertOut(BaseModel):
    kind: str
    advisor_userid: str
    created_at: datetime
    status: str


class CustomerDetailOut(CustomerOut):
    gender: str
    attributes: dict[str, Any] = Field(description="机构导入的属性（名称 → 显示值）")
    alerts: list[AlertOut]
    messages: list[TimelineMessageOut] = Field(description="最近的消息，从早到晚")
