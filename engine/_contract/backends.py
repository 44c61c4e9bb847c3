"""What a backend is: the base classes and the records that cross the backend boundary.

A backend is created once per engine (models are loaded once per process and shared by every
session), opened with ``async with`` and used concurrently by many sessions. Every streaming
method follows one shape: input arrives on a ``trio`` receive channel or as a request record,
output goes into a send channel that the backend *owns and closes* (``async with out:``). So a
backend never needs to know who consumes its output, and cancelling the call (the caller's
cancel scope: barge-in, a deadline) stops it at its next checkpoint.

Blocking work (onnxruntime, CTranslate2, llama.cpp) belongs in
``trio.to_thread.run_sync(fn, limiter=...)`` in chunks small enough that cancellation is prompt.
Failures are raised as :class:`~scaivoice.engine.BackendError` subclasses, chained ``from`` the
original exception.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

import msgspec
import trio

from .._errors import ConfigError
from .resource import Resource

if TYPE_CHECKING:
    from .tools import ToolCall, ToolDefinition

__all__ = [
    "API_VERSION",
    "AudioChunk",
    "Backend",
    "BackendKind",
    "BackendOptions",
    "BackendSpec",
    "ChatMessage",
    "LlmBackend",
    "LlmCapabilities",
    "LlmRequest",
    "NormaliseRequest",
    "NormaliserBackend",
    "NormaliserCapabilities",
    "SttBackend",
    "SttCapabilities",
    "SttRequest",
    "Transcript",
    "TtsBackend",
    "TtsCapabilities",
    "TtsRequest",
    "Voice",
    "Word",
]

#: The backend API version this engine speaks. Spec records carry the version they were written
#: against; the host refuses records from a newer, unknown version.
API_VERSION = 1

BackendKind = Literal["stt", "llm", "tts", "normaliser"]


class BackendOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base for a backend's options. Subclass it; unknown keys are rejected.

    Repeat ``frozen=True`` in the subclass (type checkers need it to see a frozen record).

    Example::

        class Options(BackendOptions, frozen=True):
            model: str = "tiny.en"
            threads: int = 2
    """

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, backend: str) -> Self:
        """Validate ``values`` (a TOML table, CLI ``k=v`` pairs) into options.

        Also used by session features for their option tables (``backend`` is then the
        feature's name).

        Raises:
            ConfigError: unknown keys or values of the wrong type, naming the backend.
        """
        try:
            return msgspec.convert(dict(values), cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"invalid options for {backend!r}: {exc}") from exc


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A piece of mono PCM16LE audio."""

    pcm: bytes
    sample_rate: int

    @property
    def duration_ms(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate * 1000.0


@dataclass(frozen=True, slots=True)
class Word:
    """A recognised word with its timing relative to the start of the utterance."""

    text: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class Transcript:
    """An STT result. Interim results may change; exactly one final result ends a stream."""

    text: str
    final: bool
    start_ms: int = 0
    end_ms: int = 0
    words: tuple[Word, ...] = ()
    language: str | None = None
    stable: bool = False
    """On an interim: the backend would give this text as the final if the audio ended now
    (whisper sets it when its decode at a pause finishes). The engine may start the reply's
    language model early; a later interim that is not stable withdraws the guess."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation history.

    Tool traffic appears only in requests to a backend that declares ``tools``: an assistant
    message carrying ``tool_calls`` (its ``content`` is what the model said before calling),
    then one ``role="tool"`` message per call whose ``tool_call_id`` names the call and whose
    ``content`` is the result as text (JSON, or the failure told to the model).
    """

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class SttRequest:
    """What a session asks of an STT stream: PCM16LE mono at ``sample_rate``."""

    sample_rate: int = 16000
    language: str | None = None
    word_timings: bool = True
    """Whether the caller uses word timings; backends may skip computing them when not."""


@dataclass(frozen=True, slots=True)
class LlmRequest:
    """A chat completion request: the whole history, system prompt first."""

    messages: tuple[ChatMessage, ...]
    language: str | None = None
    max_tokens: int | None = None
    tools: tuple[ToolDefinition, ...] = ()
    """Tools the model may call (only for backends that declare ``tools``; see
    :meth:`LlmBackend.respond`)."""
    conversation_id: str | None = None
    """Stable for every request of one conversation (the session id): a backend may keep the
    conversation's prompt cache (KV cache) warm between its requests. Only a hint."""


