"""The permission table (``permissions.json``), loaded once and checked on load.

Data, not code: a compliance officer can read who may do what in one file, and the
permission-matrix test derives every expected allow/deny from the same file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Literal, cast

Role = Literal["advisor", "team_lead", "marketing", "compliance", "admin"]
ROLES: tuple[Role, ...] = ("advisor", "team_lead", "marketing", "compliance", "admin")


@dataclass(frozen=True)
class Permission:
    name: str
    label: str
    roles: frozenset[Role]
    api_scope: bool


@dataclass(frozen=True)
class PermissionTable:
    role_labels: dict[Role, str]
    permissions: dict[str, Permission]

    def granted(self, role: str) -> frozenset[str]:
        """Every permission a role holds."""
        return frozenset(p.name for p in self.permissions.values() if role in p.roles)

    def allows(self, role: str, permission: str) -> bool:
        p = self.permissions.get(permission)
        return p is not None and role in p.roles

    @property
    def scopes(self) -> tuple[str, ...]:
        """The permissions an API key may carry, in the table's order."""
        return tuple(p.name for p in self.permissions.values() if p.api_scope)

    def label(self, permission: str) -> str:
        p = self.permissions.get(permission)
        return p.label if p else permission

    def role_label(self, role: str) -> str:
        return self.role_labels.get(cast(Role, role), role)


def parse_table(raw: dict[str, object]) -> PermissionTable:
    roles_raw = raw.get("roles")
    perms_raw = raw.get("permissions")
    if not isinstance(roles_raw, dict) or not isinstance(perms_raw, dict):
        raise ValueError("permissions.json: needs 'roles' and 'permissions' objects")
    if set(roles_raw) != set(ROLES):
        raise ValueError(f"permissions.json: roles must be exactly {list(ROLES)}")
    role_labels = {cast(Role, r): str(v["label"]) for r, v in roles_raw.items()}
    permissions: dict[str, Permission] = {}
    for name, spec in perms_raw.items():
        if not isinstance(spec, dict):
            raise ValueError(f"permissions.json: {name!r} must be an object")
        roles = spec.get("roles", [])
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise ValueError(f"permissions.json: {name!r} grants unknown roles {sorted(unknown)}")
        permissions[name] = Permission(
            name=name,
            label=str(spec.get("label", name)),
            roles=frozenset(cast(list[Role], roles)),
            api_scope=bool(spec.get("api_scope", False)),
        )
    return PermissionTable(role_labels=role_labels, permissions=permissions)


def load_table() -> PermissionTable:
    text = resources.files("admin").joinpath("permissions.json").read_text("utf-8")
    return parse_table(json.loads(text))
