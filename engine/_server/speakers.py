"""The enrolment API of speaker recognition: ``/v1/speakers``.

Routes (all need ``scaivoice:admin``; in open mode on loopback the caller is the admin of the
one tenant ``default``)::

    POST   /v1/speakers               enrol: multipart ``file`` (one or more), ``speaker_id``,
                                      optional ``display_name`` and ``replace``
    GET    /v1/speakers               the tenant's enrolled speakers
    DELETE /v1/speakers/{speaker_id}  delete one, and its embedding, for good

A tenant only ever sees its own speakers: another tenant's id is "unknown". Enrolling needs the
tenant's opt-in (``speaker_recognition = true``); listing and deleting do not, so that a tenant
that withdrew its opt-in can still delete what it enrolled. The audio is decoded here (any
format the voice-note API reads) and handed to the feature that offers
:class:`~scaivoice.engine.SpeakerDirectory`; it is neither stored nor logged.

Problems (RFC 9457, with a stable ``code``): 400 for a refused enrolment (``audio_too_short``,
``no_speech``, ``invalid_speaker_id`` ...) or unreadable audio (``invalid_audio``), 403
``not_permitted`` without the opt-in, 404 ``unknown_speaker``, 409 ``speaker_exists``, 413
``audio_too_long``, 501 ``speaker_recognition_unavailable`` when no installed feature offers
enrolment, 503 with the same code while it is down.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import trio

from .._contract.features import EnrolledSpeaker, SpeakerDirectory
from .._errors import AudioDecodeError, BackendError, EnrolmentRejected
from .._host.auth import PERMISSION_ADMIN, Principal
from .._host.engine import Engine
from .._voicenotes.codecs import AudioTooLong, decode_audio_in_worker
from .http import FormPart, HttpProblem

__all__ = ["SPEAKERS", "SpeakersApi"]

SPEAKERS = "/v1/speakers"
_FEATURE_KEY = "speaker_recognition"
_MAX_CLIP_S = 120.0
_STATUS = {"unknown_speaker": 404, "speaker_exists": 409}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


class SpeakersApi:
    """Handlers for ``/v1/speakers`` of one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._codec_limiter = trio.CapacityLimiter(2)

    def directory(self) -> SpeakerDirectory:
        """The feature that keeps enrolments.

        Raises:
            HttpProblem: 501 when no installed feature offers enrolment, 503 while it is down.
        """
        entry = self.engine.features.get(_FEATURE_KEY)
        if entry is not None and isinstance(entry[1], SpeakerDirectory):
            return entry[1]
        specs = self.engine.host.feature_specs()
        spec = specs.get(_FEATURE_KEY)
        health = self.engine.feature_health()
        if spec is not None and spec.name in health:
            error = health[spec.name].get("error")
            raise HttpProblem(
                503,
                "speaker_recognition_unavailable",
                f"speaker recognition ({spec.name}) is down: {error}",
                retry_after=5,
            )
        raise HttpProblem(
            501,
            "speaker_recognition_unavailable",
            "this server has no speaker recognition feature installed",
        )

    async def enroll(
        self, principal: Principal, parts: list[FormPart], *, max_clip_bytes: int
    ) -> tuple[int, dict[str, Any]]:
        """``POST /v1/speakers``: enrol a speaker from the form's clips; (status, document).

        Raises:
            HttpProblem: see the module docstring.
        """
        principal.require(PERMISSION_ADMIN)
        directory = self.directory()
        tenant = self.engine.config.tenants.get(principal.tenant)
        if tenant is None or not tenant.speaker_recognition:
            raise HttpProblem(
                403,
                "not_permitted",
                f"tenant {principal.tenant!r} has not opted into speaker recognition "
                "(speaker_recognition = true in its configuration)",
            )
        fields = {part.name: part for part in parts if part.filename is None}
        files = [part for part in parts if part.name == "file" and part.filename is not None]
        if not files:
            raise HttpProblem(
                400, "missing_file", "send the audio as one or more multipart fields 'file'"
            )
        speaker_id = _text(fields, "speaker_id")
        if speaker_id is None:
            raise HttpProblem(400, "invalid_speaker_id", "the form needs a 'speaker_id'")
        replace_text = (_text(fields, "replace") or "").strip().lower()
        if replace_text not in _TRUE | _FALSE:
            raise HttpProblem(400, "invalid_request", "replace must be true or false")
        clips = [await self._decode(upload, max_clip_bytes) for upload in files]
        try:
            speaker = await directory.enroll(
                principal.tenant,
                speaker_id,
                clips,
                display_name=_text(fields, "display_name"),
                replace=replace_text in _TRUE,
            )
        except EnrolmentRejected as exc:
            raise _problem(exc) from exc
        except BackendError as exc:
            raise _unavailable(exc) from exc
        return 201, _document(speaker)

    async def speakers(self, principal: Principal) -> dict[str, Any]:
        """``GET /v1/speakers``: the tenant's speakers.

        Raises:
            HttpProblem: 501 / 503 ``speaker_recognition_unavailable``.
        """
        principal.require(PERMISSION_ADMIN)
        directory = self.directory()
        try:
            listed = await directory.speakers(principal.tenant)
        except BackendError as exc:
            raise _unavailable(exc) from exc
        return {"object": "list", "data": [_document(speaker) for speaker in listed]}

    async def forget(self, principal: Principal, path: str) -> dict[str, Any]:
        """``DELETE /v1/speakers/{speaker_id}``: delete a speaker for good.

        Raises:
            HttpProblem: 404 ``unknown_speaker``, 501 / 503 ``speaker_recognition_unavailable``.
        """
        principal.require(PERMISSION_ADMIN)
        speaker_id = urllib.parse.unquote(path[len(SPEAKERS) + 1 :])
        directory = self.directory()
        try:
            await directory.forget(principal.tenant, speaker_id)
        except EnrolmentRejected as exc:
            raise _problem(exc) from exc
        except BackendError as exc:
            raise _unavailable(exc) from exc
        return {"object": "speaker", "speaker_id": speaker_id, "deleted": True}

    async def _decode(self, upload: FormPart, max_bytes: int) -> bytes:
        name = upload.filename or "the file"
        if len(upload.data) > max_bytes:
            raise HttpProblem(413, "payload_too_large", f"{name}: larger than {max_bytes} bytes")
        timeout = self.engine.config.voice_notes.decode_timeout_s
        try:
            with trio.move_on_after(timeout) as deadline:
                return await decode_audio_in_worker(
                    upload.data, max_duration_s=_MAX_CLIP_S, limiter=self._codec_limiter
                )
        except AudioTooLong as exc:
            raise HttpProblem(413, "audio_too_long", f"{name}: {exc}") from exc
        except AudioDecodeError as exc:
            raise HttpProblem(400, "invalid_audio", f"{name}: {exc}") from exc
        assert deadline.cancelled_caught
        raise HttpProblem(
            422, "audio_decode_timeout", f"{name}: decoding took longer than {timeout:g} s"
        )


def _text(fields: dict[str, FormPart], name: str) -> str | None:
    part = fields.get(name)
    return None if part is None else part.text


def _document(speaker: EnrolledSpeaker) -> dict[str, Any]:
    return {
        "object": "speaker",
        "speaker_id": speaker.speaker_id,
        "display_name": speaker.display_name,
        "clips": speaker.clips,
        "enrolled_at": speaker.enrolled_at,
    }


def _problem(exc: EnrolmentRejected) -> HttpProblem:
    return HttpProblem(_STATUS.get(exc.code, 400), exc.code, str(exc))


def _unavailable(exc: BackendError) -> HttpProblem:
    return HttpProblem(
        503, "speaker_recognition_unavailable", f"speaker recognition failed: {exc}", retry_after=5
    )
