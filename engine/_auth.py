"""API keys, permissions and short-lived browser session tokens.

Keys are stored only as ``sha256:<hex>`` hashes and compared in constant time; a key is never
logged. A session token is ``sv1.<payload>.<mac>``: an HMAC-SHA256-signed, base64url JSON payload
naming the tenant, the key it was minted with, its permissions, its purpose and its expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ._config import EngineConfig
from ._errors import ConfigError, Forbidden, Unauthorized

__all__ = [
    "BUILTIN_ROLES",
    "PERMISSION_ADMIN",
    "PERMISSION_USE",
    "Authenticator",
    "Principal",
    "hash_key",
    "new_key",
]

PERMISSION_USE = "scaivoice:use"
PERMISSION_ADMIN = "scaivoice:admin"
BUILTIN_ROLES: Mapping[str, frozenset[str]] = {
    "user": frozenset({PERMISSION_USE}),
    "admin": frozenset({PERMISSION_USE, PERMISSION_ADMIN}),
}
_TOKEN_PREFIX = "sv1"
_SESSION_PURPOSE = "session"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a tenant, the key (id, never the key itself) and its permissions."""

    tenant: str
    key_id: str
    permissions: frozenset[str]

    def require(self, permission: str) -> None:
        """Raise :class:`Forbidden` unless this principal holds ``permission``."""
        if permission not in self.permissions:
            raise Forbidden(f"this credential lacks the {permission!r} permission")


def hash_key(key: str) -> str:
    """The stored form of an API key."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random API key."""
    return "sk-sv-" + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class _StoredKey:
    digest: bytes
    principal: Principal


class Authenticator:
    """Checks API keys and mints / verifies session tokens.

    Args:
        config: the engine config (tenants, keys, roles, token settings).
        clock: wall-clock seconds (``time.time``); injected so tests control expiry.
    """

    def __init__(self, config: EngineConfig, *, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.open_mode = config.open_mode
        roles = dict(BUILTIN_ROLES)
        for name, permissions in config.auth.roles.items():
            roles[name] = frozenset(permissions)
        self._keys: list[_StoredKey] = []
        for tenant, tenant_config in config.tenants.items():
            for key in tenant_config.keys:
                self._keys.append(
                    _StoredKey(
                        digest=_parse_hash(key.hash, key.id),
                        principal=Principal(
                            tenant=tenant,
                            key_id=key.id,
                            permissions=_permissions(key.roles, roles, key.id),
                        ),
                    )
                )
        secret = config.auth.token_secret
        self._secret = secret.encode("utf-8") if secret else secrets.token_bytes(32)
        self.token_ttl_s = config.auth.token_ttl_s

    # ---------------------------------------------------------------- API keys

    def authenticate_key(self, key: str | None) -> Principal:
        """The principal of an API key.

        Raises:
            Unauthorized: no key, or a key that matches no tenant.
        """
        if self.open_mode:
            return Principal(tenant="default", key_id="open", permissions=BUILTIN_ROLES["admin"])
        if not key:
            raise Unauthorized("an API key is required: 'Authorization: Bearer <key>'")
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        found: Principal | None = None
        for stored in self._keys:  # every entry is compared: no early exit on a match
            if hmac.compare_digest(stored.digest, digest):
                found = stored.principal
        if found is None:
            raise Unauthorized("the API key is not valid")
        return found

    # ---------------------------------------------------------------- session tokens

    def mint_session_token(self, principal: Principal) -> tuple[str, float]:
        """A short-lived token that opens one kind of thing: a session. Returns (token, expiry)."""
        expires_at = self._clock() + self.token_ttl_s
        payload = {
            "t": principal.tenant,
            "k": principal.key_id,
            "p": sorted(principal.permissions),
            "u": _SESSION_PURPOSE,
            "exp": expires_at,
            "n": secrets.token_urlsafe(8),
        }
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        mac = _b64(hmac.new(self._secret, f"{_TOKEN_PREFIX}.{body}".encode(), "sha256").digest())
        return f"{_TOKEN_PREFIX}.{body}.{mac}", expires_at

    def authenticate_token(self, token: str) -> Principal:
        """The principal a session token was minted for.

        Raises:
            Unauthorized: malformed, forged (``unauthorized``) or expired (``token_expired``).
        """
        try:
            prefix, body, mac = token.split(".")
        except ValueError:
            raise Unauthorized("malformed session token") from None
        expected = _b64(hmac.new(self._secret, f"{prefix}.{body}".encode(), "sha256").digest())
        if prefix != _TOKEN_PREFIX or not hmac.compare_digest(mac, expected):
            raise Unauthorized("the session token is not valid")
        try:
            payload = json.loads(_unb64(body))
        except ValueError:
            raise Unauthorized("malformed session token") from None
        if payload.get("u") != _SESSION_PURPOSE:
            raise Unauthorized("this token is not a session token")
        if float(payload["exp"]) <= self._clock():
            raise Unauthorized("the session token has expired", code="token_expired")
        return Principal(
            tenant=str(payload["t"]), key_id=str(payload["k"]), permissions=frozenset(payload["p"])
        )

    def authenticate(self, *, bearer: str | None, token: str | None) -> Principal:
        """Authenticate a WebSocket or HTTP request by API key or session token."""
        if token is not None and not self.open_mode:
            return self.authenticate_token(token)
        return self.authenticate_key(bearer)


def bearer_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, if any."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, credential = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                return credential.strip()
    return None


def _permissions(
    role_names: Iterable[str], roles: Mapping[str, frozenset[str]], key_id: str
) -> frozenset[str]:
    permissions: set[str] = set()
    for role in role_names:
        if role not in roles:
            raise ConfigError(f"key {key_id!r} names the unknown role {role!r}")
        permissions |= roles[role]
    return frozenset(permissions)


def _parse_hash(stored: str, key_id: str) -> bytes:
    algorithm, _, hexdigest = stored.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64:
        raise ConfigError(f"key {key_id!r}: hash must be 'sha256:<64 hex digits>'")
    try:
        return bytes.fromhex(hexdigest)
    except ValueError as exc:
        raise ConfigError(f"key {key_id!r}: hash is not hexadecimal") from exc


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
