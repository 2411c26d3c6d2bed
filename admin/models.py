"""Tables the admin domain owns: the people who sign in and the keys systems use.

Only ``admin.service`` queries them.
"""

from __future__ import annotations

from typing import Any

from tortoise import fields

from bot.models import Timestamped


class Operator(Timestamped):
    """A person who signs in to the console (客户经理, 团队主管, 运营, 合规, 管理员)."""

    id = fields.BigIntField(primary_key=True)
    # The sign-in name; unique, compared as typed (no case folding surprises).
    name = fields.CharField(max_length=64, unique=True)
    display_name = fields.CharField(max_length=64, default="")
    role = fields.CharField(max_length=16)
    # argon2id, with its parameters in the string (rehashed when they change).
    password_hash = fields.CharField(max_length=255)
    # Set when someone else chose the password (reset, creation in the console): the
    # operator must pick their own before doing anything else.
    must_change_password = fields.BooleanField(default=False)
    status = fields.CharField(max_length=16, default="active")
    # The TOTP secret sealed with the field key (AES-GCM); null until enrolled.
    totp_sealed = fields.TextField(null=True)
    totp_enabled_at = fields.DatetimeField(null=True)
    # The WeCom userid of an advisor or team lead: which customers they may see.
    wecom_userid = fields.CharField(max_length=64, null=True)
    # Bumped on password reset, disable or role change: every older session ends.
    session_epoch = fields.IntField(default=0)
    last_login_at = fields.DatetimeField(null=True)

    class Meta:
        table = "admin_operator"


class ApiKey(Timestamped):
    """A named key a system presents on /api/v1; stored as a hash, shown once."""

    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=64)
    # The public part of the key ("siyu_<key_id>_<secret>"): finds the row.
    key_id = fields.CharField(max_length=16, unique=True)
    # sha256 of the secret part: 256 random bits need no slow hash, and a check costs
    # one lookup and one constant-time compare per request.
    secret_hash = fields.CharField(max_length=64)
    scopes: Any = fields.JSONField(default=list)
    # CIDRs the key may be used from; empty = anywhere.
    allowed_ips: Any = fields.JSONField(default=list)
    expires_at = fields.DatetimeField(null=True)
    created_by = fields.CharField(max_length=80, default="")
    revoked_at = fields.DatetimeField(null=True)
    revoked_by = fields.CharField(max_length=80, null=True)
    last_used_at = fields.DatetimeField(null=True)
    last_used_from = fields.CharField(max_length=64, null=True)

    class Meta:
        table = "admin_api_key"
