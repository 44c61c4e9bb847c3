"""The browser client (``/client/scaivoice.js``) and the playground (``/playground``): how the
server serves them, and the playground in headless Chromium against the real server.

The Chromium tests use Debian's ``chromium`` (``.ci/run`` installs it) over the DevTools protocol
(tests/_chromium.py): a fake microphone fed from a WAV file of a question spoken by hibari, the
page's own Web Audio graph for the agent's audio (a tap counts the samples it renders).
"""

from __future__ import annotations

import os
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from scaivoice.engine import (
    PluginHost,
    RunningServer,
    config_from_mapping,
    float_to_pcm16,
    hash_key,
    serve,
)
from scaivoice.engine.testing import test_engine_config

from ._chromium import BrowserError, Page, chromium_path, open_page
from .conftest import host_with

QUESTION = "What is the capital of France?"
KEYS = {"tenants": {"acme": {"keys": [{"id": "acme-1", "hash": hash_key("sk-test-acme")}]}}}
STABLE_IDS = ("start", "stop", "state", "transcript-final", "agent-text")


@asynccontextmanager
async def running_server(
    doc: dict[str, Any], host: PluginHost | None = None
) -> AsyncIterator[RunningServer]:
    config = config_from_mapping(doc)
    if host is None:
        host = PluginHost()
        host.load_entry_points(include_third_party=False)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(serve, config, host, shutdown_trigger=trio.sleep_forever)
        )
        yield server
        nursery.cancel_scope.cancel()


def on_test_backends(overrides: dict[str, Any] | None = None) -> Any:
    """The real server on the deterministic test backends."""
    doc = test_engine_config({"server": {"port": 0}, **(overrides or {})})
    return running_server(doc, host_with())


# ---------------------------------------------------------------- serving


async def test_the_client_module_is_served_with_validators_and_cors() -> None:
    async with on_test_backends() as server, httpx.AsyncClient(base_url=server.url) as http:
        first = await http.get("/client/scaivoice.js")
        etag = first.headers["etag"]
        again = await http.get("/client/scaivoice.js", headers={"If-None-Match": etag})
        weak = await http.get("/client/scaivoice.js", headers={"If-None-Match": f'"x", W/{etag}'})
        other = await http.get("/client/scaivoice.js", headers={"If-None-Match": '"other"'})
        posted = await http.post("/client/scaivoice.js")
    assert first.status_code == 200
    assert first.headers["content-type"] == "text/javascript; charset=utf-8"
    assert first.headers["cache-control"] == "public, max-age=600"
    assert first.headers["access-control-allow-origin"] == "*"  # other origins may import it
    assert first.headers["x-content-type-options"] == "nosniff"
    assert "export class ScaiVoiceClient extends EventTarget" in first.text
    assert int(first.headers["content-length"]) == len(first.content)
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    assert weak.status_code == 304
    assert (other.status_code, other.content) == (200, first.content)
    assert posted.status_code == 405


@pytest.mark.parametrize(
    ("overrides", "served"),
    [
        ({}, True),  # open mode (loopback only): on by default
        (KEYS, False),  # credentials configured: off by default
        ({**KEYS, "server": {"port": 0, "playground": True}}, True),
        ({"server": {"port": 0, "playground": False}}, False),
    ],
    ids=["open-mode", "keys", "keys-enabled", "open-mode-disabled"],
)
async def test_the_playground_is_served_only_when_enabled(
    overrides: dict[str, Any], served: bool
) -> None:
    async with (
        on_test_backends(overrides) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        response = await http.get("/playground")
    if not served:
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
        return
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    for element in STABLE_IDS:
        assert f'id="{element}"' in response.text
    assert 'from "./client/scaivoice.js"' in response.text


# ---------------------------------------------------------------- Chromium


def _chromium() -> str:
    """Debian's Chromium; CI must have it (``.ci/run`` installs it as root)."""
    path = chromium_path()
    if path is None:
        reason = "Debian's chromium is not installed (as root: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; .ci/run installs it in CI")
        pytest.skip(reason)
    return path


def _write_wav(path: Path, pcm: bytes, rate: int) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)


def _microphone(wav: Path) -> list[str]:
    """Flags for a fake microphone playing ``wav`` once (then silence), allowed without asking."""
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
    ]


async def _failure_context(page: Page) -> str:
    """What the page showed, for an assertion's message."""
    try:
        with trio.move_on_after(5):
            shown = await page.evaluate(
                "JSON.stringify({state: document.querySelector('#state').textContent, "
                "log: document.querySelector('#log').textContent, "
                "playback: window.playground.client && window.playground.client.playback})"
            )
            return f"page: {shown}\nconsole: {list(page.console)}"
    except BrowserError as exc:
        return f"page unreadable: {exc}"
    return "page did not answer"


