"""Identity providers: plug your own authentication (JWT, OAuth introspection, ...) in.

A plugin yields :class:`IdentityProviderSpec` from ``scaivoice_identity_providers``; the operator
picks one with ``[auth] identity_provider = "NAME"``. The engine asks it first about every
bearer credential (``Authorization: Bearer ...`` on HTTP and WebSocket requests); a provider
that does not recognise the credential returns ``None`` and the engine's own API keys are tried.

:class:`Principal` (who is calling) and the permission names live here, at the bottom of the
engine's layers, because a provider returns one; the engine's key handling (``_host.auth``) and
everything above it use the same record.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import Forbidden
from .backends import API_VERSION
from .resource import Resource

__all__ = [
    "PERMISSION_ADMIN",
    "PERMISSION_USE",
    "IdentityProvider",
    "IdentityProviderSpec",
    "Principal",
]

PERMISSION_USE = "scaivoice:use"
PERMISSION_ADMIN = "scaivoice:admin"


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


class IdentityProvider(Resource):
    """Turns a bearer credential into a :class:`Principal`. Created once per engine."""

    async def open(self) -> None:
        """Fetch keys, open connection pools. Cancelling abandons it."""

    async def aclose(self) -> None:
        """Release resources. Idempotent."""

    @abc.abstractmethod
    async def authenticate(self, credential: str) -> Principal | None:
        """The principal for ``credential``; ``None`` if this provider does not know it.

        Raises:
            Unauthorized: the credential is this provider's but invalid (expired, forged):
                the request is refused without trying other credentials.
        """


@dataclass(frozen=True, slots=True)
class IdentityProviderSpec:
    """What a plugin yields from ``scaivoice_identity_providers``.

    Attributes:
        name: what operators write in ``[auth] identity_provider``.
        factory: called with ``[auth] identity_provider_options``; returns an unopened provider.
    """

    name: str
    factory: Callable[[Mapping[str, Any]], IdentityProvider]
    description: str = ""
    api_version: int = API_VERSION
