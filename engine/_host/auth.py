"""API keys, permissions and short-lived browser session tokens.

Keys are stored only as ``sha256:<hex>`` hashes and compared in constant time; a key is never
logged. A session token is ``sv1.<payload>.<mac>``: an HMAC-SHA256-signed, base64url JSON payload
naming the tenant, the key it was minted with, its permissions, its purpose and its expiry.

A session token opens one session: the process that opens it remembers it as used until it
expires (:meth:`Authenticator.consume_session_token`; with ``[cluster]`` every replica does,
through Redis), and a second session with it is refused (``token_used``). A token minted with an API key is good only while that key is: revoking the
key (or removing it) refuses its unexpired tokens too (``token_revoked``). Lifetimes are
``[auth] token_ttl_s`` by default, or what the minting request asks for, at most
:data:`MAX_TOKEN_TTL_S`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import heapq
import hmac
import json
import math
import os
import secrets
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .._contract.identity import PERMISSION_ADMIN, PERMISSION_USE, Principal
from .._errors import ConfigError, Unauthorized
from .config import EngineConfig

__all__ = [
    "BUILTIN_ROLES",
    "MAX_TOKEN_TTL_S",
    "PERMISSION_ADMIN",
    "PERMISSION_USE",
    "Authenticator",
    "Principal",
    "hash_key",
    "new_key",
]

BUILTIN_ROLES: Mapping[str, frozenset[str]] = {
    "user": frozenset({PERMISSION_USE}),
    "admin": frozenset({PERMISSION_USE, PERMISSION_ADMIN}),
}
_TOKEN_PREFIX = "sv1"
_SESSION_PURPOSE = "session"
MAX_TOKEN_TTL_S = 3600.0
"""The longest lifetime a session token gets (a longer ``ttl_s`` is cut to this)."""


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
    revoked_at: float | None = None


class IdentityProviderLike(Protocol):
    async def authenticate(self, credential: str) -> Principal | None: ...


# --------------------------------------------------------------------------- the keys file


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """An API key as the keys file stores it: never the key, only its hash."""

    id: str
    tenant: str
    hash: str
    roles: tuple[str, ...]
    created_at: float
    revoked_at: float | None = None


def read_key_file(path: Path) -> list[KeyEntry]:
    """The entries of a keys file (``[]`` if it does not exist).

    Raises:
        ConfigError: the file is not a keys file.
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except ValueError as exc:
        raise ConfigError(f"{path} is not a keys file: {exc}") from exc
    try:
        return [
            KeyEntry(
                id=str(e["id"]),
                tenant=str(e["tenant"]),
                hash=str(e["hash"]),
                roles=tuple(e.get("roles", ["user"])),
                created_at=float(e.get("created_at", 0.0)),
                revoked_at=None if e.get("revoked_at") is None else float(e["revoked_at"]),
            )
            for e in doc["keys"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path} is not a keys file: {exc}") from exc


def write_key_file(path: Path, entries: Iterable[KeyEntry]) -> None:
    """Replace the keys file atomically (readable by its owner only)."""
    doc = {
        "keys": [
            {
                "id": e.id,
                "tenant": e.tenant,
                "hash": e.hash,
                "roles": list(e.roles),
                "created_at": e.created_at,
                "revoked_at": e.revoked_at,
            }
            for e in entries
        ]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".keys-")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(doc, out, indent=2)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def create_key(path: Path, *, tenant: str, roles: Iterable[str], key_id: str, now: float) -> str:
    """Add a new key for ``tenant`` to the keys file; return the key (shown once).

    Raises:
        ConfigError: ``key_id`` is already used.
    """
    entries = read_key_file(path)
    if any(e.id == key_id for e in entries):
        raise ConfigError(f"a key with id {key_id!r} already exists")
    key = new_key()
    entries.append(KeyEntry(key_id, tenant, hash_key(key), tuple(roles), now))
    write_key_file(path, entries)
    return key


def revoke_key(path: Path, key_id: str, *, now: float) -> KeyEntry:
    """Mark ``key_id`` revoked (kept in the file, refused from now on).

    Raises:
        ConfigError: no such key.
    """
    entries = read_key_file(path)
    for index, entry in enumerate(entries):
        if entry.id == key_id:
            revoked = dataclasses.replace(entry, revoked_at=entry.revoked_at or now)
            entries[index] = revoked
            write_key_file(path, entries)
            return revoked
    raise ConfigError(f"no key with id {key_id!r} in {path}")


class Authenticator:
    """Checks API keys and mints / verifies session tokens.

    Keys come from the tenants' config and from ``[auth] keys_file`` (managed with
    ``scaivoice keys``; re-read when it changes, so a revocation takes effect on the next
    request).

    Args:
        config: the engine config (tenants, keys, roles, token settings).
        clock: wall-clock seconds (``time.time``); injected so tests control expiry.
    """

    def __init__(self, config: EngineConfig, *, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.open_mode = config.open_mode
        self._roles = dict(BUILTIN_ROLES)
        for name, permissions in config.auth.roles.items():
            self._roles[name] = frozenset(permissions)
        self._config_keys: list[_StoredKey] = []
        for tenant, tenant_config in config.tenants.items():
            for key in tenant_config.keys:
                self._config_keys.append(self._stored(tenant, key.id, key.hash, key.roles, None))
        self._keys_file = Path(config.auth.keys_file) if config.auth.keys_file else None
        self._file_keys: list[_StoredKey] = []
        self._file_stamp: tuple[float, int] | None = None
        self._reload_key_file()
        secret = config.auth.token_secret
        self._secret = secret.encode("utf-8") if secret else secrets.token_bytes(32)
        self.token_ttl_s = config.auth.token_ttl_s
        # Session tokens that opened a session, kept until they expire: mac -> expiry, and
        # the same as a heap by expiry, so that forgetting the expired ones is cheap.
        self._used_tokens: dict[str, float] = {}
        self._used_expiry: list[tuple[float, str]] = []

    def _stored(
        self, tenant: str, key_id: str, digest: str, roles: Iterable[str], revoked: float | None
    ) -> _StoredKey:
        return _StoredKey(
            digest=_parse_hash(digest, key_id),
            principal=Principal(
                tenant=tenant, key_id=key_id, permissions=_permissions(roles, self._roles, key_id)
            ),
            revoked_at=revoked,
        )

    def _reload_key_file(self) -> None:
        if self._keys_file is None:
            return
        try:
            stat = self._keys_file.stat()
        except FileNotFoundError:
            self._file_keys, self._file_stamp = [], None
            return
        stamp = (stat.st_mtime, stat.st_size)
        if stamp == self._file_stamp:
            return
        self._file_keys = [
            self._stored(e.tenant, e.id, e.hash, e.roles, e.revoked_at)
            for e in read_key_file(self._keys_file)
        ]
        self._file_stamp = stamp

    # ---------------------------------------------------------------- API keys

    def authenticate_key(self, key: str | None) -> Principal:
        """The principal of an API key.

        Raises:
            Unauthorized: no key, a key that matches no tenant, or a revoked key.
        """
        if self.open_mode:
            return Principal(tenant="default", key_id="open", permissions=BUILTIN_ROLES["admin"])
        if not key:
            raise Unauthorized("an API key is required: 'Authorization: Bearer <key>'")
        self._reload_key_file()
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        found: _StoredKey | None = None
        for stored in (*self._config_keys, *self._file_keys):  # no early exit on a match
            if hmac.compare_digest(stored.digest, digest):
                found = stored
        if found is None:
            raise Unauthorized("the API key is not valid")
        if found.revoked_at is not None:
            raise Unauthorized("the API key was revoked")
        return found.principal

    # ---------------------------------------------------------------- session tokens

    def token_lifetime(self, ttl_s: float | None = None) -> float:
        """The lifetime a token minted with ``ttl_s`` gets (see :meth:`mint_session_token`).

        Raises:
            ValueError: ``ttl_s`` is not a positive number.
        """
        if ttl_s is None:
            return min(self.token_ttl_s, MAX_TOKEN_TTL_S)
        if math.isnan(ttl_s) or ttl_s <= 0:
            raise ValueError(f"a token's lifetime must be a positive number (got {ttl_s!r})")
        return min(ttl_s, MAX_TOKEN_TTL_S)

    def mint_session_token(
        self, principal: Principal, *, ttl_s: float | None = None
    ) -> tuple[str, float]:
        """A short-lived token that opens one session. Returns (token, expiry).

        Args:
            principal: who the token stands for (its tenant, key and permissions).
            ttl_s: its lifetime in seconds (> 0); ``None`` = ``[auth] token_ttl_s``; longer
                than :data:`MAX_TOKEN_TTL_S` is cut to it.

        Raises:
            ValueError: ``ttl_s`` is not a positive number.
        """
        expires_at = self._clock() + self.token_lifetime(ttl_s)
        payload = {
            "t": principal.tenant,
            "k": principal.key_id,
            "p": sorted(principal.permissions),
            "u": _SESSION_PURPOSE,
            "exp": expires_at,
            "n": secrets.token_urlsafe(8),
        }
        if self._stored_key(principal.tenant, principal.key_id) is not None:
            payload["r"] = 1  # minted with an API key: refused once that key is revoked
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        mac = _b64(hmac.new(self._secret, f"{_TOKEN_PREFIX}.{body}".encode(), "sha256").digest())
        return f"{_TOKEN_PREFIX}.{body}.{mac}", expires_at

    def authenticate_token(self, token: str) -> Principal:
        """The principal a session token was minted for (the token is not used up: see
        :meth:`consume_session_token`).

        Raises:
            Unauthorized: malformed or forged (``unauthorized``), expired (``token_expired``),
                already used (``token_used``) or minted with a key since revoked
                (``token_revoked``).
        """
        mac, payload = self._verified(token)
        if mac in self._used_tokens:
            raise Unauthorized(
                "this session token was already used: mint one per session", code="token_used"
            )
        if payload.get("r"):
            self._reload_key_file()
            stored = self._stored_key(payload["t"], payload["k"])
            if stored is None or stored.revoked_at is not None:
                raise Unauthorized(
                    "the API key that minted this session token was revoked", code="token_revoked"
                )
        return Principal(
            tenant=payload["t"], key_id=payload["k"], permissions=frozenset(payload["p"])
        )

    def consume_session_token(self, token: str) -> tuple[str, float]:
        """Use up a session token (call it once the session it opens is admitted): from now
        until it expires, this authenticator refuses it with ``token_used``. Returns the
        token's MAC (its identity) and expiry, for sharing that it is used (``[cluster]``).

        Raises:
            Unauthorized: not a valid session token, or ``token_used`` (a session opened with
                it meanwhile).
        """
        mac, payload = self._verified(token)
        if mac in self._used_tokens:
            raise Unauthorized("this session token was already used", code="token_used")
        now = self._clock()
        used, expiry = self._used_tokens, self._used_expiry
        while expiry and expiry[0][0] <= now:  # forget tokens that expired: they are refused
            used.pop(heapq.heappop(expiry)[1], None)
        used[mac] = payload["exp"]
        heapq.heappush(expiry, (payload["exp"], mac))
        return mac, float(payload["exp"])

    def _verified(self, token: str) -> tuple[str, dict[str, Any]]:
        """The MAC and payload of an authentic, unexpired session token."""
        prefix, _, rest = token.partition(".")
        body, _, mac = rest.partition(".")
        if prefix != _TOKEN_PREFIX or not token.isascii():
            raise Unauthorized("the session token is not valid")
        expected = _b64(hmac.new(self._secret, f"{prefix}.{body}".encode(), "sha256").digest())
        if not hmac.compare_digest(mac, expected):
            raise Unauthorized("the session token is not valid")
        try:
            payload = json.loads(_unb64(body))
            valid = (
                payload.get("u") == _SESSION_PURPOSE
                and isinstance(payload.get("t"), str)
                and isinstance(payload.get("k"), str)
                and isinstance(payload.get("p"), list)
                and isinstance(payload.get("exp"), int | float)
            )
        except (ValueError, AttributeError):
            valid = False
        if not valid:
            raise Unauthorized("this token is not a session token")
        if payload["exp"] <= self._clock():
            raise Unauthorized("the session token has expired", code="token_expired")
        return mac, payload

    def _stored_key(self, tenant: str, key_id: str) -> _StoredKey | None:
        """The configured or keys-file key ``key_id`` of ``tenant`` (the last of that id)."""
        found = None
        for stored in (*self._config_keys, *self._file_keys):
            if stored.principal.key_id == key_id and stored.principal.tenant == tenant:
                found = stored
        return found

    async def authenticate(
        self,
        *,
        bearer: str | None,
        token: str | None,
        provider: IdentityProviderLike | None = None,
    ) -> Principal:
        """Authenticate a request: session token, else the identity provider, else API keys."""
        if token is not None and not self.open_mode:
            return self.authenticate_token(token)
        if provider is not None and bearer:
            principal = await provider.authenticate(bearer)
            if principal is not None:
                return principal
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
