"""JWT bearer tokens: issuers, their keys, and verification with PyJWT.

An issuer is trusted with exactly one source of keys:

* ``secret_file``: an HS256 shared secret (at least 32 bytes);
* ``public_key_file``: a PEM public key, RSA (RS256) or EC P-256 (ES256);
* ``jwks_file`` or ``jwks_url``: a JSON Web Key Set, such as an OIDC
  issuer's; a file is read again when it changes, a URL is fetched again
  after ``jwks_cache_seconds``.

A token names its issuer in ``iss``; the issuer's keys and only their
algorithms verify it (so an RSA public key is never taken as an HMAC secret).
Required claims: ``iss``, ``sub``, ``exp``, ``iat`` and ``roles`` (a list of
role names); ``groups`` (a list) is optional and ``nbf`` is honoured, all
within ``leeway`` seconds of clock skew.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import re
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from osd.engine.access.principal import Principal
from osd.errors import Unauthenticated, Unavailable

MIN_SECRET_BYTES = 32
MAX_TOKEN_CHARS = 16 * 1024
MAX_CLAIM_ITEMS = 256
DEFAULT_ISSUER = "osd"
log = logging.getLogger("osd.auth")
# A subject, role or group: what reaches logs and the audit trail, so no
# control character (a newline would forge a log line).
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,200}")
_KEY_SOURCES = ("secret_file", "public_key_file", "jwks_file", "jwks_url")


class IssuerConfigError(ValueError):
    """An issuer is badly configured; the message names it."""


@dataclass(frozen=True)
class IssuerConfig:
    issuer: str
    secret_file: str = ""
    public_key_file: str = ""
    jwks_file: str = ""
    jwks_url: str = ""
    audience: str = ""
    jwks_cache_seconds: float = 300.0

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str) -> IssuerConfig:
        known = {"issuer", "audience", "jwks_cache_seconds", *_KEY_SOURCES}
        unknown = sorted(set(table) - known)
        if unknown:
            raise IssuerConfigError(f"{where}: unknown keys {', '.join(unknown)}")
        issuer = table.get("issuer")
        if not isinstance(issuer, str) or not issuer:
            raise IssuerConfigError(f"{where}: issuer (the tokens' iss) is required")
        sources = [k for k in _KEY_SOURCES if table.get(k)]
        if len(sources) != 1:
            raise IssuerConfigError(
                f"{where} ({issuer}): give exactly one of {', '.join(_KEY_SOURCES)}"
            )
        values: dict[str, Any] = {"issuer": issuer}
        for key in (*_KEY_SOURCES, "audience"):
            value = table.get(key, "")
            if not isinstance(value, str):
                raise IssuerConfigError(f"{where} ({issuer}): {key} must be a string")
            values[key] = value
        cache = table.get("jwks_cache_seconds", 300.0)
        if not isinstance(cache, int | float) or isinstance(cache, bool) or cache <= 0:
            raise IssuerConfigError(f"{where} ({issuer}): jwks_cache_seconds must be above 0")
        values["jwks_cache_seconds"] = float(cache)
        return cls(**values)


def read_secret(path: str) -> bytes:
    """An HS256 secret from a file: its bytes without trailing white space."""
    try:
        with open(path, "rb") as fh:
            secret = fh.read().rstrip()
    except OSError as exc:
        raise IssuerConfigError(f"secret file {path}: {exc.strerror}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise IssuerConfigError(
            f"secret file {path}: a secret needs at least {MIN_SECRET_BYTES} bytes "
            f"(try: openssl rand -hex 32 > {path})"
        )
    return secret


class _Keys:
    """One issuer's keys, and the algorithms each key verifies."""

    def key_for(self, token: str, header: Mapping[str, Any]) -> tuple[Any, list[str]]:
        raise NotImplementedError


class _StaticKey(_Keys):
    def __init__(self, key: Any, algorithm: str) -> None:
        self.key = key
        self.algorithm = algorithm

    def key_for(self, token: str, header: Mapping[str, Any]) -> tuple[Any, list[str]]:
        return self.key, [self.algorithm]


