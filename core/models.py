"""Tables core owns: the audit log and its chain head.

Only ``core.audit`` reads or writes them.  The log is append-only: rows are inserted
and read, never updated or deleted (on PostgreSQL the application's role is not
granted UPDATE or DELETE on it — see docs/audit.md).  So it has ``at`` and no
``updated_at``: a row that never changes has nothing to time.
"""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class AuditEntry(Model):
    id = fields.BigIntField(primary_key=True)
    # Position in the chain: 1, 2, 3 … with no gap; a gap is a deleted entry.
    seq = fields.BigIntField(unique=True)
    at = fields.DatetimeField()
    # operator | api_key | system
    actor_kind = fields.CharField(max_length=16)
    actor_id = fields.CharField(max_length=64)
    actor_name = fields.CharField(max_length=128, default="")
    action = fields.CharField(max_length=64, db_index=True)
    target = fields.CharField(max_length=128, default="")
    result = fields.CharField(max_length=32, default="ok")
    source = fields.CharField(max_length=64, default="")
    # Canonical JSON text (sorted keys), hashed exactly as stored: ids and reasons,
    # never a message body or a personal number.
    detail = fields.TextField(default="{}")
    prev_hash = fields.CharField(max_length=64)
    hash = fields.CharField(max_length=64, unique=True)

    class Meta:
        table = "core_audit_log"


class AuditHead(Model):
    """One row: the newest entry's position and hash.

    Appenders update it first, so its row lock (PostgreSQL) or the write lock taken
    by ``BEGIN IMMEDIATE`` (SQLite) puts concurrent appends into one order.
    """

    id = fields.IntField(primary_key=True)
    seq = fields.BigIntField(default=0)
    hash = fields.CharField(max_length=64)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "core_audit_head"
