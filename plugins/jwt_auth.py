"""Identity provider ``jwt``: accept JSON Web Tokens issued by your own identity provider.

Configure it with::

    [auth]
    identity_provider = "jwt"

    [auth.identity_provider_options]
    public_key = "-----BEGIN PUBLIC KEY-----\\n..."   # or secret = "..." for HS256
    algorithms = ["RS256"]
    issuer = "https://id.example.com/"
    audience = "scaivoice"
    tenant_claim = "tenant"           # which claim names the tenant
    permissions_claim = "scope"       # space-separated, e.g. "scaivoice:use scaivoice:admin"

A bearer credential that is not a JWT is left to the engine's API keys; a JWT that fails
verification (bad signature, wrong issuer or audience, expired) is refused. Needs PyJWT
(``pip install "scaivoice[jwt]"``; RS*/ES* algorithms also need ``cryptography``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from scaivoice.engine import (
    BackendOptions,
    ConfigError,
    IdentityProvider,
    IdentityProviderSpec,
    Principal,
    Unauthorized,
    hookimpl,
)

__all__ = ["JwtIdentityProvider", "JwtOptions"]


class JwtOptions(BackendOptions, frozen=True):
    """Options of the ``jwt`` identity provider."""

    secret: str | None = None
    public_key: str | None = None
    algorithms: list[str] = msgspec.field(default_factory=lambda: ["RS256"])
    issuer: str | None = None
    audience: str | None = None
    tenant_claim: str = "tenant"
    permissions_claim: str = "scope"
    key_id_claim: str = "sub"
    leeway_s: float = 30.0


class JwtIdentityProvider(IdentityProvider):
    """Verifies JWTs and maps their claims to a tenant and permissions."""

    def __init__(self, options: JwtOptions) -> None:
        if (options.secret is None) == (options.public_key is None):
            raise ConfigError("the jwt identity provider needs exactly one of secret, public_key")
        self.options = options
        self._jwt: Any = None

    async def open(self) -> None:
        try:
            import jwt
        except ImportError as exc:
            raise ConfigError(
                "the jwt identity provider needs PyJWT: pip install 'scaivoice[jwt]'"
            ) from exc
        self._jwt = jwt

    async def authenticate(self, credential: str) -> Principal | None:
        jwt = self._jwt
        if jwt is None or credential.count(".") != 2 or not credential.startswith("eyJ"):
            return None  # not a JWT: an API key, perhaps
        opts = self.options
        try:
            claims = jwt.decode(
                credential,
                key=opts.secret if opts.secret is not None else opts.public_key,
                algorithms=opts.algorithms,
                issuer=opts.issuer,
                audience=opts.audience,
                leeway=opts.leeway_s,
                options={"require": ["exp"], "verify_aud": opts.audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the token has expired", code="token_expired") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"the token is not valid: {exc}") from exc
        tenant = claims.get(opts.tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise Unauthorized(f"the token has no {opts.tenant_claim!r} claim")
        raw = claims.get(opts.permissions_claim, "")
        permissions = raw.split() if isinstance(raw, str) else [str(p) for p in raw]
        return Principal(
            tenant=tenant,
            key_id=str(claims.get(opts.key_id_claim, "jwt")),
            permissions=frozenset(permissions),
        )


def _factory(values: Mapping[str, Any]) -> JwtIdentityProvider:
    return JwtIdentityProvider(JwtOptions.from_mapping(values, backend="jwt"))


@hookimpl
def scaivoice_identity_providers() -> Iterator[IdentityProviderSpec]:
    yield IdentityProviderSpec(
        name="jwt", factory=_factory, description="JSON Web Tokens from your identity provider"
    )