def _public_key(path: str, issuer: str) -> _StaticKey:
    try:
        with open(path, "rb") as fh:
            key = load_pem_public_key(fh.read())
    except OSError as exc:
        raise IssuerConfigError(
            f"issuer {issuer}: public key file {path}: {exc.strerror}"
        ) from None
    except ValueError as exc:
        raise IssuerConfigError(f"issuer {issuer}: public key file {path}: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise IssuerConfigError(f"issuer {issuer}: an RSA key needs at least 2048 bits")
        return _StaticKey(key, "RS256")
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return _StaticKey(key, "ES256")
    raise IssuerConfigError(
        f"issuer {issuer}: public key file {path}: only RSA (RS256) and EC P-256 (ES256) keys"
    )


def _pick(jwks: jwt.PyJWKSet, header: Mapping[str, Any]) -> tuple[Any, list[str]]:
    kid = header.get("kid")
    keys = [k for k in jwks.keys if k.public_key_use in (None, "sig")]
    if kid is not None:
        keys = [k for k in keys if k.key_id == kid]
    elif len(keys) > 1:
        raise Unauthenticated(
            "the token names no key (kid) and its issuer has several", reason="TOKEN_INVALID"
        )
    if not keys:
        raise Unauthenticated(
            "the token's key (kid) is not one of its issuer's keys", reason="TOKEN_INVALID"
        )
    return keys[0].key, [keys[0].algorithm_name]


class _JwksFile(_Keys):
    """A key set in a file, read again when the file changes."""

    def __init__(self, path: str, issuer: str) -> None:
        self.path = path
        self.issuer = issuer
        self._lock = threading.Lock()
        self._stamp: tuple[float, int] | None = None
        self._checked = 0.0
        self._jwks = self._load()

    def _load(self) -> jwt.PyJWKSet:
        try:
            stat = os.stat(self.path)
            with open(self.path, "rb") as fh:
                jwks = jwt.PyJWKSet.from_dict(json.loads(fh.read()))
        except OSError as exc:
            raise IssuerConfigError(
                f"issuer {self.issuer}: JWKS file {self.path}: {exc.strerror}"
            ) from None
        except (ValueError, jwt.PyJWKSetError, jwt.PyJWKError) as exc:
            raise IssuerConfigError(f"issuer {self.issuer}: JWKS file {self.path}: {exc}") from None
        self._stamp = (stat.st_mtime, stat.st_size)
        return jwks

    def key_for(self, token: str, header: Mapping[str, Any]) -> tuple[Any, list[str]]:
        now = time.monotonic()
        if now - self._checked >= 1.0:
            with self._lock:
                self._checked = now
                try:
                    stat = os.stat(self.path)
                    if (stat.st_mtime, stat.st_size) != self._stamp:
                        self._jwks = self._load()
                except (OSError, IssuerConfigError):
                    pass  # keep the keys last read; the file may be mid-rewrite
        return _pick(self._jwks, header)


class _JwksUrl(_Keys):
    """A key set fetched from a URL and kept for ``lifespan`` seconds.

    One caller at a time fetches; the others go on with the keys last
    fetched. A fetch that fails (the issuer is down, slow, or answers
    something that is not a key set) keeps the last good keys and is not
    tried again for a back-off that doubles from 1 s to 60 s, so a dead
    issuer is not hammered by every call. Only with no good keys at all do
    calls answer UNAVAILABLE. A token whose key id is not in the set fetches
    it again (at most every ``REFETCH_SECONDS``): the issuer may have rotated.
    """

    MAX_BYTES = 1024 * 1024
    TIMEOUT_SECONDS = 5.0
    REFETCH_SECONDS = 30.0
    BACKOFF_SECONDS = (1.0, 60.0)

    def __init__(self, url: str, lifespan: float, issuer: str = "") -> None:
        self.url = url
        self.issuer = issuer or url
        self.lifespan = lifespan
        self._lock = threading.Lock()
        self._jwks: jwt.PyJWKSet | None = None
        self._fetched = -math.inf  # monotonic time of the last good fetch
        self._retry_at = -math.inf  # no fetch before this, after a failure
        self._failures = 0  # in a row
        self._error = ""
        self.fetches = 0  # attempts, for tests and logs

    def _fetch(self) -> jwt.PyJWKSet:
        self.fetches += 1
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=self.TIMEOUT_SECONDS) as answer:
            body = answer.read(self.MAX_BYTES + 1)
        if len(body) > self.MAX_BYTES:
            raise ValueError(f"the key set is larger than {self.MAX_BYTES} bytes")
        data = json.loads(body)
        keys = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
            raise ValueError('the answer is not a key set: {"keys": [...]}')
        return jwt.PyJWKSet.from_dict(data)

    def _refresh(self, *, wait: bool) -> None:
        """Fetches the key set unless another caller is (then returns at once
        unless ``wait``) or a failure's back-off has not passed."""
        if not self._lock.acquire(blocking=wait):
            return
        try:
            now = time.monotonic()
            if now < self._retry_at:
                return
            try:
                jwks = self._fetch()
            except (OSError, ValueError, http.client.HTTPException, jwt.PyJWTError) as exc:
                self._error = str(exc)[:200] or type(exc).__name__
                first, most = self.BACKOFF_SECONDS
                backoff = min(first * 2 ** min(self._failures, 16), most)
                self._failures += 1
                self._retry_at = time.monotonic() + backoff
                log.warning(
                    "issuer %s: key set %s not fetched (%s); %s, next try in %.0f s",
                    self.issuer,
                    self.url,
                    self._error,
                    "keeping the keys last fetched" if self._jwks else "no keys yet",
                    backoff,
                )
                return
            self._jwks = jwks
            self._fetched = time.monotonic()
            self._failures = 0
            self._retry_at = -math.inf
        finally:
            self._lock.release()

    def key_for(self, token: str, header: Mapping[str, Any]) -> tuple[Any, list[str]]:
        if time.monotonic() - self._fetched >= self.lifespan:
            self._refresh(wait=self._jwks is None)
        jwks = self._jwks
        if jwks is None:
            raise Unavailable(
                f"the token issuer's keys cannot be fetched: {self._error}",
                reason="ISSUER_KEYS_UNAVAILABLE",
            )
        kid = header.get("kid")
        if (
            kid is not None
            and not any(k.key_id == kid for k in jwks.keys)
            and time.monotonic() - self._fetched >= self.REFETCH_SECONDS
        ):
            self._refresh(wait=True)
            jwks = self._jwks or jwks
        return _pick(jwks, header)


