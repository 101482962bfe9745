"""Static API keys for scripts (PVC's X-Api-Key).

A key reads ``osdk_<id>_<secret>``: sixteen hex digits of id, then 43
characters of random secret. The store keeps the id, a SHA-256 digest of the
secret, the subject and role the key acts as, and when it was made and
revoked; the key itself is shown once, when it is made. A plain digest is
enough: the secret is 256 random bits, not a password.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from osd.engine.access.principal import Principal
from osd.errors import InvalidArgument, NotFound, Unauthenticated
from osd.store import apikeys as repo
from osd.store.db import Store
from osd.store.models import ApiKeyRow, utcnow

PREFIX = "osdk_"
_KEY = re.compile(r"osdk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_SUBJECT = re.compile(r"[^\x00-\x1f\x7f]{1,200}")
API_KEY_ISSUER = "osd-api-key"


@dataclass(frozen=True)
class ApiKey:
    id: str
    subject: str
    role: str
    description: str
    create_time: datetime
    revoke_time: datetime | None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        subject=row.subject,
        role=row.role,
        description=row.description,
        create_time=row.create_time,
        revoke_time=row.revoke_time,
    )


class ApiKeys:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, *, subject: str, role: str, description: str = "") -> tuple[ApiKey, str]:
        """Makes a key; returns its record and the key, which is never shown again."""
        if not _SUBJECT.fullmatch(subject):
            raise InvalidArgument.field("subject", "1 to 200 printable characters")
        if len(description) > 200:
            raise InvalidArgument.field("description", "at most 200 characters")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        row = ApiKeyRow(
            id=key_id,
            secret_sha256=_digest(secret),
            subject=subject,
            role=role,
            description=description,
            create_time=utcnow(),
            revoke_time=None,
        )
        with self.store.write() as s:
            repo.add(s, row)
            record = _key(row)
        return record, f"{PREFIX}{key_id}_{secret}"

    def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        with self.store.read() as s:
            return [_key(r) for r in repo.all_keys(s, include_revoked=include_revoked)]

    def revoke(self, key_id: str) -> None:
        key_id = key_id.removeprefix(PREFIX)
        with self.store.write() as s:
            row = repo.get(s, key_id)
            if row is None:
                raise NotFound.object("API key", "id", key_id)
            if row.revoke_time is None:
                repo.revoke(s, key_id, utcnow())

    def verify(self, key: str) -> Principal:
        match = _KEY.fullmatch(key.strip())
        if match is None:
            raise Unauthenticated("the API key is malformed", reason="CREDENTIALS_MALFORMED")
        key_id, secret = match.groups()
        with self.store.read() as s:
            row = repo.get(s, key_id)
            valid = (
                row is not None
                and row.revoke_time is None
                and hmac.compare_digest(row.secret_sha256, _digest(secret))
            )
            if not valid or row is None:
                raise Unauthenticated("the API key is unknown or revoked", reason="API_KEY_INVALID")
            return Principal(
                subject=row.subject,
                roles=frozenset({row.role}),
                issuer=API_KEY_ISSUER,
                via="api-key",
            )
