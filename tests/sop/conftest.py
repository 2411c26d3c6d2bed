"""The console fixtures of tests/admin, for the campaign API and pages."""

from __future__ import annotations

from tests.admin.conftest import console, console_settings, fast_argon2

__all__ = ["console", "console_settings", "fast_argon2"]
