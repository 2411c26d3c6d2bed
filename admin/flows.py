"""The admin domain's use cases: ``check_*`` validates (no side effects), ``do_*`` changes.

Each ``do_*`` takes the acting person or system explicitly (``actor=``, as Zulip
passes ``acting_user``) and the source address, and writes its audit entry in the
same transaction as the change.  Refusals raise ``FieldError`` (a zh-CN message and
the form field it is about) before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from admin import security
from admin import service as admin_service
from admin.models import ApiKey, Operator
from admin.permissions import ROLES, PermissionTable
from admin.sessions import LoginThrottle, TotpReplay
from core import audit
from core.audit import Actor
from core.crypto import Keyring


class FieldError(ValueError):
    """Input refused; ``field`` names the form field (or API field), ``message`` is zh-CN."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class NotFound(LookupError):
    pass


def now() -> datetime:
    return datetime.now(UTC)


def operator_actor(op: Operator) -> Actor:
    return Actor("operator", str(op.id), op.name)


def _totp_aad(operator_id: int) -> str:
    # Bound to the operator: a sealed secret copied onto another row does not open.
    return f"admin.totp:{operator_id}"


# ------------------------------------------------------------------ operators

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$")


def check_operator_name(name: str) -> str:
    name = name.strip()
    if not _NAME_RE.match(name):
        raise FieldError("name", "登录名为 2–64 位字母、数字或 . _ -，以字母或数字开头")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise FieldError("role", "请选择有效的角色")
    return role


def check_display_name(display_name: str) -> str:
    display_name = display_name.strip()
    if len(display_name) > 64:
        raise FieldError("display_name", "姓名最多 64 个字符")
    return display_name


def check_new_password(password: str, *, name: str, field: str = "password") -> str:
    problem = security.password_problem(password, name=name)
    if problem:
        raise FieldError(field, problem)
    return password


async def do_create_operator(
    *,
    actor: Actor,
    source: str,
    name: str,
    role: str,
    password: str,
    display_name: str = "",
    must_change_password: bool = False,
) -> Operator:
    name = check_operator_name(name)
    role = check_role(role)
    display_name = check_display_name(display_name)
    check_new_password(password, name=name)
    password_hash = security.hash_password(password)
    try:
        async with in_transaction() as conn:
            op = await admin_service.insert_operator(
                conn=conn,
                name=name,
                display_name=display_name or name,
                role=role,
                password_hash=password_hash,
                must_change_password=must_change_password,
            )
            await audit.append(
                conn=conn,
                actor=actor,
                action="operator.create",
                target=f"operator:{op.id}",
                source=source,
                detail={"name": name, "role": role},
            )
    except IntegrityError:
        raise FieldError("name", "该登录名已被使用") from None
    return op


async def _operator(operator_id: int) -> Operator:
    op = await admin_service.operator_by_id(operator_id=operator_id)
    if op is None:
        raise NotFound(f"operator {operator_id}")
    return op


async def _refuse_last_admin(op: Operator, *, field: str) -> None:
    # An institution with no active administrator can only be repaired from the CLI;
    # the console refuses to get there.
    if op.role == "admin" and op.status == "active":
        if await admin_service.count_active_admins() <= 1:
            raise FieldError(field, "不能停用或降级最后一位启用的管理员")


async def do_set_operator_status(
    *, actor: Actor, source: str, operator_id: int, active: bool, allow_last_admin: bool = False
) -> Operator:
    op = await _operator(operator_id)
    status = "active" if active else "disabled"
    if op.status == status:
        return op
    if not active and not allow_last_admin:
        await _refuse_last_admin(op, field="status")
    async with in_transaction() as conn:
        await admin_service.end_operator_sessions(conn=conn, operator_id=op.id, status=status)
        await audit.append(
            conn=conn,
            actor=actor,
            action="operator.enable" if active else "operator.disable",
            target=f"operator:{op.id}",
            source=source,
        )
    return await _operator(operator_id)


async def do_change_role(*, actor: Actor, source: str, operator_id: int, role: str) -> Operator:
    role = check_role(role)
    op = await _operator(operator_id)
    if op.role == role:
        return op
    if op.role == "admin":
        await _refuse_last_admin(op, field="role")
    async with in_transaction() as conn:
        await admin_service.end_operator_sessions(conn=conn, operator_id=op.id, role=role)
        await audit.append(
            conn=conn,
            actor=actor,
            action="operator.role_change",
            target=f"operator:{op.id}",
            source=source,
            detail={"from": op.role, "to": role},
        )
    return await _operator(operator_id)


