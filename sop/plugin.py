"""The sop domain's record: what ``sop`` hands the composition root."""

from __future__ import annotations

from core.domain import Domain
from sop import views

DOMAIN = Domain(
    name="sop",
    model_modules=("sop.models",),
    migrations="sop.migrations",
    # The campaign API (/api/v1/campaigns), mounted by admin behind its guard.
    routes={"admin": (views.add_routes,)},
)
