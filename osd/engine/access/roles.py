"""Which roles may call which method.

Each RPC declares the least built-in role that may call it (the proto option
``(osd.v1.auth).role``). A built-in role may call every method whose required
role ranks at most its own. A custom role is a list of allow and deny rules
over full method names ("osd.v1.VolumeService/InspectVolume"), with shell
globs; a deny wins over an allow, and a method no rule allows is denied.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from osd.engine.access.principal import BUILT_IN_ROLES, RANK, Principal

_ROLE_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,63}")


class RoleConfigError(ValueError):
    """A custom role is badly defined; the message names it."""


@dataclass(frozen=True)
class CustomRole:
    name: str
    allow: tuple[re.Pattern[str], ...]
    deny: tuple[re.Pattern[str], ...]

    def allows(self, method: str) -> bool:
        if any(p.fullmatch(method) for p in self.deny):
            return False
        return any(p.fullmatch(method) for p in self.allow)


def _rules(role: str, key: str, value: object) -> tuple[re.Pattern[str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RoleConfigError(f"role {role}: {key} must be a list of method globs")
    return tuple(re.compile(fnmatch.translate(v)) for v in value)


def custom_roles(config: Mapping[str, object]) -> dict[str, CustomRole]:
    """Custom roles from the config's ``auth_roles`` table:
    ``{name: {"allow": [glob, ...], "deny": [glob, ...]}}``."""
    roles: dict[str, CustomRole] = {}
    for name, body in config.items():
        if not _ROLE_NAME.fullmatch(name):
            raise RoleConfigError(
                f"role {name!r}: a role name is lower-case letters, digits, '_', '.' or '-'"
            )
        if name in BUILT_IN_ROLES:
            raise RoleConfigError(f"role {name}: {name} is built in and cannot be redefined")
        if not isinstance(body, Mapping):
            raise RoleConfigError(f"role {name}: expected a table with allow and deny")
        unknown = sorted(set(body) - {"allow", "deny"})
        if unknown:
            raise RoleConfigError(f"role {name}: unknown keys {', '.join(unknown)}")
        allow = _rules(name, "allow", body.get("allow"))
        if not allow:
            raise RoleConfigError(f"role {name}: allow lists no method, so it allows nothing")
        roles[name] = CustomRole(name, allow, _rules(name, "deny", body.get("deny")))
    return roles


class RoleTable:
    """The required role of every method, and the custom roles."""

    def __init__(self, required: Mapping[str, str], custom: Mapping[str, CustomRole]) -> None:
        # Method names without the leading '/': "osd.v1.VolumeService/InspectVolume".
        self.required = dict(required)
        self.custom = dict(custom)

    def known_role(self, name: str) -> bool:
        return name in RANK or name in self.custom

    def role_names(self) -> list[str]:
        return [*BUILT_IN_ROLES, *sorted(self.custom)]

    def required_role(self, method: str) -> str | None:
        return self.required.get(method)

    def allows(self, principal: Principal, method: str) -> bool:
        needed = self.required.get(method)
        if needed is None:
            return False  # a method without a rule is for nobody
        return self.allows_roles(principal.roles, method, needed)

    def allows_roles(self, roles: Iterable[str], method: str, needed: str) -> bool:
        for role in roles:
            rank = RANK.get(role)
            if rank is not None:
                if rank >= RANK[needed]:
                    return True
                continue
            custom = self.custom.get(role)
            if custom is not None and custom.allows(method):
                return True
        return False
