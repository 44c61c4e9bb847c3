"""Credentials: refusals are an error frame and a close code (§1), and session tokens."""

from __future__ import annotations

import httpx

from .. import spec
from ..context import SuiteContext
from ..outcome import Failed, Notes, Skipped
from ..registry import check
from ..session import start_session
from ..wire import Credentials, ServerGone, http_base


async def _expect_refusal(
    ctx: SuiteContext, credentials: Credentials, what: str, notes: Notes
) -> None:
    timeout = ctx.options.frame_timeout_s
    async with ctx.connect(f"refusal: {what}", credentials) as conn:
        await conn.send({"type": "session.start", "protocol": spec.PROTOCOL_VERSION})
        try:
            first = await conn.expect(f"the refusal of {what}", lambda i: not i.binary, timeout)
        except ServerGone:
            notes.violation(
                f"{what}: closed with {conn.close_code} without an error frame (§1: one error "
                "frame, then the close)"
            )
            return
        if first.type == "session.started":
            notes.violation(f"{what}: the session was accepted (session.started)")
            return
        if first.type != "error" or first.get("code") != "unauthorized":
            notes.violation(f"{what}: got {first.describe()}, expected error unauthorized (§1)")
        elif first.get("fatal") is not True:
            notes.violation(f"{what}: error unauthorized is not marked fatal: true (§1)")
        mark = len(conn.items)
        if not await conn.until_closed(timeout):
            notes.violation(f"{what}: the connection was not closed within {timeout:g} s")
        elif conn.close_code != spec.CLOSE_CODES["unauthorized"]:
            notes.violation(f"{what}: closed with {conn.close_code}, expected 4401 (§1, §8)")
        extra = [i.type for i in conn.items[mark:] if i.type != "session.ended"]
        if extra:
            notes.violation(f"{what}: after the refusal came {', '.join(extra)}")


@check(
    "auth.no_credentials",
    "no credentials: error unauthorized (fatal), close 4401",
    "§1 connecting, §8 4401",
)
async def no_credentials(ctx: SuiteContext, notes: Notes) -> None:
    if await ctx.server_is_open():
        raise Skipped("the server opens sessions without credentials (an open server)")
    await _expect_refusal(ctx, Credentials(), "a connection without credentials", notes)


@check(
    "auth.bad_credentials",
    "an unknown API key, a forged or malformed token: error unauthorized, close 4401",
    "§1 connecting, §8 4401",
)
async def bad_credentials(ctx: SuiteContext, notes: Notes) -> None:
    if await ctx.server_is_open():
        raise Skipped("the server opens sessions without credentials (an open server)")
    for credentials, what in (
        (Credentials(api_key="sk-conformance-not-a-key"), "an unknown API key"),
        (Credentials(token="sv1.Y29uZm9ybWFuY2U.Zm9yZ2Vk"), "a forged session token"),
        (Credentials(token="not-a-token"), "a malformed session token"),
    ):
        await _expect_refusal(ctx, credentials, what, notes)


@check(
    "auth.session_token",
    "POST /v1/session-tokens with the API key mints a token that opens a session",
    "§1 connecting",
)
async def session_token(ctx: SuiteContext, notes: Notes) -> None:
    key = ctx.options.api_key
    if not key:
        raise Skipped("needs an API key (--api-key) to mint a session token")
    if await ctx.server_is_open():
        raise Skipped("the server opens sessions without credentials (an open server)")
    endpoint = http_base(ctx.url) + "/v1/session-tokens"
    try:
        async with httpx.AsyncClient(timeout=ctx.options.frame_timeout_s) as http:
            response = await http.post(endpoint, headers={"Authorization": f"Bearer {key}"})
    except httpx.HTTPError as exc:
        raise Failed(f"POST {endpoint} failed: {exc}") from None
    if response.status_code != 201:
        raise Failed(f"POST /v1/session-tokens answered {response.status_code}, expected 201")
    try:
        doc = response.json()
    except ValueError:
        raise Failed("POST /v1/session-tokens did not answer JSON") from None
    token = doc.get("token") if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token:
        raise Failed(f"POST /v1/session-tokens answered {doc!r} without a token")
    for field, kinds in (
        ("expires_at", (int, float)),
        ("expires_in", (int, float)),
        ("url", (str,)),
    ):
        if not isinstance(doc.get(field), kinds):
            notes.violation(f"the token document has {field} {doc.get(field)!r}")
    if isinstance(doc.get("url"), str) and "token=" not in doc["url"]:
        notes.violation(f"the token document's url {doc['url']!r} carries no token")
    notes.note(f"token valid for {doc.get('expires_in')} s")
    async with ctx.connect("token session", Credentials(token=token)) as conn:
        await start_session(ctx, conn)
        await conn.send({"type": "session.end"})
        await conn.until_closed(ctx.options.frame_timeout_s)
