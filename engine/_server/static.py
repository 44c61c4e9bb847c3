"""The browser client and the playground: files shipped in the package (``web/``), served with
validators and caching headers.

Routes::

    GET /client/scaivoice.js   the ES module (any origin may import it: CORS ``*``)
    GET /playground            the playground page, when ``[server] playground`` allows it

Each file is read once, when the app is built; its ETag is a digest of its bytes, so a request
with a matching ``If-None-Match`` is answered 304 without a body.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from .._host.config import EngineConfig
from .http import Scope, Send, header

__all__ = ["CLIENT_PATH", "PLAYGROUND_PATH", "StaticFile", "WebAssets", "playground_enabled"]

CLIENT_PATH = "/client/scaivoice.js"
PLAYGROUND_PATH = "/playground"


@dataclass(frozen=True, slots=True)
class StaticFile:
    """One file as it is served."""

    body: bytes
    content_type: str
    cache_control: str
    cors: bool = False
    """``Access-Control-Allow-Origin: *``: pages of other origins may load it (a module script
    from another origin needs CORS)."""

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'

    @classmethod
    def packaged(
        cls, name: str, content_type: str, cache_control: str, *, cors: bool = False
    ) -> StaticFile:
        """``web/<name>`` of this package."""
        body = resources.files(__package__).joinpath("web", name).read_bytes()
        return cls(body, content_type, cache_control, cors)


def playground_enabled(config: EngineConfig) -> bool:
    """Whether ``/playground`` is served: ``[server] playground``; unset, only in open mode
    (no credential configured, which the server allows on loopback only)."""
    setting = config.server.playground
    return config.open_mode if setting is None else setting


@dataclass(frozen=True, slots=True)
class WebAssets:
    """The files the app serves to browsers."""

    client: StaticFile
    playground: StaticFile | None
    """``None`` when the playground is off (its path is then an unknown route: 404)."""

    @classmethod
    def load(cls, config: EngineConfig) -> WebAssets:
        client = StaticFile.packaged(
            "scaivoice.js", "text/javascript; charset=utf-8", "public, max-age=600", cors=True
        )
        playground = None
        if playground_enabled(config):
            playground = StaticFile.packaged(
                "playground.html", "text/html; charset=utf-8", "no-cache"
            )
        return cls(client, playground)


async def send_static(scope: Scope, send: Send, file: StaticFile) -> None:
    """Answer a GET of ``file``: 200 with the body, or 304 when ``If-None-Match`` matches."""
    etag = file.etag
    headers = [
        (b"etag", etag.encode()),
        (b"cache-control", file.cache_control.encode()),
        (b"x-content-type-options", b"nosniff"),
    ]
    if file.cors:
        headers.append((b"access-control-allow-origin", b"*"))
    if _matches(header(scope, b"if-none-match"), etag):
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    headers += [
        (b"content-type", file.content_type.encode()),
        (b"content-length", str(len(file.body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": file.body})


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 13.1.2: ``*`` or any listed tag, compared weakly (a ``W/`` prefix is ignored)."""
    if if_none_match is None:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False