@dataclass(frozen=True, slots=True)
class TtsRequest:
    """A synthesis request for one piece of text (usually a sentence or a clause).

    ``voice_id`` is the backend-local voice id (``"heart"``, not ``"hibari:heart"``), or ``None``
    for the backend's default. Options the backend does not declare in its capabilities are
    never passed (the engine warns the client instead).
    """

    text: str
    voice_id: str | None = None
    speed: float = 1.0
    instructions: str | None = None
    cfg_value: float | None = None
    language: str | None = None
    warmup_trim_ms: int = 0


@dataclass(frozen=True, slots=True)
class NormaliseRequest:
    """How to normalise text for speech."""

    language: str | None = None
    lexicon: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Voice:
    """A voice a TTS backend can speak with. ``id`` is backend-local."""

    id: str
    name: str
    language: str
    sample_rate: int
    description: str = ""


# --------------------------------------------------------------------------- capabilities


@dataclass(frozen=True, slots=True)
class SttCapabilities:
    """What an STT backend declares. The conformance kit checks what is declared."""

    streaming: bool = False
    interim_results: bool = False
    word_timings: bool = False
    languages: tuple[str, ...] = ()
    """BCP-47 languages recognised; ``()`` means not declared (any may work)."""
    sample_rates: tuple[int, ...] = (16000,)


@dataclass(frozen=True, slots=True)
class LlmCapabilities:
    """What an LLM backend declares."""

    streaming: bool = True
    system_prompt: bool = True
    tools: bool = False
    """The backend implements :meth:`LlmBackend.respond`: it reads ``LlmRequest.tools`` and
    tool messages, and answers with :class:`~scaivoice.engine.ToolCall` records."""


@dataclass(frozen=True, slots=True)
class TtsCapabilities:
    """What a TTS backend declares. Undeclared request options are not passed to it."""

    streaming: bool = False
    voices: bool = True
    speed: bool = False
    instructions: bool = False
    cfg_value: bool = False
    warmup_trim: bool = False
    languages: tuple[str, ...] = ()
    sample_rates: tuple[int, ...] = (24000,)


@dataclass(frozen=True, slots=True)
class NormaliserCapabilities:
    """What a normaliser declares."""

    languages: tuple[str, ...] = ()
    lexicon: bool = False


Capabilities = SttCapabilities | LlmCapabilities | TtsCapabilities | NormaliserCapabilities


# --------------------------------------------------------------------------- base classes


class Backend(Resource):
    """Base of every backend: an async context manager shared by all sessions of an engine.

    Subclasses set ``Options`` (a :class:`BackendOptions` subclass) and ``capabilities``, take
    their validated options in ``__init__`` (no I/O there) and load models in :meth:`open`.
    """

    Options: ClassVar[type[BackendOptions]] = BackendOptions
    name: str = ""

    async def check_health(self) -> None:
        """Return if the backend can serve now; raise a ``BackendError`` if not."""


class SttBackend(Backend):
    """Speech to text."""

    capabilities: ClassVar[SttCapabilities] = SttCapabilities()

    @abc.abstractmethod
    async def transcribe(
        self,
        request: SttRequest,
        audio: trio.MemoryReceiveChannel[bytes],
        results: trio.MemorySendChannel[Transcript],
    ) -> None:
        """Transcribe one utterance.

        Reads PCM16LE mono chunks from ``audio`` until it is closed (the user's turn ended),
        sends any interim :class:`Transcript` (``final=False``) while audio arrives, then
        exactly one final one, and closes ``results``. Cancelling stops the transcription and
        closes ``results``; the backend stays usable.
        """


