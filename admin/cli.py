"""The admin domain's ``siyu`` commands: ``users`` and ``api-keys``.

``siyu users create --role admin --name NAME`` bootstraps the first administrator.
Passwords are read from a prompt (twice) or from standard input — never from argv,
where ``ps`` and shell history would keep them.  Every command is audited with the
system actor ``cli`` and the operating-system user who ran it.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from admin import flows
from admin.permissions import ROLES, load_table
from core.audit import Actor
from core.cli import Subparsers
from core.domain import CliContext

T = TypeVar("T")


def _cli_actor() -> Actor:
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    return Actor("system", "cli", f"cli:{who}")


def _run_db(ctx: CliContext, work: Callable[[], Awaitable[T]]) -> T:
    from core import db as core_db

    async def run() -> T:
        async with core_db.db_lifespan(ctx.settings, ctx.schema):
            return await work()

    return asyncio.run(run())


def read_password(*, from_stdin: bool) -> str:
    """One line from stdin (scripts), or a prompt asked twice (a person at a terminal)."""
    if from_stdin or not sys.stdin.isatty():
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    first = getpass.getpass("新密码 / new password: ")
    second = getpass.getpass("再输入一次 / again: ")
    if first != second:
        raise flows.FieldError("password", "两次输入的密码不一致 / the passwords differ")
    return first


def _fail(message: str, code: int = 2) -> int:
    print(f"siyu: {message}", file=sys.stderr)
    return code


# ------------------------------------------------------------------ users


def cmd_users_create(args: argparse.Namespace, ctx: CliContext) -> int:
    try:
        flows.check_operator_name(args.name)
        password = read_password(from_stdin=args.password_stdin)
        flows.check_new_password(password, name=args.name)
    except flows.FieldError as exc:
        return _fail(f"{exc.field}: {exc.message}")

    async def work() -> Any:
        return await flows.do_create_operator(
            actor=_cli_actor(),
            source="cli",
            name=args.name,
            role=args.role,
            password=password,
            display_name=args.display_name or "",
        )

    try:
        op = _run_db(ctx, work)
    except flows.FieldError as exc:
        return _fail(f"{exc.field}: {exc.message}")
    print(json.dumps({"created": op.name, "id": op.id, "role": op.role}, ensure_ascii=False))
    return 0


def cmd_users_list(args: argparse.Namespace, ctx: CliContext) -> int:
    from admin import service as admin_service

    ops = _run_db(ctx, admin_service.operators)
    rows = [
        {
            "id": op.id,
            "name": op.name,
            "display_name": op.display_name,
            "role": op.role,
            "status": op.status,
            "totp": op.totp_sealed is not None,
            "last_login_at": op.last_login_at.isoformat() if op.last_login_at else None,
        }
        for op in ops
    ]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    print(f"{'id':>4}  {'name':<20} {'role':<11} {'status':<9} totp  last sign-in")
    for r in rows:
        print(
            f"{r['id']:>4}  {r['name']:<20} {r['role']:<11} {r['status']:<9} "
            f"{'yes' if r['totp'] else 'no ':<5} {r['last_login_at'] or '-'}"
        )
    return 0


def _by_name(ctx: CliContext, name: str, change: Callable[[int], Awaitable[Any]]) -> int:
    from admin import service as admin_service

    async def work() -> Any:
        op = await admin_service.operator_by_name(name=name)
        if op is None:
            raise flows.NotFound(name)
        return await change(op.id)

    try:
        op = _run_db(ctx, work)
    except flows.NotFound:
        return _fail(f"no operator named {name!r}", 1)
    except flows.FieldError as exc:
        return _fail(f"{exc.field}: {exc.message}")
    print(json.dumps({"name": op.name, "status": op.status, "role": op.role}, ensure_ascii=False))
    return 0


def cmd_users_status(args: argparse.Namespace, ctx: CliContext, *, active: bool) -> int:
    # The CLI may disable the last admin (it is also how a lost console is repaired).
    return _by_name(
        ctx,
        args.name,
        lambda op_id: flows.do_set_operator_status(
            actor=_cli_actor(),
            source="cli",
            operator_id=op_id,
            active=active,
            allow_last_admin=True,
        ),
    )


def cmd_users_reset_password(args: argparse.Namespace, ctx: CliContext) -> int:
    try:
        password = read_password(from_stdin=args.password_stdin)
        flows.check_new_password(password, name=args.name)
    except flows.FieldError as exc:
        return _fail(f"{exc.field}: {exc.message}")
    return _by_name(
        ctx,
        args.name,
        lambda op_id: flows.do_reset_password(
            actor=_cli_actor(),
            source="cli",
            operator_id=op_id,
            password=password,
            must_change_password=args.must_change,
        ),
    )


def cmd_users_reset_totp(args: argparse.Namespace, ctx: CliContext) -> int:
    return _by_name(
        ctx,
        args.name,
        lambda op_id: flows.do_reset_totp(actor=_cli_actor(), source="cli", operator_id=op_id),
    )


def cmd_users_unlock(args: argparse.Namespace, ctx: CliContext) -> int:
    from admin.sessions import LoginThrottle
    from core import redis as core_redis

    async def run() -> None:
        async with core_redis.redis_lifespan(ctx.settings) as client:
            await LoginThrottle(client, settings=ctx.settings.admin).unlock(account=args.name)

    asyncio.run(run())
    print(json.dumps({"unlocked": args.name}, ensure_ascii=False))
    return 0


# ------------------------------------------------------------------ API keys


def _parse_expiry(text: str) -> datetime | None:
    from admin.pages import parse_local_date_end

    return parse_local_date_end(text, field="expires_at") if text else None


def cmd_keys_create(args: argparse.Namespace, ctx: CliContext) -> int:
    table = load_table()
    try:
        expires_at = _parse_expiry(args.expires or "")
    except flows.FieldError as exc:
        return _fail(f"--expires: {exc.message}")

    async def work() -> flows.CreatedKey:
        return await flows.do_create_api_key(
            actor=_cli_actor(),
            source="cli",
            name=args.name,
            scopes=args.scope or [],
            table=table,
            expires_at=expires_at,
            allowed_ips=args.allow_ip or [],
        )

    try:
        created = _run_db(ctx, work)
    except flows.FieldError as exc:
        return _fail(f"{exc.field}: {exc.message}")
    print(
        json.dumps(
            {
                "name": created.key.name,
                "key_id": created.key.key_id,
                "scopes": created.key.scopes,
                "key": created.plaintext,
            },
            ensure_ascii=False,
        )
    )
    print(
        "the key is shown only now; store it in the calling system's secret store", file=sys.stderr
    )
    return 0


def cmd_keys_list(args: argparse.Namespace, ctx: CliContext) -> int:
    from admin import service as admin_service

    keys = _run_db(ctx, admin_service.api_keys)
    rows = [
        {
            "id": k.id,
            "name": k.name,
            "key_id": k.key_id,
            "scopes": k.scopes,
            "allowed_ips": k.allowed_ips,
            "expires_at": k.expires_at.isoformat() if k.expires_at else None,
            "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
            "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
        }
        for k in keys
    ]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    print(f"{'id':>4}  {'name':<24} {'key id':<13} {'state':<8} scopes")
    for r in rows:
        state = "revoked" if r["revoked_at"] else "active"
        print(f"{r['id']:>4}  {r['name']:<24} {r['key_id']:<13} {state:<8} {','.join(r['scopes'])}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace, ctx: CliContext) -> int:
    async def work() -> Any:
        key = await flows.find_api_key(ref=args.key)
        return await flows.do_revoke_api_key(actor=_cli_actor(), source="cli", api_key_id=key.id)

    try:
        key = _run_db(ctx, work)
    except flows.NotFound:
        return _fail(f"no API key {args.key!r} (give its id, key id or name)", 1)
    print(json.dumps({"revoked": key.name, "key_id": key.key_id}, ensure_ascii=False))
    return 0


# ------------------------------------------------------------------ registration


def register(sub: Subparsers[argparse.ArgumentParser], ctx: CliContext) -> None:
    sp = sub.add_parser("users", help="console operators: create, list, disable, reset-password")
    usub = sp.add_subparsers(dest="users_command", required=True)

    c = usub.add_parser("create", help="create an operator (password from a prompt or stdin)")
    c.add_argument("--name", required=True, help="sign-in name")
    c.add_argument("--role", required=True, choices=ROLES)
    c.add_argument("--display-name", default="", help="姓名 shown in the console")
    c.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    c.set_defaults(func=partial(cmd_users_create, ctx=ctx))

    ls = usub.add_parser("list", help="list operators")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=partial(cmd_users_list, ctx=ctx))

    for name, active, what in (("disable", False, "disable"), ("enable", True, "re-enable")):
        p = usub.add_parser(name, help=f"{what} an operator (ends their sessions)")
        p.add_argument("name")
        p.set_defaults(func=partial(cmd_users_status, ctx=ctx, active=active))

    rp = usub.add_parser("reset-password", help="set a new password (prompt or stdin)")
    rp.add_argument("name")
    rp.add_argument("--password-stdin", action="store_true")
    rp.add_argument(
        "--must-change", action="store_true", help="make them choose their own at next sign-in"
    )
    rp.set_defaults(func=partial(cmd_users_reset_password, ctx=ctx))

    rt = usub.add_parser("reset-totp", help="remove an operator's second factor (lost phone)")
    rt.add_argument("name")
    rt.set_defaults(func=partial(cmd_users_reset_totp, ctx=ctx))

    ul = usub.add_parser("unlock", help="lift a sign-in lockout of an account")
    ul.add_argument("name")
    ul.set_defaults(func=partial(cmd_users_unlock, ctx=ctx))

    sp = sub.add_parser("api-keys", help="named API keys for systems: create, list, revoke")
    ksub = sp.add_subparsers(dest="keys_command", required=True)
    kc = ksub.add_parser("create", help="create a key (printed once)")
    kc.add_argument("--name", required=True)
    kc.add_argument(
        "--scope",
        action="append",
        choices=load_table().scopes,
        help="a scope the key carries (repeatable)",
    )
    kc.add_argument("--expires", help="last valid day, YYYY-MM-DD (Asia/Shanghai)")
    kc.add_argument(
        "--allow-ip", action="append", help="an address or CIDR the key may be used from"
    )
    kc.set_defaults(func=partial(cmd_keys_create, ctx=ctx))
    kl = ksub.add_parser("list", help="list keys (never the keys themselves)")
    kl.add_argument("--json", action="store_true")
    kl.set_defaults(func=partial(cmd_keys_list, ctx=ctx))
    kr = ksub.add_parser("revoke", help="revoke a key by id, key id or name")
    kr.add_argument("key")
    kr.set_defaults(func=partial(cmd_keys_revoke, ctx=ctx))
