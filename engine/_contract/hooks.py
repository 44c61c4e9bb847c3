"""The hook specifications a ScaiVoice plugin implements.

Hooks are synchronous, do no I/O and take no arguments: each yields frozen spec records that
*declare* backends or features. Models are loaded later, when the engine opens a backend.
Implement them in a module named by an entry point of the ``scaivoice`` group::

    # pyproject.toml of your distribution
    [project.entry-points.scaivoice]
    my-tts = "my_package.plugin"

    # my_package/plugin.py
    from scaivoice.engine import BackendSpec, hookimpl

    @hookimpl
    def scaivoice_tts_backends():
        yield BackendSpec.for_class(MyTts, name="my-tts")

A hook may yield any number of records (or none). New arguments are only ever added as opt-in
parameters, so a plugin written for API version 1 keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from .backends import BackendSpec
from .features import FeatureSpec
from .identity import IdentityProviderSpec
from .tools import ToolSpec

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]

PROJECT_NAME = "scaivoice"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def scaivoice_stt_backends() -> Iterable[BackendSpec]:  # type: ignore[empty-body]
    """Declare speech-to-text backends.

    Example::

        @hookimpl
        def scaivoice_stt_backends():
            yield BackendSpec.for_class(MyStt, name="my-stt")

    .. versionadded:: 0.1 (backend API 1)
    """


@hookspec
def scaivoice_llm_backends() -> Iterable[BackendSpec]:  # type: ignore[empty-body]
    """Declare chat language-model backends.

    Example::

        @hookimpl
        def scaivoice_llm_backends():
            yield BackendSpec.for_class(MyLlm, name="my-llm")

    .. versionadded:: 0.1 (backend API 1)
    """


@hookspec
def scaivoice_tts_backends() -> Iterable[BackendSpec]:  # type: ignore[empty-body]
    """Declare text-to-speech backends.

    Example::

        @hookimpl
        def scaivoice_tts_backends():
            yield BackendSpec.for_class(MyTts, name="my-tts")

    .. versionadded:: 0.1 (backend API 1)
    """


@hookspec
def scaivoice_normalisers() -> Iterable[BackendSpec]:  # type: ignore[empty-body]
    """Declare text normalisers (written text -> speakable text).

    Example::

        @hookimpl
        def scaivoice_normalisers():
            yield BackendSpec.for_class(MyNormaliser, name="my-normaliser")

    .. versionadded:: 0.1 (backend API 1)
    """


@hookspec
def scaivoice_session_features() -> Iterable[FeatureSpec]:  # type: ignore[empty-body]
    """Declare session features (VAD, wake word, diarization, speaker recognition, tools).

    Example::

        @hookimpl
        def scaivoice_session_features():
            yield FeatureSpec(name="my-vad", config_key="vad_enabled", factory=MyVad)

    .. versionadded:: 0.1 (backend API 1)
    """


@hookspec
def scaivoice_identity_providers() -> Iterable[IdentityProviderSpec]:  # type: ignore[empty-body]
    """Declare identity providers (JWT verification, token introspection ...).

    Example::

        @hookimpl
        def scaivoice_identity_providers():
            yield IdentityProviderSpec(name="my-idp", factory=MyProvider)

    .. versionadded:: 0.1 (backend API 1)
    """


@hookspec
def scaivoice_tools() -> Iterable[ToolSpec]:  # type: ignore[empty-body]
    """Declare server skills: tools the language model may call, run by the engine.

    Example::

        @hookimpl
        def scaivoice_tools():
            yield ToolSpec(
                name="get_time",
                description="The current time in a time zone.",
                parameters={"type": "object", "properties": {"zone": {"type": "string"}}},
                handler=get_time,  # async def get_time(arguments, context) -> result
            )

    Operators choose which tenants may use which skills (``[tools] allow``,
    ``[tenants.NAME] tools``).

    .. versionadded:: 0.2 (backend API 1)
    """
