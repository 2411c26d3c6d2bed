"""The admin domain's API routes (``/api/v1``): parse → one flow → JSON.

Every route declares what it needs (``core.access``); ``admin.auth`` enforces it.
"""

from __future__ import annotations

from aiohttp import web

from core.access import principal_of, signed_in


@signed_in
async def whoami(request: web.Request) -> web.Response:
    """``GET /api/v1/me``: who the caller is and what it may do — an integrator's first call."""
    principal = principal_of(request)
    assert principal is not None  # the guard set it
    return web.json_response(
        {
            "kind": principal.kind,
            "id": principal.id,
            "name": principal.name,
            "role": principal.role or None,
            "permissions": sorted(principal.permissions),
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/me", whoami, name="api_me")
