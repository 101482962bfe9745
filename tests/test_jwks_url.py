"""An issuer whose keys are fetched from a JWKS URL, over gRPC and again
through the REST gateway: keys are fetched once and kept, an issuer that is
down or answers garbage gives UNAVAILABLE (never INTERNAL) until it first
answers, the last good keys outlive an outage, a failing issuer is not
fetched on every call, and a rotated key is fetched when a token names it.

The issuer is a real HTTP server on loopback. The store plays no part, so
these run on SQLite only.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from osd.engine.access import tokens
from tests.auth_helpers import (
    OK,
    UNAUTHENTICATED,
    Keys,
    Wire,
    World,
    bearer,
    list_clusters,
    make_keys,
)
from tests.conftest import Database, running_daemon

ISSUER = "https://idp.example"
UNAVAILABLE = "UNAVAILABLE"
CACHE_SECONDS = 3.0


def jwk_of(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid=kid, use="sig", alg="ES256")
    return dict(jwk)


@dataclass
class Idp:
    """The issuer: what it answers, and how many times it was asked."""

    status: int = 200
    body: bytes = b""
    requests: int = 0
    keys: dict[str, ec.EllipticCurvePrivateKey] = field(default_factory=dict)

    def publish(self, *kids: str) -> None:
        for kid in kids:
            self.keys.setdefault(kid, ec.generate_private_key(ec.SECP256R1()))
        self.status = 200
        self.body = json.dumps({"keys": [jwk_of(self.keys[k], k) for k in kids]}).encode()

    def token(self, kid: str, *, key: ec.EllipticCurvePrivateKey | None = None) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": "oidc-user", "iat": now, "exp": now + 600}
        claims["roles"] = ["view"]  # type: ignore[assignment]
        signer = key or self.keys[kid]
        return jwt.encode(claims, signer, algorithm="ES256", headers={"kid": kid})


@pytest.fixture
def idp() -> Iterator[tuple[Idp, str]]:
    state = Idp()
    state.publish("k1")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests += 1
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_port}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def world(
    sqlite_database: Database, idp: tuple[Idp, str], tmp_path: Path
) -> Iterator[tuple[World, Idp]]:
    state, url = idp
    sqlite_database.reset()
    keys: Keys = make_keys(tmp_path)
    issuer = {"issuer": ISSUER, "jwks_url": url, "jwks_cache_seconds": CACHE_SECONDS}
    with contextlib.ExitStack() as stack:
        d = stack.enter_context(
            running_daemon(
                sqlite_database,
                rest_enabled=True,
                rest_listen="127.0.0.1:0",
                auth_secret_file=str(keys.secret_file),
                auth_issuers=(issuer,),
            )
        )
        rest = stack.enter_context(
            httpx.Client(base_url=f"http://127.0.0.1:{d.daemon.rest_port}", timeout=30)
        )
        yield World(d, keys, rest, "", []), state


def call(w: World, wire: Wire, token: str) -> tuple[str, str]:
    answer = wire(w, list_clusters(), bearer(token))
    return answer.code, answer.reason


def test_keys_are_fetched_once_and_kept(world: tuple[World, Idp], wire: Wire) -> None:
    w, idp = world
    for _ in range(5):
        assert call(w, wire, idp.token("k1")) == (OK, "")
    assert idp.requests == 1
    forged = idp.token("k1", key=ec.generate_private_key(ec.SECP256R1()))
    assert call(w, wire, forged) == (UNAUTHENTICATED, "TOKEN_INVALID")


@pytest.mark.parametrize(
    "status, body",
    [
        (200, b"<html>not json</html>"),
        (500, b'{"error": "down"}'),
        (200, b"[1, 2, 3]"),
        (200, b'{"keys": [{"kty": "nonsense"}]}'),
        (200, b'{"keys": "k1"}'),
    ],
    ids=["html", "http-500", "a-list", "bad-key", "keys-not-a-list"],
)
def test_an_issuer_that_answers_garbage_gives_unavailable_and_is_not_hammered(
    world: tuple[World, Idp], wire: Wire, status: int, body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens._JwksUrl, "BACKOFF_SECONDS", (2.0, 60.0))
    w, idp = world
    good = idp.token("k1")
    idp.status, idp.body = status, body
    assert call(w, wire, good) == (UNAVAILABLE, "ISSUER_KEYS_UNAVAILABLE")
    asked = idp.requests
    for _ in range(5):  # within the back-off: answered without asking again
        assert call(w, wire, good) == (UNAVAILABLE, "ISSUER_KEYS_UNAVAILABLE")
    assert idp.requests == asked
    idp.publish("k1")
    deadline = time.monotonic() + 10
    while call(w, wire, good) != (OK, ""):
        assert time.monotonic() < deadline, "the issuer's keys were never fetched again"
        time.sleep(0.2)


def test_the_last_good_keys_outlive_an_outage(
    world: tuple[World, Idp], wire: Wire, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens._JwksUrl, "BACKOFF_SECONDS", (2.0, 60.0))
    w, idp = world
    good = idp.token("k1")
    assert call(w, wire, good) == (OK, "")
    idp.status, idp.body = 503, b"maintenance"
    time.sleep(CACHE_SECONDS + 0.2)  # the keys are now due for a fetch, which fails
    for _ in range(5):
        assert call(w, wire, good) == (OK, "")
    assert idp.requests == 2  # one failed fetch, then the back-off


def test_a_rotated_key_is_fetched_when_a_token_names_it(
    world: tuple[World, Idp], wire: Wire, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens._JwksUrl, "REFETCH_SECONDS", 0.0)
    w, idp = world
    assert call(w, wire, idp.token("k1")) == (OK, "")
    idp.publish("k1", "k2")
    assert call(w, wire, idp.token("k2")) == (OK, "")
    assert idp.requests == 2
    stranger = ec.generate_private_key(ec.SECP256R1())
    assert call(w, wire, idp.token("k3", key=stranger)) == (UNAUTHENTICATED, "TOKEN_INVALID")
