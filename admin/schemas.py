"""Pydantic shapes of the admin domain's API answers (and the one error body)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class WhoAmIOut(BaseModel):
    kind: Literal["operator", "api_key"]
    id: str
    name: str
    role: str | None = Field(description="the operator's role; null for an API key")
    permissions: list[str]


class ErrorDetail(BaseModel):
    code: str = Field(description="bad_request, unauthorized, forbidden, not_found, invalid, …")
    message: str
    field: str | None = Field(default=None, description="the field at fault, when one is")


class ErrorOut(BaseModel):
    """Every refusal of /api/v1: the status says what kind, ``field`` says where."""

    error: ErrorDetail