async def do_reset_password(
    *,
    actor: Actor,
    source: str,
    operator_id: int,
    password: str,
    must_change_password: bool,
) -> Operator:
    """Set a password chosen by someone else; every session of the operator ends."""
    op = await _operator(operator_id)
    check_new_password(password, name=op.name)
    password_hash = security.hash_password(password)
    async with in_transaction() as conn:
        await admin_service.end_operator_sessions(
            conn=conn,
            operator_id=op.id,
            password_hash=password_hash,
            must_change_password=must_change_password,
        )
        await audit.append(
            conn=conn,
            actor=actor,
            action="operator.password_reset",
            target=f"operator:{op.id}",
            source=source,
        )
    return await _operator(operator_id)


async def do_change_own_password(
    *, operator: Operator, source: str, current: str, new: str, confirm: str
) -> Operator:
    if not security.verify_password(operator.password_hash, current):
        raise FieldError("current", "当前密码不正确")
    if new != confirm:
        raise FieldError("confirm", "两次输入的新密码不一致")
    if new == current:
        raise FieldError("new", "新密码不能与当前密码相同")
    check_new_password(new, name=operator.name, field="new")
    password_hash = security.hash_password(new)
    async with in_transaction() as conn:
        # Other sessions of this operator end; the caller starts a fresh one.
        await admin_service.end_operator_sessions(
            conn=conn,
            operator_id=operator.id,
            password_hash=password_hash,
            must_change_password=False,
        )
        await audit.append(
            conn=conn,
            actor=operator_actor(operator),
            action="auth.password_change",
            target=f"operator:{operator.id}",
            source=source,
        )
    return await _operator(operator.id)


async def do_reset_totp(*, actor: Actor, source: str, operator_id: int) -> Operator:
    """Remove an operator's second factor (lost phone); they enrol again at next sign-in."""
    op = await _operator(operator_id)
    async with in_transaction() as conn:
        await admin_service.end_operator_sessions(
            conn=conn, operator_id=op.id, totp_sealed=None, totp_enabled_at=None
        )
        await audit.append(
            conn=conn,
            actor=actor,
            action="operator.totp_reset",
            target=f"operator:{op.id}",
            source=source,
        )
    return await _operator(operator_id)


# ------------------------------------------------------------------ signing in

SignInOutcome = Literal["ok", "bad_credentials", "locked", "disabled"]


@dataclass(frozen=True)
class SignInResult:
    outcome: SignInOutcome
    operator: Operator | None = None
    retry_after_s: float = 0.0


async def do_sign_in(
    *, name: str, password: str, source: str, throttle: LoginThrottle
) -> SignInResult:
    """Check a password under the per-account and per-address throttle.

    Every attempt is audited.  The answer never says whether the name exists: an
    unknown name costs the same hash check, counts towards the same lockout and gets
    the same message as a wrong password.
    """
    name = name.strip()[:64]
    wait = await throttle.locked_for(account=name, address=source)
    op = await admin_service.operator_by_name(name=name) if name else None
    target = f"operator:{op.id}" if op else "operator:unknown"
    if wait > 0:
        # Refused before any check, and not audited one by one: the failure that set
        # the lock is in the log, and a flood of attempts against a locked account
        # must not be able to flood the audit chain that every change waits on.
        return SignInResult("locked", retry_after_s=wait)
    ok = security.verify_password(op.password_hash if op else None, password)
    if not ok or op is None:
        locked = await throttle.failed(account=name, address=source)
        await audit.append_alone(
            actor=Actor("system", "sign-in", "sign-in"),
            action="auth.sign_in",
            target=target,
            result="failure",
            source=source,
            detail={"locked": locked},
        )
        if locked:
            return SignInResult(
                "locked", retry_after_s=await throttle.locked_for(account=name, address=source)
            )
        return SignInResult("bad_credentials")
    if op.status != "active":
        await audit.append_alone(
            actor=operator_actor(op),
            action="auth.sign_in",
            target=target,
            result="disabled",
            source=source,
        )
        return SignInResult("disabled")
    if security.needs_rehash(op.password_hash):
        async with in_transaction() as conn:
            await admin_service.update_operator(
                conn=conn, operator_id=op.id, password_hash=security.hash_password(password)
            )
    return SignInResult("ok", operator=op)