@pytest.mark.slow
async def test_the_playground_in_chromium_hears_the_question_and_plays_the_answer(
    tmp_path: Path,
) -> None:
    """The embedded models behind the real server; the playground in headless Chromium with a
    fake microphone saying a question, then silence (the server ends the turn by itself)."""
    chromium = _chromium()
    hibari = pytest.importorskip("hibari")
    pytest.importorskip("faster_whisper")
    pytest.importorskip("xllamacpp")
    speech = float_to_pcm16(hibari.Hibari()(QUESTION, seed=0))
    silence = b"\0\0" * 24000
    wav = tmp_path / "question.wav"
    _write_wav(wav, silence + speech + silence * 8, 24000)
    doc = {"server": {"port": 0}, "backends": {"options": {"llama-cpp": {"max_tokens": 30}}}}

    async with (
        running_server(doc) as server,
        open_page(_microphone(wav), executable=chromium) as (
            page,
            _,
        ),
    ):
        await page.navigate(server.url + "/playground")
        try:
            await page.evaluate("document.querySelector('#start').click()", user_gesture=True)
            await page.evaluate(
                "window.reports = []; window.playground.client.addEventListener("
                "'playback', (e) => window.reports.push(e.detail))"
            )
            with trio.fail_after(240):
                heard = await page.wait_for(
                    "document.querySelector('#transcript-final').textContent"
                )
                said = await page.wait_for("document.querySelector('#agent-text').textContent")
                # A quarter of a second of the reply rendered audibly by the page's Web Audio.
                await page.wait_for(
                    "window.playground.client.playback.audibleSamples > "
                    "window.playground.client.playback.sampleRate / 4"
                )
                reports = await page.wait_for(
                    "window.reports.some((r) => r.played_ms > 0) && window.reports"
                )
                metrics = await page.wait_for(
                    "Array.from(document.querySelectorAll('#metrics tr'), "
                    "(row) => Array.from(row.cells, (c) => c.textContent))[0]"
                )
            playback = await page.evaluate("window.playground.client.playback")
            timings = await page.evaluate("window.playground.timings")
            await page.evaluate("document.querySelector('#stop').click()")
            with trio.fail_after(10):
                await page.wait_for("document.querySelector('#state').textContent === 'closed'")
        except (trio.TooSlowError, BrowserError) as exc:
            raise AssertionError(f"{exc!r}\n{await _failure_context(page)}") from exc

    words = heard.lower()
    assert "capital" in words and "france" in words, heard
    assert said.strip(), said
    assert playback["peak"] > 0.05
    assert reports[0]["turn_id"] == 1
    turn, _stt, _llm, _tts, end_to_audio, *_ = metrics
    assert turn == "1"
    print(
        f"\npage load -> first agent audio: {playback['firstAudibleAt']:.0f} ms; "
        f"click -> first agent audio: {playback['firstAudibleAt'] - timings['started']:.0f} ms; "
        f"end of turn -> first audio (server): {end_to_audio} ms; heard {heard!r}; said {said!r}"
    )


@pytest.mark.slow
async def test_the_client_drops_its_queued_audio_at_once_when_interrupted(
    tmp_path: Path,
) -> None:
    """A long reply on the test backends, cut by a newer typed turn: at ``state: interrupted``
    nothing of it is left scheduled in the page."""
    chromium = _chromium()
    wav = tmp_path / "silence.wav"
    _write_wav(wav, b"\0\0" * 16000 * 2, 16000)
    story = "Once upon a time there was a very patient little dragon who counted clouds. " * 4

    async with (
        on_test_backends() as server,
        open_page(_microphone(wav), executable=chromium) as (
            page,
            _,
        ),
    ):
        await page.navigate(server.url + "/playground")
        try:
            await page.evaluate("document.querySelector('#start').click()", user_gesture=True)
            with trio.fail_after(30):
                await page.wait_for("window.playground.client && window.playground.client.active")
                await page.evaluate(
                    "window.seen = []; window.playground.client.addEventListener('state', (e) => "
                    "{ if (e.detail.state === 'interrupted') window.seen.push("
                    "{turn: e.detail.turn_id, ...window.playground.client.playback}); });"
                    "window.spoken = []; window.playground.client.addEventListener("
                    "'agent.audio.start', (e) => window.spoken.push(e.detail.turn_id))"
                )
                await page.evaluate(f"window.playground.client.sendText({story!r})")
                await page.wait_for(
                    "window.playground.client.playback.audibleSamples > 0 && "
                    "window.playground.client.playback.queuedMs > 0"
                )
                await page.evaluate("window.playground.client.sendText('Stop.')")
                seen = await page.wait_for("window.seen.length && window.seen")
                spoken = await page.evaluate("window.spoken")
        except (trio.TooSlowError, BrowserError) as exc:
            raise AssertionError(f"{exc!r}\n{await _failure_context(page)}") from exc

    assert seen[0]["turn"] == spoken[0]  # the story's turn
    assert seen[0]["queuedMs"] == 0
    assert seen[0]["receivedMs"] > 0