class LlmBackend(Backend):
    """A chat language model."""

    capabilities: ClassVar[LlmCapabilities] = LlmCapabilities()

    @abc.abstractmethod
    async def generate(self, request: LlmRequest, deltas: trio.MemorySendChannel[str]) -> None:
        """Stream the assistant's reply to ``request`` as text deltas into ``deltas``, then close it.

        Cancelling stops generation at the next token (barge-in) and closes ``deltas``.
        """

    async def respond(
        self, request: LlmRequest, output: trio.MemorySendChannel[str | ToolCall]
    ) -> None:
        """Stream the reply as text deltas and tool calls into ``output``, then close it.

        A backend that declares ``capabilities.tools`` overrides this: it offers
        ``request.tools`` to the model and sends each call the model makes as one
        :class:`~scaivoice.engine.ToolCall` (whole, once its arguments are complete), text as
        ``str`` deltas; it accepts tool messages in ``request.messages``. The engine runs the
        calls and asks again with their results. The default relays :meth:`generate` (no tools).

        Cancelling stops generation at the next token (barge-in) and closes ``output``.
        """
        text_send, text_recv = trio.open_memory_channel[str](0)
        async with output, trio.open_nursery() as nursery:
            nursery.start_soon(self.generate, request, text_send)
            async with text_recv:
                async for delta in text_recv:
                    await output.send(delta)


class TtsBackend(Backend):
    """Text to speech."""

    capabilities: ClassVar[TtsCapabilities] = TtsCapabilities()

    async def list_voices(self) -> Sequence[Voice]:
        """The voices this backend can speak with (ids are backend-local)."""
        return ()

    @abc.abstractmethod
    async def synthesize(
        self, request: TtsRequest, audio: trio.MemorySendChannel[AudioChunk]
    ) -> None:
        """Synthesise ``request.text`` into ``audio`` as PCM16LE chunks, then close it.

        Chunks should be short (20-250 ms) so the engine can pace and stop them. Cancelling
        stops synthesis promptly and closes ``audio``.
        """


class NormaliserBackend(Backend):
    """Turns written text into speakable text ("3rd" -> "third")."""

    capabilities: ClassVar[NormaliserCapabilities] = NormaliserCapabilities()

    @abc.abstractmethod
    async def normalise(self, text: str, request: NormaliseRequest) -> str:
        """Return ``text`` rewritten for speech. Cancelling abandons the call."""


# --------------------------------------------------------------------------- spec record


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """What a plugin yields from a backend hook: a declaration, not an instance.

    Attributes:
        kind: ``"stt"``, ``"llm"``, ``"tts"`` or ``"normaliser"``.
        name: the name operators use in ``[backends]`` (``"whisper"``, ``"openai"``).
        factory: called with the operator's option table; returns an unopened backend. It
            must do no I/O: load models in ``Backend.open``.
        capabilities: what the backend declares it does.
        description: one line for ``scaivoice plugins``.
        api_version: the backend API version the plugin was written against.
    """

    kind: BackendKind
    name: str
    factory: Callable[[Mapping[str, Any]], Backend]
    capabilities: Capabilities
    description: str = ""
    api_version: int = API_VERSION

    @classmethod
    def for_class(
        cls,
        backend_class: type[SttBackend]
        | type[LlmBackend]
        | type[TtsBackend]
        | type[NormaliserBackend],
        *,
        name: str,
        description: str = "",
        api_version: int = API_VERSION,
    ) -> BackendSpec:
        """Build the spec of a backend class whose ``__init__`` takes its ``Options``.

        Pass ``api_version`` as the backend API version your plugin was written against (a
        constant in your code, not ``scaivoice.engine.API_VERSION``), so an older engine can
        refuse it clearly.

        The factory validates the operator's table with ``backend_class.Options`` and calls
        ``backend_class(options)``.
        """
        kind: BackendKind
        if issubclass(backend_class, SttBackend):
            kind = "stt"
        elif issubclass(backend_class, LlmBackend):
            kind = "llm"
        elif issubclass(backend_class, TtsBackend):
            kind = "tts"
        elif issubclass(backend_class, NormaliserBackend):
            kind = "normaliser"
        else:  # pragma: no cover - guarded by the type signature
            raise TypeError(f"{backend_class!r} is not a backend class")

        def factory(values: Mapping[str, Any]) -> Backend:
            options = backend_class.Options.from_mapping(values, backend=name)
            backend = backend_class(options)  # type: ignore[call-arg]
            backend.name = name
            return backend

        return cls(
            kind=kind,
            name=name,
            factory=factory,
            capabilities=backend_class.capabilities,
            description=description or _first_line(backend_class.__doc__),
            api_version=api_version,
        )


def _first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0] if lines else ""
