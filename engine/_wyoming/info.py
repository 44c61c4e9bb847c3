"""What ``describe`` answers: the engine's recogniser, its voice library and its wake words, as
the ``wyoming`` package's :class:`~wyoming.info.Info` record."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    Info,
    TtsProgram,
    TtsVoice,
    WakeModel,
    WakeProgram,
)

from .._contract.features import SessionFeature
from .._host.engine import Engine

__all__ = ["PROGRAM", "WAKE_FEATURE_KEY", "describe", "wake_feature", "wake_keywords"]

PROGRAM = "scaivoice"
"""The program name of each service (``asr``, ``tts``, ``wake``) in ``info``."""
WAKE_FEATURE_KEY = "wake_word_enabled"
"""The session config key of the server-side wake-word feature."""

_ATTRIBUTION = Attribution(name="ScaiVoice", url="https://github.com/scaivoice/scaivoice")


def _version() -> str | None:
    try:
        return version("scaivoice")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        return None


def wake_feature(engine: Engine) -> SessionFeature | None:
    """The server-side wake-word feature, when it is installed and open."""
    entry = engine.features.get(WAKE_FEATURE_KEY)
    return None if entry is None else entry[1]


def wake_keywords(feature: SessionFeature) -> tuple[str, ...]:
    """The keywords the wake-word feature offers (its ``keywords`` attribute)."""
    return tuple(str(k) for k in getattr(feature, "keywords", ()))


def _phrase(feature: SessionFeature, keyword: str) -> str:
    phrase = getattr(feature, "phrase", None)
    if callable(phrase):
        return str(phrase(keyword))
    return keyword.replace("_", " ").title()


def asr_languages(engine: Engine) -> list[str]:
    """The recogniser's languages; when it declares none, the default session language."""
    declared = list(engine.stt.capabilities.languages)
    if declared:
        return declared
    default = engine.config.session_defaults(None).language
    return [default] if default else ["en"]


def describe(engine: Engine) -> Info:
    """The ``info`` answer for ``engine`` now (the voice library fills in as backends open)."""
    release = _version()
    stt = engine.stt
    asr = AsrProgram(
        name=PROGRAM,
        attribution=_ATTRIBUTION,
        installed=True,
        description=f"ScaiVoice speech recognition ({stt.name})",
        version=release,
        models=[
            AsrModel(
                name=stt.name,
                attribution=_ATTRIBUTION,
                installed=True,
                description=f"the {stt.name!r} recogniser",
                version=release,
                languages=asr_languages(engine),
            )
        ],
        supports_transcript_streaming=stt.capabilities.interim_results,
    )
    voices = [
        TtsVoice(
            name=entry.id,
            attribution=_ATTRIBUTION,
            installed=True,
            description=f"{entry.voice.name} ({entry.backend})",  # what a voice picker shows
            version=release,
            languages=[entry.voice.language],
            speakers=None,
        )
        for entry in engine.voices.values()
    ]
    tts = TtsProgram(
        name=PROGRAM,
        attribution=_ATTRIBUTION,
        installed=True,
        description=f"ScaiVoice speech synthesis ({', '.join(engine.tts)})",
        version=release,
        voices=voices,
        supports_synthesize_streaming=True,
    )
    info = Info(asr=[asr], tts=[tts])
    feature = wake_feature(engine)
    keywords = wake_keywords(feature) if feature is not None else ()
    if feature is not None and keywords:
        info.wake = [
            WakeProgram(
                name=PROGRAM,
                attribution=_ATTRIBUTION,
                installed=True,
                description="ScaiVoice server-side wake word",
                version=release,
                models=[
                    WakeModel(
                        name=keyword,
                        attribution=_ATTRIBUTION,
                        installed=True,
                        description=_phrase(feature, keyword),
                        version=release,
                        languages=["en"],
                        phrase=_phrase(feature, keyword),
                    )
                    for keyword in keywords
                ],
            )
        ]
    return info
