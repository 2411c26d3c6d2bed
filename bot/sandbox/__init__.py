"""The WeCom sandbox: a fake WeCom API server (and, alongside, the traffic simulator).

Shipped in the package, not only in tests: ``siyu demo`` points the real client at it,
and the test suite uses the same server.  It speaks WeCom's real paths, JSON shapes and
error codes, and enforces the limits that shape siyu's design (token expiry, welcome
codes valid 20 s once, per-member app message limits, one mass send per customer a day,
per-API frequency limits), plus fault injection.
"""

from bot.sandbox.fake_api import (
    SandboxState,
    build_fake_wecom_app,
    start_fake_wecom,
)

__all__ = ["SandboxState", "build_fake_wecom_app", "start_fake_wecom"]
