"""The domain record: everything one domain hands the composition root.

A domain (``bot``, ``tagging``, ``sop``, ``admin``) exports one ``Domain`` from its
package; ``siyu.domains`` lists them in hook order and ``siyu.app`` /
``siyu.cli`` read nothing else.  So a new domain adds its own files and one line
at the root — it edits neither ``bot`` nor ``core``.

The record is deliberately plain data.  ``core`` knows no domain, so the hook
and outbox callables are typed loosely here; the domain that calls them (``bot``
for pipeline hooks and outbox checks) states their exact signatures and checks
the names it is given.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from aiohttp import web

from core.access import Principal
from core.db import Schema
from core.settings import Role, Settings

CleanupContext = Callable[[web.Application], AsyncIterator[None]]
"""One resource's lifetime (aiohttp ``cleanup_ctx``): set up, ``yield``, tear down."""

RouteSetup = Callable[[web.Application], None]
"""Adds a domain's routes (or console pages) to the application."""

HookPoint = Literal["on_message", "on_messages", "on_event", "after_commit"]
HOOK_POINTS: tuple[HookPoint, ...] = ("on_message", "on_messages", "on_event", "after_commit")


@dataclass(frozen=True)
class CliContext:
    """What a domain's CLI commands get from the root: settings built once, lazily.

    Lazily, because ``siyu --help`` and argument errors must work without a
    valid configuration; the first command that needs settings builds them.
    """

    settings_factory: Callable[[], Settings]
    # Every domain's models and migrations: commands open the database as serve does.
    schema: Schema
    _cache: dict[str, Settings] = field(default_factory=dict, repr=False, compare=False)

    @property
    def settings(self) -> Settings:
        if "s" not in self._cache:
            self._cache["s"] = self.settings_factory()
        return self._cache["s"]


CliRegister = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]", CliContext], None]
"""Adds a domain's ``siyu`` subcommands; each sets ``func(args) -> int``."""

HealthCheck = Callable[[web.Application], Awaitable[Mapping[str, str]]]
"""A domain's readiness checks for ``/readyz``: ``{name: "ok" or why not}``."""

JobTick = Callable[[], Awaitable[int | None]]
"""One run of a periodic job; returns how much work it did (more waiting → 0/None)."""


@dataclass(frozen=True)
class JobSpec:
    """A periodic job a domain runs in some roles (see ``core.jobs.PeriodicJob``).

    ``build`` makes the tick from the running application's resources, after every
    cleanup context is up; returning None means the job is off in this
    configuration (e.g. no WeCom secret, so no outbox dispatcher).
    """

    name: str
    roles: frozenset[Role]
    interval_s: Callable[[Settings], float]
    build: Callable[[web.Application], JobTick | None]
    jitter: float = 0.1
    # A tick that did work runs again at once (drain a backlog), else waits.
    rerun_when_busy: bool = True
    # Optional early wake-up (e.g. msgaudit_notify): awaits up to ``timeout`` seconds
    # and returns True when woken; built from the app like ``build``.
    wake: Callable[[web.Application], Callable[[float], Awaitable[bool]]] | None = None


CustomerExport = Callable[..., Awaitable[dict[str, Any]]]
"""``export(conn=, external_userid=) -> {table: rows}``: one customer's data (PIPL art. 45)."""

CustomerErase = Callable[..., Awaitable[int]]
"""``erase(conn=, external_userid=) -> rows changed``: erase or anonymise (PIPL art. 47)."""

AttributeUses = Callable[[frozenset[str]], Awaitable[list[str]]]
"""``uses(names) -> labels``: where a domain uses any of these customer attributes
(an SOP campaign's audience or date trigger), as labels an operator recognises; the
tagging domain refuses to retire a field while any domain lists a use."""

PanelRender = Callable[[web.Request, int, Principal], Awaitable[str | None]]
"""``render(request, customer_id, viewer) -> HTML fragment or None`` (None: nothing to show)."""

PanelSurface = Literal["console", "sidebar"]
"""Where a customer panel is drawn: the console's customer page, the advisor's chat sidebar."""


@dataclass(frozen=True)
class CustomerPanel:
    """A box a domain adds to the console's customer page (tags, SOP enrolments, …).

    The customer page (admin) has already decided that ``viewer`` may see customer
    ``customer_id`` (``bot_customer.id``) — an advisor only their own, a team lead
    their advisors' — before any panel renders, so a panel checks nothing about reach;
    it masks personal data as the viewer's role requires.  ``permission`` (a name in
    the permission table, or "" for anyone who may open the page) hides the panel
    from roles without it.  The fragment is inserted as is: escape what you render
    (a Jinja2 template with autoescape does).  Panels are drawn in ``order``, then
    ``key``; a panel that raises is shown as unavailable and logged, the page still
    renders.
    """

    # Unique across domains; namespaced by the owner ("tagging.tags").
    key: str
    title: str
    render: PanelRender
    order: int = 100
    permission: str = ""
    # The console's customer page, the WeCom chat sidebar (375 px wide, the advisor's
    # own customer; a button there with ``data-sb-compose="text"`` puts the text in the
    # sidebar's checked send box, one with ``data-sb-send='<sendChatMessage JSON>'``
    # sends as the reply library does), or both.
    surfaces: frozenset[PanelSurface] = frozenset({"console", "sidebar"})


