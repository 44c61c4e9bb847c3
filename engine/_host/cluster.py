"""State shared by every worker and replica through Redis (``[cluster] redis_url``).

What is shared: each tenant's concurrent sessions (slots held as leases) and request budget,
the session tokens that opened a session, and the admins' view of sessions (the session list
and the live events). Without ``redis_url`` there is no :class:`Cluster` and each process keeps
its own (the engine's ``SessionRegistry``, ``TenantRateLimiter`` and ``Authenticator``).

Keys (``P`` is ``key_prefix``, ``L`` is ``lease_s``; times are Redis's clock, in ms)::

    P sessions:{tenant}        sorted set: one member per live session, REPLICA/LEASE, scored
                               by its lease's expiry; renewed every L/3 by its replica; the key
                               expires 2 L after its last renewal
    P rate:{tenant}            hash tokens, ts: the tenant's request bucket (requests_per_minute
                               a minute, as many at once); expires once it would be full again
    P token:{sha256 of MAC}    a session token that opened a session; expires with the token
    P replicas                 sorted set: replica ids, scored by their heartbeat's expiry (L)
    P replica:{id}:sessions    hash tenant -> JSON list of that replica's session summaries
                               (live and recently ended); expires L after its last renewal
    P events:{tenant}          pub/sub channel: the tenant's live session events, as JSON

Admission is one Lua script: drop the tenant's expired leases, count, add one only below the
limit. A replica that dies stops renewing: its slots free themselves, and its sessions leave
the admin list, within ``L``; one that shuts down releases them at once.

Redis down (any command fails, or a pub/sub connection breaks): the cluster counts as down
(``/health``: ``cluster``), stops calling Redis on the request path, and a background task tries
it again (0.25 s, doubling up to 5 s). Meanwhile ``when_down = "local"`` enforces limits per
process (exactly as without Redis: a tenant may get up to one limit per process) and
``"refuse"`` refuses what a shared limit guards. Token single use is per process meanwhile.
When Redis answers again, every live session's lease and every summary is written again before
the cluster counts as up: no restart, no leaked or lost slots.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client import Counter, Gauge

from .._errors import LimitExceeded, Unauthorized
from .config import EngineConfig
from .limits import TenantRateLimiter
from .redis_link import Listener, RedisDown, RedisLink
from .upkeep import Backoff

if TYPE_CHECKING:
    from .telemetry import Telemetry

__all__ = ["Cluster", "SessionSlot"]

log = logging.getLogger("scaivoice.cluster")

_FLUSH_S = 0.2
"""Telemetry is written to Redis at most this often (what changes meanwhile goes in one batch)."""
_RELEASE_TIMEOUT_S = 2.0
_EVENT_BACKLOG = 4096
_TOO_MANY_RETRY_S = 5.0

# Redis's clock, in ms, inside a script (every replica agrees on it).
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

_ADMIT = (
    _NOW
    + """
-- KEYS[1] the tenant's slots; ARGV: member, limit (-1: none), lease ms
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local live = redis.call('ZCARD', KEYS[1])
local limit = tonumber(ARGV[2])
if limit >= 0 and live >= limit then
  return {0, live}
end
local lease = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2 * lease)
return {1, live + 1}
"""
)

_RENEW = (
    _NOW
    + """
-- KEYS[1] the tenant's slots; ARGV: lease ms, members...
local lease = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], 2 * lease)
return now
"""
)

_HEARTBEAT = (
    _NOW
    + """
-- KEYS[1] the replicas; KEYS[2] this replica's summaries; ARGV: replica id, lease ms
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2 * lease)
redis.call('PEXPIRE', KEYS[2], lease)
return now
"""
)

_REPLICAS = (
    _NOW
    + """
-- KEYS[1] the replicas: the ids whose heartbeat has not expired
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
"""
)

_TAKE = (
    _NOW
    + """