async def do_complete_sign_in(*, operator: Operator, source: str, throttle: LoginThrottle) -> None:
    """Every step passed: clear the account's failures, note the time, audit it."""
    await throttle.succeeded(account=operator.name)
    async with in_transaction() as conn:
        await admin_service.record_sign_in(conn=conn, operator_id=operator.id, at=now())
        await audit.append(
            conn=conn,
            actor=operator_actor(operator),
            action="auth.sign_in",
            target=f"operator:{operator.id}",
            source=source,
            detail={"totp": operator.totp_sealed is not None},
        )


async def do_check_totp(
    *,
    operator: Operator,
    code: str,
    source: str,
    keyring: Keyring,
    throttle: LoginThrottle,
    replay: TotpReplay,
) -> SignInResult:
    """The second factor; failures count towards the same lockout as passwords."""
    wait = await throttle.locked_for(account=operator.name, address=source)
    if wait > 0:
        return SignInResult("locked", retry_after_s=wait)
    step = None
    if operator.totp_sealed:
        secret = keyring.open_text(operator.totp_sealed, aad=_totp_aad(operator.id))
        step = security.totp_step(secret, code)
    if step is None or not await replay.accept(operator_id=operator.id, step=step):
        locked = await throttle.failed(account=operator.name, address=source)
        await audit.append_alone(
            actor=operator_actor(operator),
            action="auth.totp",
            target=f"operator:{operator.id}",
            result="failure",
            source=source,
            detail={"locked": locked},
        )
        if locked:
            return SignInResult("locked", retry_after_s=float(throttle.settings.lockout_s))
        return SignInResult("bad_credentials")
    return SignInResult("ok", operator=operator)


def new_totp_enrolment(*, operator: Operator, keyring: Keyring) -> tuple[str, str]:
    """A fresh secret for enrolment: (sealed secret to keep in the session, secret)."""
    secret = security.new_totp_secret()
    return keyring.seal_text(secret, aad=_totp_aad(operator.id)), secret


def open_totp_enrolment(*, operator: Operator, sealed: str, keyring: Keyring) -> str:
    return keyring.open_text(sealed, aad=_totp_aad(operator.id))


async def do_enable_totp(
    *,
    operator: Operator,
    sealed: str,
    code: str,
    source: str,
    keyring: Keyring,
    replay: TotpReplay,
) -> Operator:
    """Confirm enrolment with a code from the new authenticator, then store the secret."""
    secret = open_totp_enrolment(operator=operator, sealed=sealed, keyring=keyring)
    step = security.totp_step(secret, code)
    if step is None or not await replay.accept(operator_id=operator.id, step=step):
        raise FieldError("code", "验证码不正确，请查看验证器中最新的 6 位数字")
    async with in_transaction() as conn:
        await admin_service.update_operator(
            conn=conn, operator_id=operator.id, totp_sealed=sealed, totp_enabled_at=now()
        )
        await audit.append(
            conn=conn,
            actor=operator_actor(operator),
            action="auth.totp_enrol",
            target=f"operator:{operator.id}",
            source=source,
        )
    return await _operator(operator.id)


async def do_sign_out(*, operator: Operator, source: str) -> None:
    await audit.append_alone(
        actor=operator_actor(operator),
        action="auth.sign_out",
        target=f"operator:{operator.id}",
        source=source,
    )


# ------------------------------------------------------------------ API keys


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    # Shown once, to whoever created it; only its hash is stored.
    plaintext: str


def check_api_key_request(
    *,
    name: str,
    scopes: Sequence[str],
    expires_at: datetime | None,
    allowed_ips: Sequence[str],
    table: PermissionTable,
) -> tuple[str, list[str], list[str]]:
    name = name.strip()
    if not name or len(name) > 64:
        raise FieldError("name", "请填写名称（最多 64 个字符）")
    if not scopes:
        raise FieldError("scopes", "至少选择一个权限范围")
    unknown = sorted(set(scopes) - set(table.scopes))
    if unknown:
        raise FieldError("scopes", "未知的权限范围：" + ", ".join(unknown))
    if expires_at is not None and expires_at <= now():
        raise FieldError("expires_at", "到期时间必须晚于现在")
    try:
        networks = security.parse_networks(allowed_ips)
    except ValueError as exc:
        raise FieldError("allowed_ips", str(exc)) from None
    ordered = [s for s in table.scopes if s in set(scopes)]
    return name, ordered, networks