DashboardData = Callable[[int, datetime], Awaitable[Mapping[str, Any]]]
"""``data(days, now) -> {"x": [...], "series": [{"name", "data": [...]}, ...]}``.

``days`` is the window the viewer chose (7, 30 or 90 Beijing days up to ``now``); an
optional ``"x_label"`` names the first column of the chart's CSV.
"""


@dataclass(frozen=True)
class DashboardChart:
    """A chart a domain adds to the console's dashboard (``/dashboard``), with its CSV.

    The dashboard is institution-wide (``dashboard:read``); ``permission`` (or "")
    further limits who sees the chart and may download it.  ``kind`` is how
    ``dashboard.js`` draws the block: ``line``, ``stack`` (bars stacked per day),
    ``bar`` (one bar per x) or ``funnel`` (one funnel per series, the x its stages).
    ``data`` must answer from rollups or indexed grouped queries — the page draws
    every chart on each visit.
    """

    # Unique across domains; namespaced by the owner ("sop.funnel").
    key: str
    title: str
    kind: Literal["line", "stack", "bar", "funnel"]
    hint: str
    data: DashboardData
    order: int = 100
    permission: str = ""


@dataclass(frozen=True)
class Domain:
    name: str
    # Modules holding this domain's Tortoise models (one owner per table).
    model_modules: tuple[str, ...] = ()
    # Package whose files are ``NNNN_name.{sqlite,postgres}.sql``; applied by
    # ``core.db.migrate`` keyed by (domain name, version).
    migrations: str | None = None
    # Refuses to start a role whose settings are missing (names the variable).
    check_settings: Callable[[Settings, frozenset[Role]], None] | None = None
    # Resources per role, in order; the root appends them after core's own.  A
    # context listed for several roles is set up once in a process running them.
    contexts: Mapping[Role, Sequence[CleanupContext]] = field(default_factory=dict)
    # HTTP routes per role (the receiver's callback, the admin role's API).
    routes: Mapping[Role, Sequence[RouteSetup]] = field(default_factory=dict)
    # Console pages; mounted by the admin domain inside its authenticated shell.
    pages: Sequence[RouteSetup] = ()
    jobs: Sequence[JobSpec] = ()
    cli: CliRegister | None = None
    # At most one hook per point; the order across domains is the root's list.
    hooks: Mapping[HookPoint, Callable[..., Awaitable[None]]] = field(default_factory=dict)
    # Outbox rows whose ``origin`` starts with one of these prefixes: a re-check at
    # send time (returns a reason to cancel, or None) and a callback once settled.
    # (A check may also answer bot.outbox.SendAs: send, with a body made just now.)
    outbox_checks: Mapping[str, Callable[..., Awaitable[object]]] = field(default_factory=dict)
    outbox_settled: Mapping[str, Callable[..., Awaitable[None]]] = field(default_factory=dict)
    # Refreshes this domain's gauges (queue depth, outbox rows) before /metrics renders.
    gauges: Callable[[web.Application], Awaitable[None]] | None = None
    # This domain's own readiness checks, merged into /readyz: {name: "ok" or why not}
    # (e.g. the edge's analyzer pool); anything but "ok" makes the process not ready.
    health: HealthCheck | None = None
    export_customer: CustomerExport | None = None
    erase_customer: CustomerErase | None = None
    # Boxes on the console's customer page (drawn by admin; see ``CustomerPanel``).
    customer_panels: Sequence[CustomerPanel] = ()
    # Charts on the console's dashboard, after its own (see ``DashboardChart``).
    dashboard_charts: Sequence[DashboardChart] = ()
    # Where this domain uses customer attributes (see ``AttributeUses``).
    attribute_uses: AttributeUses | None = None

    def __post_init__(self) -> None:
        unknown = set(self.hooks) - set(HOOK_POINTS)
        if unknown:
            raise ValueError(f"domain {self.name!r}: unknown hook points {sorted(unknown)}")
        for prefix in (*self.outbox_checks, *self.outbox_settled):
            if not prefix.startswith(f"{self.name}.") and prefix != self.name:
                # Origins are namespaced by their owner, so two domains never
                # answer for each other's rows.
                raise ValueError(
                    f"domain {self.name!r}: outbox origin prefix {prefix!r} "
                    f"must start with {self.name + '.'!r}"
                )
        for panel in self.customer_panels:
            if not panel.key.startswith(f"{self.name}."):
                raise ValueError(
                    f"domain {self.name!r}: customer panel key {panel.key!r} "
                    f"must start with {self.name + '.'!r}"
                )
        for chart in self.dashboard_charts:
            if not chart.key.startswith(f"{self.name}."):
                raise ValueError(
                    f"domain {self.name!r}: dashboard chart key {chart.key!r} "
                    f"must start with {self.name + '.'!r}"
                )


def check_unique(domains: Sequence[Domain]) -> None:
    """Names, model modules and migration packages each belong to one domain."""
    seen: dict[str, str] = {}
    for d in domains:
        keys = [
            f"name:{d.name}",
            *(f"models:{m}" for m in d.model_modules),
            *(f"customer panel:{p.key}" for p in d.customer_panels),
            *(f"dashboard chart:{c.key}" for c in d.dashboard_charts),
        ]
        if d.migrations:
            keys.append(f"migrations:{d.migrations}")
        for key in keys:
            if key in seen:
                what = key.split(":", 1)[1]
                raise ValueError(f"{what!r} claimed by {seen[key]!r} and {d.name!r}")
            seen[key] = d.name
