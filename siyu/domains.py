"""The domains siyu runs, in order.

The order is the order of everything the root composes: migrations (a domain's
tables may reference only the tables of domains above it), resources of a role,
routes, jobs, CLI groups and — what matters most — the pipeline hooks: inside
the storing transaction, each domain's ``on_message``/``on_event`` runs after
the ones listed before it and sees what they wrote.

A new domain is one line here (and its package); it edits neither ``bot`` nor
``core``.  Where the coming ones sit, and why:

- ``tagging`` after ``bot``: its auto-tag hooks read the stored message.
- ``sop`` after ``tagging``: a trigger or exit condition may read a tag this
  very message just applied; touches go out through ``bot.outbox``.
- ``admin`` last: it mounts everyone's routes and pages and hooks nothing.
"""

from __future__ import annotations

import admin
import bot
import sop
import tagging
from core import plugin as core_plugin
from core.domain import Domain, check_unique

DOMAINS: tuple[Domain, ...] = (
    # Core's audit log first: every domain's use cases append to it in their own
    # transactions, so its tables exist before any domain's.
    core_plugin.DOMAIN,
    # The edge owns customers, advisors, messages, events and the outbox: the base.
    bot.DOMAIN,
    # Tags after the edge: its hooks read the stored event and write outbox rows.
    tagging.DOMAIN,
    # Campaigns after tags: triggers and exits read the tags this message applied.
    sop.DOMAIN,
    # The console and API shell last: it mounts and guards everyone's routes.
    admin.DOMAIN,
)

check_unique(DOMAINS)