async def do_create_api_key(
    *,
    actor: Actor,
    source: str,
    name: str,
    scopes: Sequence[str],
    table: PermissionTable,
    expires_at: datetime | None = None,
    allowed_ips: Sequence[str] = (),
) -> CreatedKey:
    name, ordered, networks = check_api_key_request(
        name=name, scopes=scopes, expires_at=expires_at, allowed_ips=allowed_ips, table=table
    )
    if await admin_service.active_key_named(name=name) is not None:
        raise FieldError("name", "已有同名的有效密钥；请换一个名称或先吊销旧密钥")
    fresh = security.new_api_key()
    async with in_transaction() as conn:
        key = await admin_service.insert_api_key(
            conn=conn,
            name=name,
            key_id=fresh.key_id,
            secret_hash=fresh.secret_hash,
            scopes=ordered,
            allowed_ips=networks,
            expires_at=expires_at,
            created_by=actor.ref,
        )
        await audit.append(
            conn=conn,
            actor=actor,
            action="api_key.create",
            target=f"api_key:{key.key_id}",
            source=source,
            detail={
                "name": name,
                "scopes": ordered,
                "allowed_ips": networks,
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
        )
    return CreatedKey(key=key, plaintext=fresh.plaintext)


async def do_revoke_api_key(*, actor: Actor, source: str, api_key_id: int) -> ApiKey:
    key = await admin_service.api_key_by_id(api_key_id=api_key_id)
    if key is None:
        raise NotFound(f"api key {api_key_id}")
    async with in_transaction() as conn:
        revoked = await admin_service.revoke_api_key(
            conn=conn, api_key_id=key.id, by=actor.ref, at=now()
        )
        if revoked:
            await audit.append(
                conn=conn,
                actor=actor,
                action="api_key.revoke",
                target=f"api_key:{key.key_id}",
                source=source,
                detail={"name": key.name},
            )
    found = await admin_service.api_key_by_id(api_key_id=api_key_id)
    assert found is not None
    return found


async def find_api_key(*, ref: str) -> ApiKey:
    """A key by its database id, its key id or its (live) name — for the CLI."""
    if ref.isdigit():
        key = await admin_service.api_key_by_id(api_key_id=int(ref))
        if key is not None:
            return key
    key = await admin_service.api_key_by_key_id(key_id=ref)
    if key is None:
        key = await admin_service.active_key_named(name=ref)
    if key is None:
        raise NotFound(ref)
    return key


KeyRefusal = Literal["unknown", "revoked", "expired", "address"]


async def check_api_key(*, presented: str, address: str) -> ApiKey | KeyRefusal:
    """The live key a bearer token names, or why it is refused (no side effects)."""
    parts = security.split_api_key(presented)
    if parts is None:
        return "unknown"
    key_id, secret = parts
    key = await admin_service.api_key_by_key_id(key_id=key_id)
    if key is None or not security.api_secret_matches(key.secret_hash, secret):
        return "unknown"
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now():
        return "expired"
    if not security.address_allowed(address, key.allowed_ips or []):
        return "address"
    return key


async def do_record_key_use(
    *,
    actor: Actor,
    api_key_id: int | None,
    source: str,
    method: str,
    path: str,
    status: int,
) -> None:
    """One API call with a key: last-used time and an audit entry, in one transaction."""
    async with in_transaction() as conn:
        if api_key_id is not None:
            await admin_service.touch_api_key(
                conn=conn, api_key_id=api_key_id, at=now(), address=source
            )
        await audit.append(
            conn=conn,
            actor=actor,
            action="api_key.use",
            target=f"{method} {path}",
            result="ok" if status < 400 else f"http_{status}",
            source=source,
        )


async def do_record_key_refusal(*, reason: str, key_ref: str, source: str, path: str) -> None:
    """A real key refused (revoked, expired, wrong address): worth an entry.

    Tokens that name no key are not audited one by one (anyone can send those, as
    many as they like); they are logged, rate-limited, by the guard.
    """
    await audit.append_alone(
        actor=Actor("api_key", key_ref or "unknown", ""),
        action="api_key.use",
        target=path,
        result=f"refused:{reason}",
        source=source,
    )
