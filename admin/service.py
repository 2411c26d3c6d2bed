"""The only code that queries the admin domain's tables (operators, API keys).

Keyword-only and typed; writes take the caller's transaction (``conn``) so a flow can
put the change and its audit entry in one commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import F

from admin import rows
from admin.models import ApiKey, Operator
from bot import service as bot_service

# ------------------------------------------------------------------ operators


async def operator_by_name(*, name: str) -> Operator | None:
    return await Operator.filter(name=name).first()


async def operator_by_id(*, operator_id: int) -> Operator | None:
    """Every console request's second read (after its session): written out, a
    fifth of the ORM's cost on SQLite (admin.rows)."""
    found = await rows.fetch(
        f'SELECT {rows.columns(Operator, "o")} FROM "admin_operator" "o" WHERE "o"."id" = ?',  # noqa: S608 - model columns only
        [operator_id],
    )
    return rows.hydrate_all(Operator, found)[0] if found else None


async def operators_with_role(*, role: str, status: str) -> list[Operator]:
    """The operators of one role and status, ordered as ``operators()``."""
    found = await rows.fetch(
        f'SELECT {rows.columns(Operator, "o")} FROM "admin_operator" "o" '  # noqa: S608 - model columns only
        'WHERE "o"."role" = ? AND "o"."status" = ? ORDER BY "o"."name"',
        [role, status],
    )
    return rows.hydrate_all(Operator, found)


async def operators_by_wecom_userid(*, userid: str) -> list[Operator]:
    """The accounts linked to a WeCom member (the sidebar signs in by that id)."""
    return list(await Operator.filter(wecom_userid=userid).order_by("id"))


async def operators() -> list[Operator]:
    return await Operator.all().order_by("status", "role", "name")


async def insert_operator(
    *,
    conn: BaseDBAsyncClient,
    name: str,
    display_name: str,
    role: str,
    password_hash: str,
    must_change_password: bool,
) -> Operator:
    return await Operator.create(
        using_db=conn,
        name=name,
        display_name=display_name,
        role=role,
        password_hash=password_hash,
        must_change_password=must_change_password,
    )


async def update_operator(*, conn: BaseDBAsyncClient, operator_id: int, **values: Any) -> int:
    return await Operator.filter(id=operator_id).using_db(conn).update(**values)


async def end_operator_sessions(*, conn: BaseDBAsyncClient, operator_id: int, **values: Any) -> int:
    """Change the operator and end every session they have (bumps ``session_epoch``)."""
    return (
        await Operator.filter(id=operator_id)
        .using_db(conn)
        .update(session_epoch=F("session_epoch") + 1, **values)
    )


async def record_sign_in(*, conn: BaseDBAsyncClient, operator_id: int, at: datetime) -> None:
    await Operator.filter(id=operator_id).using_db(conn).update(last_login_at=at)


async def count_active_admins() -> int:
    return await Operator.filter(role="admin", status="active").count()


# ------------------------------------------------------------------ API keys


async def api_key_by_key_id(*, key_id: str) -> ApiKey | None:
    return await ApiKey.filter(key_id=key_id).first()


async def api_key_by_id(*, api_key_id: int) -> ApiKey | None:
    return await ApiKey.filter(id=api_key_id).first()


async def api_keys() -> list[ApiKey]:
    # Live keys first, newest first: the list an administrator acts on.
    keys = await ApiKey.all().order_by("-id")
    return sorted(keys, key=lambda k: k.revoked_at is not None)


async def active_key_named(*, name: str) -> ApiKey | None:
    return await ApiKey.filter(name=name, revoked_at__isnull=True).first()


async def insert_api_key(
    *,
    conn: BaseDBAsyncClient,
    name: str,
    key_id: str,
    secret_hash: str,
    scopes: list[str],
    allowed_ips: list[str],
    expires_at: datetime | None,
    created_by: str,
) -> ApiKey:
    return await ApiKey.create(
        using_db=conn,
        name=name,
        key_id=key_id,
        secret_hash=secret_hash,
        scopes=scopes,
        allowed_ips=allowed_ips,
        expires_at=expires_at,
        created_by=created_by,
    )


async def revoke_api_key(
    *, conn: BaseDBAsyncClient, api_key_id: int, by: str, at: datetime
) -> bool:
    """True when this call revoked it (a key already revoked stays as it was)."""
    n = (
        await ApiKey.filter(id=api_key_id, revoked_at__isnull=True)
        .using_db(conn)
        .update(revoked_at=at, revoked_by=by)
    )
    return bool(n)


async def touch_api_key(
    *, conn: BaseDBAsyncClient, api_key_id: int, at: datetime, address: str
) -> None:
    await (
        ApiKey.filter(id=api_key_id)
        .using_db(conn)
        .update(last_used_at=at, last_used_from=address[:64])
    )


# ------------------------------------------------------------------ the home page


async def console_counts() -> dict[str, int]:
    """What the system holds today, for the home page (the edge's own counts)."""
    return await bot_service.console_counts()


async def actor_names(refs: Iterable[str]) -> dict[str, str]:
    """Display names of ``operator:<id>`` and ``api_key:<key id>`` refs: one query per
    kind, however many refs (a page lists many rows by few people)."""
    operators: set[int] = set()
    keys: set[str] = set()
    for ref in refs:
        kind, _, ident = ref.partition(":")
        if kind == "operator" and ident.isdigit():
            operators.add(int(ident))
        elif kind == "api_key" and ident:
            keys.add(ident)
    out: dict[str, str] = {}
    if operators:
        rows = await Operator.filter(id__in=sorted(operators)).values_list(
            "id", "display_name", "name"
        )
        out.update({f"operator:{i}": str(shown or name) for i, shown, name in rows})
    if keys:
        found = await ApiKey.filter(key_id__in=sorted(keys)).values_list("key_id", "name")
        out.update({f"api_key:{k}": str(name) for k, name in found})
    return out
