"""The state a run shares between checks: the target, its credentials, the speech fixture,
whether the server is open, and every stream recorded (for the frame-shape check)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from .fixtures import SpeechFixture, speech_fixture
from .options import SuiteOptions
from .outcome import Failed
from .session import LiveSession, start_session
from .wire import Connection, Credentials, Received, ServerGone, open_connection

__all__ = ["SuiteContext"]


class SuiteContext:
    """Shared by the checks of one run."""

    def __init__(self, url: str, options: SuiteOptions) -> None:
        self.url = url
        self.options = options
        if options.api_key:
            self.credentials = Credentials(api_key=options.api_key)
        else:
            self.credentials = Credentials(token=options.token)
        self.recordings: list[list[Received]] = []
        self.cache: dict[str, Any] = {}
        self._open: bool | None = None
        self._fixture: SpeechFixture | None = options.speech

    # ---------------------------------------------------------------- fixtures

    def fixture(self, sample_rate: int = 16000) -> SpeechFixture:
        """The utterance to speak, at ``sample_rate``."""
        if self._fixture is None:
            self._fixture = speech_fixture(synthetic=self.options.synthetic_speech)
        return self._fixture.at_rate(sample_rate)

    @property
    def fixture_source(self) -> str:
        return self.fixture().source

    # ---------------------------------------------------------------- connections

    @asynccontextmanager
    async def connect(
        self, label: str, credentials: Credentials | None = None
    ) -> AsyncIterator[Connection]:
        """A raw connection (no ``session.start`` sent); its frames are recorded."""
        async with open_connection(
            self.url,
            self.credentials if credentials is None else credentials,
            label=label,
            connect_timeout=self.options.frame_timeout_s * 2,
        ) as conn:
            self.recordings.append(conn.items)
            yield conn

    @asynccontextmanager
    async def session(
        self, label: str, config: Mapping[str, Any] | None = None
    ) -> AsyncIterator[LiveSession]:
        """A started session (``session.started``, warnings and ``state: idle`` read)."""
        async with self.connect(label) as conn:
            live = await start_session(self, conn, config)
            yield live

    async def server_is_open(self) -> bool:
        """Whether the server opens sessions without credentials (decided once per run)."""
        if self._open is None:
            async with self.connect("open-probe", Credentials()) as conn:
                await conn.send({"type": "session.start", "protocol": 1})
                try:
                    first = await conn.expect(
                        "session.started or a refusal",
                        lambda i: i.type in ("session.started", "error"),
                        self.options.frame_timeout_s,
                    )
                except ServerGone:
                    self._open = False
                except Failed as exc:
                    raise Failed(f"probing for credentials: {exc}") from None
                else:
                    self._open = first.type == "session.started"
                    if self._open:
                        await conn.send({"type": "session.end"})
                        with trio.move_on_after(self.options.frame_timeout_s):
                            await conn.until_closed(self.options.frame_timeout_s)
        return self._open
