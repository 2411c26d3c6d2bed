"""Pydantic shapes of the lexicon's API answers."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class LexiconVersionOut(BaseModel):
    number: int
    published_at: str = Field(description="ISO 8601, UTC")
    published_by: str
    reason: str
    rollback_of: int | None = None
    base_version: str = Field(description="the shipped rules it was published over")
    findings_added: int | None = Field(default=None, description="its dry run; null: none")
    findings_removed: int | None = None


class LexiconOut(BaseModel):
    """The overlay in force: what every analyzer applies over the shipped rules."""

    version: LexiconVersionOut | None = Field(description="null: nothing published yet")
    base_version: str = Field(description="the shipped rules this process runs")
    overlay: dict[str, Any] = Field(
        description="compliance_nlp.overlay's document: segments, bases, terms, exceptions, "
        "suggestions"
    )
    pending_changes: int = Field(description="entries of the draft not yet published")


class LexiconVersionsOut(BaseModel):
    items: list[LexiconVersionOut]
    total: int
