"""The sop domain's record: what ``sop`` hands the composition root."""

from __future__ import annotations

from core.domain import Domain

DOMAIN = Domain(
    name="sop",
    model_modules=("sop.models",),
    migrations="sop.migrations",
)
