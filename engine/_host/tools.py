"""The engine's server-side tools: plugin skills and the tools of MCP servers, per tenant.

Skills come from the ``scaivoice_tools`` hook once, at start. Providers (MCP servers, each
``[tools.mcp.NAME]``) are kept open by the engine's keepers like backends: while one is down its
tools are simply not offered. :meth:`ToolRegistry.for_session` is asked at every agent turn, so
a provider that came back, or changed its tool list, is seen at the next turn.

Which tools a session may use: the tenant's ``tools`` patterns (or ``[tools] allow``), and a
tool's ``permissions`` against the session's credential.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Mapping, Sequence

from .._contract.tools import ToolProvider, ToolSpec
from .._errors import BackendError
from .config import EngineConfig

__all__ = ["ToolRegistry"]

log = logging.getLogger("scaivoice.engine")


class ToolRegistry:
    """Server skills and providers, filtered per tenant and credential.

    Args:
        config: the engine's config (``[tools]``, tenants' ``tools``).
        skills: the plugins' skills by name.
    """

    def __init__(self, config: EngineConfig, skills: Mapping[str, ToolSpec]) -> None:
        self._config = config
        self.skills = dict(skills)
        self.providers: dict[str, ToolProvider | None] = {}
        """Configured providers by name: ``None`` while one is not open (down)."""

    def install_provider(self, name: str, provider: ToolProvider | None) -> None:
        """The keeper opened (``provider``) or lost (``None``) the provider ``name``."""
        self.providers[name] = provider

    def allowed_patterns(self, tenant: str | None) -> Sequence[str]:
        """The name patterns of the server tools ``tenant`` may use."""
        tenant_config = self._config.tenants.get(tenant) if tenant is not None else None
        if tenant_config is not None and tenant_config.tools is not None:
            return tenant_config.tools
        return self._config.tools.allow

    async def for_session(
        self, tenant: str | None, permissions: Iterable[str]
    ) -> dict[str, ToolSpec]:
        """The server tools a session of ``tenant`` holding ``permissions`` may call now.

        A provider that fails to list its tools is left out this time (logged). Cancelling
        abandons the listing.
        """
        patterns = self.allowed_patterns(tenant)
        if not patterns:
            return {}
        held = frozenset(permissions)
        offered: dict[str, ToolSpec] = {}
        for spec in await self._all():
            if spec.name in offered:
                continue  # a skill wins over a provider's tool of the same name
            if not spec.permissions <= held:
                continue
            if any(fnmatch.fnmatchcase(spec.name, p) for p in patterns):
                offered[spec.name] = spec
        return offered

    async def _all(self) -> list[ToolSpec]:
        found = list(self.skills.values())
        for name, provider in list(self.providers.items()):
            if provider is None:
                continue
            try:
                tools = await provider.list_tools()
            except BackendError as exc:
                log.warning("tools of %r are not offered now: %s", name, exc)
                continue
            for spec in tools:
                if spec.name in self.skills:
                    log.warning(
                        "tool %r of %r is hidden by a plugin skill of the same name",
                        spec.name,
                        name,
                    )
                    continue
                found.append(spec)
        return found

    def names(self, tenant: str | None) -> list[str]:
        """The names of the skills ``tenant`` may use (providers' tools are listed per turn)."""
        patterns = self.allowed_patterns(tenant)
        return sorted(
            name for name in self.skills if any(fnmatch.fnmatchcase(name, p) for p in patterns)
        )