def _keys(config: IssuerConfig) -> _Keys:
    if config.secret_file:
        try:
            return _StaticKey(read_secret(config.secret_file), "HS256")
        except IssuerConfigError as exc:
            raise IssuerConfigError(f"issuer {config.issuer}: {exc}") from None
    if config.public_key_file:
        return _public_key(config.public_key_file, config.issuer)
    if config.jwks_file:
        return _JwksFile(config.jwks_file, config.issuer)
    return _JwksUrl(config.jwks_url, config.jwks_cache_seconds, config.issuer)


def _names(payload: Mapping[str, Any], claim: str, *, required: bool) -> frozenset[str]:
    value = payload.get(claim)
    if value is None and not required:
        return frozenset()
    if (
        not isinstance(value, list)
        or len(value) > MAX_CLAIM_ITEMS
        or not all(isinstance(v, str) and _NAME.fullmatch(v) for v in value)
    ):
        raise Unauthenticated(
            f"the token's {claim} claim must be a list of names", reason="TOKEN_INVALID"
        )
    return frozenset(value)


class TokenVerifier:
    """Verifies bearer tokens against the configured issuers."""

    def __init__(self, issuers: Sequence[IssuerConfig], *, leeway: float = 30.0) -> None:
        self.leeway = leeway
        self._issuers: dict[str, tuple[IssuerConfig, _Keys]] = {}
        for config in issuers:
            if config.issuer in self._issuers:
                raise IssuerConfigError(f"issuer {config.issuer} is configured twice")
            self._issuers[config.issuer] = (config, _keys(config))

    @property
    def issuers(self) -> list[str]:
        return list(self._issuers)

    def verify(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("the bearer token is too long", reason="CREDENTIALS_MALFORMED")
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise Unauthenticated(
                "the bearer token is not a JWT", reason="CREDENTIALS_MALFORMED"
            ) from None
        issuer = claims.get("iss")
        entry = self._issuers.get(issuer) if isinstance(issuer, str) else None
        if entry is None:
            raise Unauthenticated("the token's issuer is not trusted", reason="ISSUER_UNKNOWN")
        config, keys = entry
        key, algorithms = keys.key_for(token, header)
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                issuer=config.issuer,
                audience=config.audience or None,
                leeway=self.leeway,
                options={"require": ["iss", "sub", "exp", "iat"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired", reason="TOKEN_EXPIRED") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated(
                "the token is not valid yet", reason="TOKEN_NOT_YET_VALID"
            ) from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated(
                "the token's signature does not verify", reason="TOKEN_INVALID"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(
                f"the token lacks the {exc.claim} claim", reason="TOKEN_INVALID"
            ) from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the token is invalid: {exc}", reason="TOKEN_INVALID") from None
        subject = payload.get("sub")
        if not isinstance(subject, str) or not _NAME.fullmatch(subject):
            raise Unauthenticated(
                "the token's sub claim must be a name of 1 to 200 printable characters",
                reason="TOKEN_INVALID",
            )
        return Principal(
            subject=subject,
            roles=_names(payload, "roles", required=True),
            groups=_names(payload, "groups", required=False),
            issuer=config.issuer,
            via="jwt",
        )


def issue(
    secret: bytes,
    *,
    subject: str,
    roles: Sequence[str],
    ttl_seconds: float,
    issuer: str = DEFAULT_ISSUER,
    groups: Sequence[str] = (),
    now: float | None = None,
) -> str:
    """An HS256 token for ``subject`` with ``roles``, valid for ``ttl_seconds``."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "iat": issued,
        "exp": issued + int(ttl_seconds),
        "roles": list(roles),
    }
    if groups:
        claims["groups"] = list(groups)
    return jwt.encode(claims, secret, algorithm="HS256")