-- KEYS[1] the tenant's bucket; ARGV: tokens per ms, burst. Returns {taken, ms to wait}.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens, ts = burst, now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local taken, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate) + 1000)
return {taken, wait}
"""
)


class SessionSlot:
    """One of a tenant's concurrent sessions, held while the session runs.

    ``async with slot:`` releases it when the block ends; :meth:`release` is idempotent. A slot
    of an engine without ``[cluster]`` releases nothing: the session's registration is the
    slot there.
    """

    def __init__(self, release: Callable[[], Awaitable[None]] | None = None) -> None:
        self._release = release

    @property
    def shared(self) -> bool:
        """Whether the slot is held in Redis (and not released yet)."""
        return self._release is not None

    async def __aenter__(self) -> SessionSlot:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.release()

    async def release(self) -> None:
        """Give the slot back (shielded, up to 2 s; a lease not released expires by itself)."""
        release, self._release = self._release, None
        if release is not None:
            with trio.move_on_after(_RELEASE_TIMEOUT_S, shield=True):
                await release()


class Cluster:
    """This process's side of the shared state. Build it with :meth:`open`.

    Attributes:
        replica_id: how this process is named in the admin session list.
        up: whether Redis answered the last command.
        error: why it counts as down (``None`` while up).
        since: when it last went up or down (seconds since the epoch).
    """

    def __init__(self, config: EngineConfig, link: RedisLink, telemetry: Telemetry) -> None:
        cluster = config.cluster
        self._config = config
        self._link = link
        self._telemetry = telemetry
        self._prefix = cluster.key_prefix
        self._lease_ms = int(cluster.lease_s * 1000)
        self._renew_s = cluster.lease_s / 3.0
        self._when_down = cluster.when_down
        self._timeout_s = cluster.timeout_s
        self.replica_id = cluster.replica_id or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:4]}"
        )
        self.up = False
        self.error: str | None = "not connected yet"
        self.since = time.time()
        self._lost_event = trio.Event()
        self._up_event = trio.Event()
        self._leases: dict[str, str] = {}  # member -> tenant, for every slot held here
        self._local_rate = TenantRateLimiter(config)
        self._scripts = {
            name: link.register_script(source)
            for name, source in (
                ("admit", _ADMIT),
                ("renew", _RENEW),
                ("heartbeat", _HEARTBEAT),
                ("replicas", _REPLICAS),
                ("take", _TAKE),
            )
        }
        # Telemetry to share: tenants whose summaries changed, events not yet published.
        self._dirty: set[str] = set()
        self._published: set[str] = set()  # tenants with a field in this replica's hash
        self._events_send, self._events_receive = trio.open_memory_channel[tuple[str, str]](
            _EVENT_BACKLOG
        )
        self._wake = trio.Event()
        self._changes = 0
        self._flushed = 0
        self._flush_done = trio.Event()
        self._listener: Listener | None = None
        self._watchers: dict[str, int] = {}
        self._subscribed: dict[str, trio.Event] = {}
        registry = telemetry.registry
        self._up_gauge = Gauge(
            "scaivoice_cluster_up",
            "1 while Redis answers ([cluster] redis_url), 0 while limits are per process",
            registry=registry,
            multiprocess_mode="livemin",  # workers: 0 if any live one is cut off
        )
        self._degraded = Counter(
            "scaivoice_cluster_degraded_checks",
            "Limit checks decided without Redis, by check and outcome",
            ["check", "outcome"],
            registry=registry,
        )

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    @asynccontextmanager
    async def open(cls, config: EngineConfig, telemetry: Telemetry) -> AsyncIterator[Cluster]:
        """Connect to ``[cluster] redis_url`` and keep this process's share of the state
        there; on exit, release what it holds.

        A Redis that does not answer does not stop the start: the cluster starts down (limits
        per process, or refused: ``when_down``) and a background task connects when it can.
        Leaving the context stops the tasks, the listener thread (within 0.1 s) and gives back
        every slot still held, this replica's summaries and its heartbeat (up to 2 s).

        Raises:
            ConfigError: redis-py is missing or the URL is not a Redis URL.
        """
        link = RedisLink(config.cluster.redis_url or "", timeout_s=config.cluster.timeout_s)
        cluster = cls(config, link, telemetry)
        listener = link.listener(cluster._on_message, cluster._on_subscribed, cluster._lost)
        cluster._listener = listener
        telemetry.replica = cluster.replica_id
        telemetry.forward = cluster._on_event
        error: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await cluster._restore()
                except RedisDown as exc:
                    cluster.error = str(exc)
                    log.warning(
                        "Redis at %s is down (%s): limits are %s until it answers",
                        link.url,
                        exc,
                        "per process" if cluster._when_down == "local" else "refused",
                    )
                nursery.start_soon(listener.run)
                nursery.start_soon(cluster._keep)
                nursery.start_soon(cluster._flush_loop)
                try:
                    yield cluster
                finally:
                    listener.stop()
                    nursery.cancel_scope.cancel()
                    with trio.move_on_after(_RELEASE_TIMEOUT_S, shield=True):
                        await cluster._leave()
        except BaseExceptionGroup as group:
            # The tasks raise nothing (Redis errors are handled; a bug would be here too): what
            # is here came from the body. Raise it as it was, not wrapped by this nursery.
            if len(group.exceptions) != 1:
                raise
            error = group.exceptions[0]
        finally:
            telemetry.forward = None
            link.close()
        if error is not None:
            raise error

    async def _leave(self) -> None:
        """Give back what this replica holds in Redis (it is shutting down)."""
        if not self.up:
            return
        leases = dict(self._leases)
        self._leases.clear()
        replicas, own = self._key("replicas"), self._replica_key()

        def leave(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            for member, tenant in leases.items():
                pipe.zrem(self._slots_key(tenant), member)
            pipe.zrem(replicas, self.replica_id)
            pipe.delete(own)
            pipe.execute()

        try:
            await self._link.run(leave)
        except RedisDown:
            pass  # the leases expire by themselves

    # ---------------------------------------------------------------- state

    def health(self) -> dict[str, Any]:
        """What ``/health`` shows under ``cluster``."""
        entry: dict[str, Any] = {
            "ok": self.up,
            "redis": self._link.url,
            "replica": self.replica_id,
            "limits": "shared" if self.up else self._when_down,
            "lease_s": self._lease_ms / 1000.0,
            "sessions_held": len(self._leases),
            "since": self.since,
        }
        if self.error is not None:
            entry["error"] = self.error
        return entry

    async def wait_up(self) -> None:
        """Return once Redis answers (at once while it does). Cancelling just stops waiting."""
        while not self.up:
            await self._up_event.wait()

    async def wait_flushed(self) -> None:
        """Return once the telemetry changed before this call is in Redis (waits while Redis
        is down). Cancelling just stops waiting."""
        target = self._changes
        while self._flushed < target:
            await self._flush_done.wait()

    def _lost(self, error: str) -> None:
        """Redis failed a command: down until the keeper reaches it again."""
        if self.up:
            log.warning(
                "Redis at %s is down (%s): limits are %s until it answers",
                self._link.url,
                error,
                "per process" if self._when_down == "local" else "refused",
            )
            self.up, self.error, self.since = False, error, time.time()
            self._up_gauge.set(0)
            self._up_event = trio.Event()
            self._lost_event.set()
        elif self.error != error:
            self.error = error

    def _set_up(self) -> None:
        if not self.up:
            log.info("Redis at %s is up: limits and telemetry are shared", self._link.url)
        self.up, self.error, self.since = True, None, time.time()
        self._up_gauge.set(1)
        self._lost_event = trio.Event()
        self._up_event.set()
        self._wake.set()

    async def _call(self, command: Callable[[Any], Any]) -> Any:
        """Run ``command`` on Redis, or raise ``RedisDown`` at once while it is down."""
        if not self.up:
            raise RedisDown(self.error or "down")
        try:
            return await self._link.run(command)
        except RedisDown as exc:
            self._lost(str(exc))
            raise

    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    def _slots_key(self, tenant: str) -> str:
        return self._key("sessions", tenant)

    def _replica_key(self, replica: str | None = None) -> str:
        return self._key("replica", replica or self.replica_id, "sessions")

    # ---------------------------------------------------------------- keeping it up

    async def _keep(self) -> None:
        """Renew this replica's leases and heartbeat every ``lease_s / 3``; while Redis is
        down, try it with backoff and restore everything when it answers."""
        backoff = Backoff(first_s=0.25, max_s=min(5.0, self._renew_s))
        while True:
            if self.up:
                with trio.move_on_after(self._renew_s):
                    await self._lost_event.wait()
                if self.up:
                    try:
                        await self._renew()
                    except RedisDown:
                        pass  # reported by _call
                continue
            await trio.sleep(backoff.next())
            try:
                await self._restore()
            except RedisDown as exc:
                self.error = str(exc)
                continue
            backoff.reset()

    async def _restore(self) -> None:
        """Write every lease held here and every summary again, then count as up."""
        await self._link.run(lambda client: client.ping())
        await self._renew(force=True)
        self._set_up()

    async def _renew(self, *, force: bool = False) -> None:
        """Renew every lease held here, the heartbeat, and write the summaries again."""
        by_tenant: dict[str, list[str]] = {}
        for member, tenant in self._leases.items():
            by_tenant.setdefault(tenant, []).append(member)
        renew, heartbeat = self._scripts["renew"], self._scripts["heartbeat"]
        replicas, own = self._key("replicas"), self._replica_key()
        summaries = self._summaries(self._tenants_with_sessions() | self._published)

        def write(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            for tenant, members in by_tenant.items():
                renew(keys=[self._slots_key(tenant)], args=[self._lease_ms, *members], client=pipe)
            _write_summaries(pipe, own, summaries)
            heartbeat(keys=[replicas, own], args=[self.replica_id, self._lease_ms], client=pipe)
            pipe.execute()

        if force:
            try:
                await self._link.run(write)
            except RedisDown as exc:
                self._lost(str(exc))
                raise
        else:
            await self._call(write)
        self._note_published(summaries)

    # ---------------------------------------------------------------- limits

    async def acquire_slot(self, tenant: str) -> SessionSlot:
        """A slot for one more session of ``tenant``, held until released.

        Raises:
            LimitExceeded: ``too_many_sessions`` (the tenant holds its limit across the
                fleet; or, with Redis down and ``when_down = "refuse"``, its limit cannot be
                checked).
        """
        limit = self._config.limits_for(tenant).max_sessions
        member = f"{self.replica_id}/{uuid.uuid4().hex[:16]}"
        if self.up:
            try:
                admitted, live = await self._call(
                    lambda client: self._scripts["admit"](
                        keys=[self._slots_key(tenant)],
                        args=[member, -1 if limit is None else limit, self._lease_ms],
                        client=client,
                    )
                )
            except RedisDown:
                pass
            else:
                if not admitted:
                    raise LimitExceeded(
                        "too_many_sessions",
                        f"tenant {tenant!r} already has {live} live session(s), its limit",
                        retry_after=_TOO_MANY_RETRY_S,
                    )
                return self._hold(member, tenant)
        if limit is not None:
            if self._when_down == "refuse":
                self._degraded.labels("session", "refused").inc()
                raise LimitExceeded(
                    "too_many_sessions",
                    f"tenant {tenant!r}'s session limit cannot be checked while the shared "
                    "state (Redis) is down; try again shortly",
                    retry_after=_TOO_MANY_RETRY_S,
                )
            live = sum(1 for held in self._leases.values() if held == tenant)
            if live >= limit:
                self._degraded.labels("session", "refused").inc()
                raise LimitExceeded(
                    "too_many_sessions",
                    f"tenant {tenant!r} already has {live} live session(s) here, its limit",
                    retry_after=_TOO_MANY_RETRY_S,
                )
            self._degraded.labels("session", "local").inc()
        return self._hold(member, tenant)  # registered in Redis when it is back

    def _hold(self, member: str, tenant: str) -> SessionSlot:
        self._leases[member] = tenant

        async def release() -> None:
            if self._leases.pop(member, None) is None:
                return
            try:
                await self._call(lambda client: client.zrem(self._slots_key(tenant), member))
            except RedisDown:
                pass  # it expires within the lease

        return SessionSlot(release)

    async def take_request(self, tenant: str) -> None:
        """Spend one request of ``tenant``'s budget across the fleet.

        Raises:
            LimitExceeded: ``rate_limited``.
        """
        per_minute = self._config.limits_for(tenant).requests_per_minute
        if per_minute is None:
            return
        if self.up:
            try:
                taken, wait_ms = await self._call(
                    lambda client: self._scripts["take"](
                        keys=[self._key("rate", tenant)],
                        args=[per_minute / 60_000.0, per_minute],
                        client=client,
                    )
                )
            except RedisDown:
                pass
            else:
                if not taken:
                    raise LimitExceeded(
                        "rate_limited",
                        f"tenant {tenant!r} is over its limit of {per_minute} requests a minute",
                        retry_after=int(wait_ms) / 1000.0,
                    )
                return
        if self._when_down == "refuse":
            self._degraded.labels("request", "refused").inc()
            raise LimitExceeded(
                "rate_limited",
                f"tenant {tenant!r}'s request limit cannot be checked while the shared state "
                "(Redis) is down; try again shortly",
                retry_after=1.0,
            )
        try:
            self._local_rate.check(tenant, time.monotonic())
        except LimitExceeded:
            self._degraded.labels("request", "refused").inc()
            raise
        self._degraded.labels("request", "local").inc()

    async def claim_token(self, mac: str, expires_at: float) -> None:
        """Mark a session token used across the fleet until it expires.

        With Redis down, the process's own memory of used tokens is all there is (the
        authenticator's).

        Raises:
            Unauthorized: ``token_used``: a session was opened with it (on any replica).
        """
        key = self._key("token", hashlib.sha256(mac.encode()).hexdigest())
        expiry_ms = max(int(expires_at * 1000), int(time.time() * 1000) + 1000)
        try:
            claimed = await self._call(
                lambda client: client.set(key, self.replica_id, nx=True, pxat=expiry_ms)
            )
        except RedisDown:
            self._degraded.labels("token", "local").inc()
            return
        if not claimed:
            raise Unauthorized("this session token was already used", code="token_used")

    # ---------------------------------------------------------------- telemetry

    def _on_event(self, tenant: str, event: dict[str, Any]) -> None:
        """Telemetry's forwarder (synchronous, no I/O): queue the event for the other
        replicas, and the tenant's summaries for writing."""
        self._dirty.add(tenant)
        self._changes += 1
        try:
            self._events_send.send_nowait((tenant, json.dumps(event, default=str)))
        except trio.WouldBlock:
            pass  # Redis is slow or down: other replicas' watchers miss it
        self._wake.set()

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            target = self._changes
            events: list[tuple[str, str]] = []
            while True:
                try:
                    events.append(self._events_receive.receive_nowait())
                except trio.WouldBlock:
                    break
            if not self.up:
                continue  # events are dropped; summaries are written on recovery
            tenants, self._dirty = self._dirty, set()
            summaries = self._summaries(tenants)
            try:
                await self._call(partial(self._write_telemetry, summaries, events))
            except RedisDown:
                self._dirty |= tenants
                continue
            self._note_published(summaries)
            self._flushed = max(self._flushed, target)
            self._flush_done.set()
            self._flush_done = trio.Event()
            await trio.sleep(_FLUSH_S)

    def _write_telemetry(
        self, summaries: dict[str, str | None], events: list[tuple[str, str]], client: Any
    ) -> None:
        """(In a worker thread.) This replica's summaries, then the events."""
        own = self._replica_key()
        pipe = client.pipeline(transaction=False)
        _write_summaries(pipe, own, summaries)
        pipe.pexpire(own, self._lease_ms)
        for tenant, event in events:  # after the summaries: an event's reader finds them
            pipe.publish(self._key("events", tenant), event)
        pipe.execute()

    def _note_published(self, summaries: dict[str, str | None]) -> None:
        for tenant, doc in summaries.items():
            if doc is None:
                self._published.discard(tenant)
            else:
                self._published.add(tenant)

    def _tenants_with_sessions(self) -> set[str]:
        telemetry = self._telemetry
        return {r.tenant for r in telemetry.live.values()} | {r.tenant for r in telemetry.recent}

    def _summaries(self, tenants: set[str]) -> dict[str, str | None]:
        """Each tenant's session summaries here as JSON (``None``: none left)."""
        now = time.time()
        out: dict[str, str | None] = {}
        for tenant in tenants:
            records = self._telemetry.sessions(tenant)
            docs = [r.summary(now) | {"replica": self.replica_id} for r in records]
            out[tenant] = json.dumps(docs) if docs else None
        return out

    async def sessions(self, tenant: str) -> list[dict[str, Any]] | None:
        """``tenant``'s session summaries on the other replicas (``None``: Redis is down).

        A summary is as recent as that replica's last write (within 0.2 s of a change, and
        every ``lease_s / 3``); a live session's ``duration_s`` counts to then.
        """
        replicas_key = self._key("replicas")
        try:
            replicas = await self._call(
                lambda client: self._scripts["replicas"](keys=[replicas_key], client=client)
            )
            others = [r for r in replicas if r != self.replica_id]
            if not others:
                return []

            def read(client: Any) -> list[str | None]:
                pipe = client.pipeline(transaction=False)
                for replica in others:
                    pipe.hget(self._replica_key(replica), tenant)
                return list(pipe.execute())

            docs = await self._call(read)
        except RedisDown:
            return None
        return [summary for doc in docs if doc for summary in json.loads(doc)]

    @asynccontextmanager
    async def watch(self, tenant: str) -> AsyncIterator[None]:
        """While the block runs, the other replicas' events of ``tenant`` reach this
        process's telemetry subscribers. Entering waits (up to ``timeout_s``) until Redis
        confirmed the subscription; while Redis is down, only this process's events come."""
        channel = self._key("events", tenant)
        count = self._watchers.get(channel, 0)
        self._watchers[channel] = count + 1
        if count == 0:
            self._subscribed[channel] = trio.Event()
            assert self._listener is not None
            self._listener.want(channel)
        try:
            if self.up:
                with trio.move_on_after(self._timeout_s):
                    await self._subscribed[channel].wait()
            yield
        finally:
            self._watchers[channel] -= 1
            if not self._watchers[channel]:
                del self._watchers[channel], self._subscribed[channel]
                assert self._listener is not None
                self._listener.unwant(channel)

    def _on_subscribed(self, channel: str) -> None:
        event = self._subscribed.get(channel)
        if event is not None:
            event.set()

    def _on_message(self, channel: str, data: str) -> None:
        """An event of another replica (this replica's own are delivered locally)."""
        tenant = channel.removeprefix(self._key("events", ""))
        try:
            event = json.loads(data)
        except ValueError:
            return
        if not isinstance(event, dict) or event.get("replica") == self.replica_id:
            return
        self._telemetry.deliver(tenant, event)


def _write_summaries(pipe: Any, own: str, summaries: dict[str, str | None]) -> None:
    for tenant, doc in summaries.items():
        if doc is None:
            pipe.hdel(own, tenant)
        else:
            pipe.hset(own, tenant, doc)
