"""Who may call a route: the marker a route carries where it is defined, and the hook that
enforces every marker in one place.

Each domain declares, beside its handler, what the handler needs (Netflix Dispatch's
habit): ``@requires("archive:write")``, ``@signed_in`` or ``@public``.  ``core`` knows
neither roles nor API keys — a permission is only a name here.  The table that grants
names to roles and the guard that checks them belong to the admin domain
(``admin/permissions.json``, ``admin/auth.py``); the guard reaches every request
through ``ACCESS_GUARD``, which ``core.appkit.api_auth`` defers to when it is set.  So
no domain imports ``admin`` to be protected by it.

Console pages may also declare a sidebar entry (``@menu``) where they are defined,
so a domain's page appears in the shell's navigation without the shell knowing it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Callable[..., Awaitable[web.StreamResponse]])

_ACCESS_ATTR = "__siyu_access__"
_MENU_ATTR = "__siyu_menu__"


@dataclass(frozen=True)
class Access:
    """What a route needs.

    ``public``: nobody needs to sign in (the sign-in page itself).  ``signed_in``
    with no permission: any signed-in operator (their own account pages).  Otherwise
    the named permission, granted by the guard's table to roles and API-key scopes.
    """

    kind: Literal["public", "signed_in", "permission"]
    permission: str = ""


PUBLIC = Access("public")
SIGNED_IN = Access("signed_in")


def requires(permission: str) -> Callable[[H], H]:
    """Mark a handler as needing ``permission`` (a name in the guard's table)."""
    if not permission:
        raise ValueError("a permission needs a name")

    def mark(handler: H) -> H:
        setattr(handler, _ACCESS_ATTR, Access("permission", permission))
        return handler

    return mark


def public(handler: H) -> H:
    setattr(handler, _ACCESS_ATTR, PUBLIC)
    return handler


def signed_in(handler: H) -> H:
    setattr(handler, _ACCESS_ATTR, SIGNED_IN)
    return handler


def access_of(handler: object) -> Access | None:
    """The declared access of a handler, or None when it declares nothing."""
    found = getattr(handler, _ACCESS_ATTR, None)
    return found if isinstance(found, Access) else None


@dataclass(frozen=True)
class MenuEntry:
    """A console page's entry in the sidebar: its label, its group, its place."""

    label: str
    group: str = ""
    order: int = 100


def menu(label: str, *, group: str = "", order: int = 100) -> Callable[[H], H]:
    def mark(handler: H) -> H:
        setattr(handler, _MENU_ATTR, MenuEntry(label=label, group=group, order=order))
        return handler

    return mark


def menu_of(handler: object) -> MenuEntry | None:
    found = getattr(handler, _MENU_ATTR, None)
    return found if isinstance(found, MenuEntry) else None


@dataclass(frozen=True)
class Principal:
    """Who is calling: a signed-in operator or a system holding an API key.

    Handlers read it (``principal_of``) to record who did something — e.g. which key
    sent an ingested batch — without knowing how the caller was authenticated.
    """

    kind: Literal["operator", "api_key"]
    id: str
    name: str
    # The operator's role; empty for API keys.
    role: str
    permissions: frozenset[str]

    @property
    def ref(self) -> str:
        """``operator:12`` / ``api_key:ab12cd34``: how the audit log names the caller."""
        return f"{self.kind}:{self.id}"


PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("siyu_principal", Principal)

Guard = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
"""A middleware body: authenticates, checks the route's ``Access``, calls ``handler``."""

ACCESS_GUARD: web.AppKey[Guard] = web.AppKey("access_guard")


def principal_of(request: web.Request) -> Principal | None:
    return request.get(PRINCIPAL)


PageContext = Callable[[web.Request], dict[str, Any]]
"""What every console template needs from the shell: the signed-in operator, the
sidebar, the CSRF token, the permission table (``admin.render.shell_context``)."""

PAGE_CONTEXT: web.AppKey[PageContext] = web.AppKey("page_context")
"""Set by the console shell; a domain's page renders its template with it, so the
page sits in the shell's layout without the domain importing the shell."""

Reach = Callable[[web.Request], Awaitable[frozenset[str] | None]]
"""The advisors (WeCom userids) whose customers the caller may see; None = everyone's."""

REACH: web.AppKey[Reach] = web.AppKey("reach")
"""Set by the console shell (one rule for every page: an advisor their own customers,
a team lead their advisors'); a domain's page that lists customers filters by it."""

ActorNames = Callable[[Iterable[str]], Awaitable[dict[str, str]]]
"""Names to show for the refs a domain recorded (``operator:12`` → the operator's
display name, ``api_key:ab12cd34`` → the key's name), looked up in one query per kind;
refs it does not know are left out (the caller shows them as they are)."""

ACTOR_NAMES: web.AppKey[ActorNames] = web.AppKey("actor_names")
"""Set by the console shell, which owns operators and API keys: a domain's page shows
who did something by name without importing the shell."""
