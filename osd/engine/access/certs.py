"""Client certificates as identities, under mutual TLS.

When configured (the ``auth_client_certs`` table: a certificate subject's
common name, mapped to its roles), a caller whose client certificate, checked
by the TLS handshake against ``tls_client_ca``, has a mapped common name is
authenticated as that name with those roles, and with the certificate's
organization (O) values as its groups. A bearer token or API key, when
given, is used instead. A certificate whose common name is not mapped gives
no identity: the caller then needs a token or key.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from osd.engine.access.principal import Principal

CLIENT_CERT = "client-cert"
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,200}")
_CACHE = 256


class ClientCertConfigError(ValueError):
    """The auth_client_certs table is wrong; the message says where."""


class ClientCerts:
    """The mapped certificate subjects, and the identity of a certificate."""

    def __init__(self, table: Mapping[str, Any], known_roles: Iterable[str]) -> None:
        known = set(known_roles)
        self.roles: dict[str, frozenset[str]] = {}
        for name, roles in table.items():
            where = f"auth_client_certs.{name!r}"
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise ClientCertConfigError(f"{where}: a subject is 1 to 200 printable characters")
            if (
                not isinstance(roles, list)
                or not roles
                or not all(isinstance(r, str) and r for r in roles)
            ):
                raise ClientCertConfigError(f"{where}: give a list of role names")
            unknown = sorted(set(roles) - known)
            if unknown:
                raise ClientCertConfigError(f"{where}: {', '.join(unknown)} is not a role")
            self.roles[name] = frozenset(roles)
        self._lock = threading.Lock()
        self._seen: OrderedDict[bytes, tuple[str, frozenset[str]] | None] = OrderedDict()

    def principal(self, cert: bytes) -> Principal | None:
        """The caller a certificate (PEM or DER, already verified by the
        handshake) names, or None when its common name is not mapped."""
        named = self._names(cert)
        if named is None:
            return None
        subject, groups = named
        roles = self.roles.get(subject)
        if roles is None:
            return None
        return Principal(subject=subject, roles=roles, groups=groups, via=CLIENT_CERT)

    def subject(self, cert: bytes) -> str:
        """The certificate's common name, for a refusal's message."""
        named = self._names(cert)
        return "" if named is None else named[0]

    def _names(self, cert: bytes) -> tuple[str, frozenset[str]] | None:
        with self._lock:
            if cert in self._seen:
                self._seen.move_to_end(cert)
                return self._seen[cert]
        named = _read(cert)
        with self._lock:
            self._seen[cert] = named
            while len(self._seen) > _CACHE:
                self._seen.popitem(last=False)
        return named


def _read(cert: bytes) -> tuple[str, frozenset[str]] | None:
    try:
        parsed = (
            x509.load_pem_x509_certificate(cert)
            if cert.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_certificate(cert)
        )
    except ValueError:
        return None
    common = [a.value for a in parsed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if len(common) != 1 or not isinstance(common[0], str) or not _NAME.fullmatch(common[0]):
        return None
    groups = frozenset(
        v
        for a in parsed.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        if isinstance(v := a.value, str) and _NAME.fullmatch(v)
    )
    return common[0], groups
