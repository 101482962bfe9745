"""Authentication and the role check of each call."""

from __future__ import annotations

from osd.engine.access.apikeys import ApiKeys
from osd.engine.access.certs import ClientCerts
from osd.engine.access.principal import EVERYONE, Principal
from osd.engine.access.roles import RoleTable
from osd.engine.access.tokens import TokenVerifier
from osd.errors import PermissionDenied, Unauthenticated

_NEEDS = (
    "this call needs credentials: a bearer token (authorization: Bearer TOKEN) "
    "or an API key (x-api-key)"
)


class Authenticator:
    """Finds the caller from its credentials, and checks the caller's roles.

    With ``enabled`` False, every caller is admin and credentials are ignored.
    """

    def __init__(
        self,
        *,
        enabled: bool,
        roles: RoleTable,
        tokens: TokenVerifier | None = None,
        api_keys: ApiKeys | None = None,
        client_certs: ClientCerts | None = None,
    ) -> None:
        self.enabled = enabled
        self.roles = roles
        self.tokens = tokens
        self.api_keys = api_keys
        self.client_certs = client_certs

    def authenticate(
        self, authorization: str | None, api_key: str | None, cert: bytes | None = None
    ) -> Principal:
        """The caller of a call with these credentials: a bearer token, an API
        key, or else a client certificate (PEM or DER, verified by the TLS
        handshake) whose subject is mapped to roles."""
        if not self.enabled:
            return EVERYONE
        if authorization is not None and api_key is not None:
            raise Unauthenticated(
                "give one credential: a bearer token or an API key, not both",
                reason="CREDENTIALS_AMBIGUOUS",
            )
        if api_key is not None:
            if self.api_keys is None:
                raise Unauthenticated("API keys are not accepted here", reason="API_KEY_INVALID")
            return self.api_keys.verify(api_key)
        if authorization is None:
            if cert is not None and self.client_certs is not None:
                principal = self.client_certs.principal(cert)
                if principal is not None:
                    return principal
                raise Unauthenticated(
                    f"the client certificate's subject {self.client_certs.subject(cert)[:200]!r}"
                    " is not one auth_client_certs maps to roles; " + _NEEDS,
                    reason="CREDENTIALS_MISSING",
                )
            raise Unauthenticated(_NEEDS, reason="CREDENTIALS_MISSING")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated(
                "authorization must read: Bearer TOKEN", reason="CREDENTIALS_MALFORMED"
            )
        if self.tokens is None:
            raise Unauthenticated("no token issuer is trusted here", reason="ISSUER_UNKNOWN")
        return self.tokens.verify(token)

    def authorize(self, principal: Principal, method: str) -> None:
        """Raises PermissionDenied unless the caller's roles allow ``method``
        ("osd.v1.VolumeService/CreateVolume")."""
        if not self.enabled or self.roles.allows(principal, method):
            return
        needed = self.roles.required_role(method)
        if needed is None:
            raise PermissionDenied(
                f"{method} is not open to any role",
                reason="ROLE_NOT_ALLOWED",
                metadata={"method": method},
            )
        raise PermissionDenied(
            f"{method} needs role {needed} or a role that allows it",
            reason="ROLE_NOT_ALLOWED",
            metadata={"method": method, "required_role": needed},
        )
