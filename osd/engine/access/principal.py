"""The caller of one call, and the roles osd knows."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

# The built-in roles, from least to most; a role may call every method whose
# required role ranks at most its own.
VIEW = "view"
USER = "user"
ADMIN = "admin"
BUILT_IN_ROLES = (VIEW, USER, ADMIN)
RANK = {VIEW: 1, USER: 2, ADMIN: 3}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``via`` says how it was authenticated: "jwt", "api-key", "client-cert",
    or "none" when authentication is off and every caller is admin.
    """

    subject: str
    roles: frozenset[str]
    groups: frozenset[str] = field(default_factory=frozenset)
    issuer: str = ""
    via: str = "none"

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles


# Every caller, while authentication is off.
EVERYONE = Principal(subject="", roles=frozenset({ADMIN}), via="none")

_current: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "osd_principal", default=EVERYONE
)


def current() -> Principal:
    """The caller of the call this thread serves (admin while auth is off)."""
    return _current.get()


@contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    token = _current.set(principal)
    try:
        yield
    finally:
        _current.reset(token)
