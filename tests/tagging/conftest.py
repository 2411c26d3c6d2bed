"""The console fixtures (a running admin app, fast password hashing) for tagging's pages."""

from tests.admin.conftest import console, console_settings, fast_argon2

__all__ = ["console", "console_settings", "fast_argon2"]
