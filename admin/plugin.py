"""The admin domain's record: what ``admin`` hands the composition root."""

from __future__ import annotations

from admin import app as admin_app
from admin.cli import register as register_cli
from core.domain import Domain

DOMAIN = Domain(
    name="admin",
    model_modules=("admin.models",),
    migrations="admin.migrations",
    contexts={"admin": (admin_app.console_ctx,)},
    # Last in the root's list, so every other domain's routes exist when the guard
    # is installed and the sidebar is read from the router.
    routes={"admin": (admin_app.add_console_routes,)},
    cli=register_cli,
)
