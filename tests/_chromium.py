"""Headless Chromium driven over the DevTools protocol (CDP) on trio-websocket: just enough to
open a page, evaluate script in it and wait for what it shows.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``); nothing is downloaded. It is
started with the flags that keep it quiet on a closed network and a fresh profile, and closed
(then killed, if it lingers) when the context exits.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

__all__ = ["CHROMIUM", "BrowserError", "Page", "chromium_path", "open_page"]

CHROMIUM = "/usr/bin/chromium"

QUIET_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-breakpad",
    "--disable-dev-shm-usage",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--autoplay-policy=no-user-gesture-required",
)


class BrowserError(Exception):
    """The page threw, a DevTools call failed, or the browser did not start."""


def chromium_path() -> str | None:
    """Debian's Chromium, if installed."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium")


class DevTools:
    """One DevTools WebSocket: commands by id, events routed to the page they concern."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self.pages: dict[str, Page] = {}

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, session_id: str | None = None
    ) -> dict[str, Any]:
        """Send one command (to the browser, or to the page of ``session_id``); its result.

        Raises:
            BrowserError: the command failed.
        """
        command_id = next(self._ids)
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._waiting[command_id] = send
        message: dict[str, Any] = {"id": command_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        try:
            await self._ws.send_message(json.dumps(message))
            reply = await receive.receive()
        finally:
            del self._waiting[command_id]
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def read(self) -> None:
        """Route every message that arrives (run it in a task of its own), until the browser
        closes the connection."""
        while True:
            try:
                text = await self._ws.get_message()
            except ConnectionClosed:
                return
            message = json.loads(text)
            if "id" in message:
                channel = self._waiting.get(message["id"])
                if channel is not None:
                    channel.send_nowait(message)
                continue
            page = self.pages.get(message.get("sessionId", ""))
            if page is not None:
                page.on_event(message.get("method", ""), message.get("params", {}))

    async def open_page(self) -> Page:
        """A new tab, attached through a flat session, with page and runtime events on."""
        target = await self.call("Target.createTarget", {"url": "about:blank"})
        attached = await self.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, attached["sessionId"])
        self.pages[page.session_id] = page
        await page.call("Page.enable")
        await page.call("Runtime.enable")
        return page


class Page:
    """One tab."""

    def __init__(self, devtools: DevTools, session_id: str) -> None:
        self._devtools = devtools
        self.session_id = session_id
        self._load_events: list[trio.Event] = []
        self.console: collections.deque[str] = collections.deque(maxlen=200)
        """The page's console lines and uncaught exceptions, for failure messages."""

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One DevTools command to this page.

        Raises:
            BrowserError: the command failed.
        """
        return await self._devtools.call(method, params, session_id=self.session_id)

    async def evaluate(self, expression: str, *, user_gesture: bool = False) -> Any:
        """The value of ``expression`` in the page (a promise is awaited), as JSON.

        ``user_gesture``: run it as if the user had clicked (audio may start).

        Raises:
            BrowserError: it threw.
        """
        result = await self.call(
            "Runtime.evaluate",
            {
                "expression": expression,
                "awaitPromise": True,
                "returnByValue": True,
                "userGesture": user_gesture,
            },
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"{expression[:80]!r} threw: {text}")
        return result["result"].get("value")

    async def navigate(self, url: str) -> None:
        """Open ``url`` and return once its load event fired."""
        loaded = trio.Event()
        self._load_events.append(loaded)
        reply = await self.call("Page.navigate", {"url": url})
        if reply.get("errorText"):
            raise BrowserError(f"{url}: {reply['errorText']}")
        await loaded.wait()

    async def wait_for(self, condition: str, *, poll_ms: int = 50) -> Any:
        """The first truthy value of the expression ``condition``, polled in the page (bound
        the wait with ``trio.fail_after``)."""
        return await self.evaluate(
            "new Promise((resolve) => { const check = () => { let value; "
            f"try {{ value = ({condition}); }} catch (e) {{ value = undefined; }} "
            f"if (value) resolve(value); else setTimeout(check, {poll_ms}); }}; check(); }})"
        )

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.loadEventFired":
            events, self._load_events = self._load_events, []
            for event in events:
                event.set()
        elif method == "Runtime.consoleAPICalled":
            values = [a.get("value", a.get("description", "")) for a in params.get("args", [])]
            self.console.append(f"console.{params.get('type')}: " + " ".join(map(str, values)))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            self.console.append(f"uncaught: {text}")


async def _devtools_url(stderr: trio.abc.ReceiveStream, lines: collections.deque[str]) -> str:
    """Read Chromium's stderr up to its "DevTools listening on ws://..." line."""
    buffer = b""
    while True:
        chunk = await stderr.receive_some(65536)
        if not chunk:
            raise BrowserError("chromium exited before listening:\n" + "\n".join(lines))
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            if line.startswith("DevTools listening on "):
                return line.removeprefix("DevTools listening on ").strip()


async def _drain(stream: trio.abc.ReceiveStream, lines: collections.deque[str]) -> None:
    """Keep reading ``stream`` (so the browser never blocks on a full pipe), last lines kept."""
    while chunk := await stream.receive_some(65536):
        lines.extend(chunk.decode("utf-8", "replace").splitlines())


@asynccontextmanager
async def open_page(
    args: Sequence[str] = (), *, executable: str = CHROMIUM
) -> AsyncIterator[tuple[Page, collections.deque[str]]]:
    """Start headless Chromium with :data:`QUIET_FLAGS` plus ``args`` and a fresh profile, and
    yield one blank page and the browser's last stderr lines. On exit the browser is asked to
    close, and killed if it has not within 10 s."""
    stderr_lines: collections.deque[str] = collections.deque(maxlen=200)
    with tempfile.TemporaryDirectory(prefix="scaivoice-chromium-") as profile:
        command = [
            executable,
            *QUIET_FLAGS,
            *args,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "about:blank",
        ]
        process = await trio.lowlevel.open_process(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            async with trio.open_nursery() as nursery:
                assert process.stderr is not None
                with trio.fail_after(30):
                    url = await _devtools_url(process.stderr, stderr_lines)
                nursery.start_soon(_drain, process.stderr, stderr_lines)
                async with open_websocket_url(url, max_message_size=64 * 1024 * 1024) as ws:
                    devtools = DevTools(ws)
                    nursery.start_soon(devtools.read)
                    page = await devtools.open_page()
                    yield page, stderr_lines
                    with trio.move_on_after(5):
                        await devtools.call("Browser.close")
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(10) as waited:
                    await process.wait()
                if waited.cancelled_caught:
                    process.kill()
                    await process.wait()
