"""Rate limits (sans-IO token buckets) and the errors they raise.

Per tenant: a request rate over the HTTP API and session opens. Per session: a flood guard on
inbound frames (audio may arrive faster than real time, as when a file is streamed, but only up
to a multiple of it; control frames at a bounded rate).
"""

from __future__ import annotations

from dataclasses import dataclass

from .._errors import LimitExceeded
from .config import EngineConfig

__all__ = ["FrameGuard", "LimitExceeded", "TenantRateLimiter", "TokenBucket"]


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    rate: float
    burst: float
    tokens: float = -1.0
    updated: float = 0.0

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Spend ``amount`` tokens if there are enough at ``now``."""
        if self.tokens < 0:
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False

    def retry_after(self, amount: float = 1.0) -> float:
        """Seconds until ``amount`` tokens will be there."""
        return max(0.0, (amount - self.tokens) / self.rate) if self.rate > 0 else float("inf")


class TenantRateLimiter:
    """Request budgets per tenant, from ``limits.requests_per_minute``."""

    def __init__(self, config: EngineConfig) -> None:
        self._config = config
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, tenant: str, now: float) -> None:
        """Spend one request of ``tenant``'s budget.

        Raises:
            LimitExceeded: ``rate_limited``.
        """
        per_minute = self._config.limits_for(tenant).requests_per_minute
        if per_minute is None:
            return
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = TokenBucket(rate=per_minute / 60.0, burst=per_minute)
        if not bucket.take(now):
            raise LimitExceeded(
                "rate_limited",
                f"tenant {tenant!r} is over its limit of {per_minute} requests a minute",
                retry_after=bucket.retry_after(),
            )


class FrameGuard:
    """A session's inbound flood guard.

    Args:
        audio_rate: sustained audio, in multiples of real time (file streaming is allowed).
        audio_burst_s: seconds of audio that may arrive at once.
        control_rate: sustained control (text) frames per second.
        control_burst: control frames that may arrive at once.
    """

    def __init__(
        self,
        *,
        sample_rate: int,
        audio_rate: float = 10.0,
        audio_burst_s: float = 120.0,
        control_rate: float = 50.0,
        control_burst: float = 200.0,
    ) -> None:
        self.sample_rate = sample_rate
        self._audio = TokenBucket(rate=audio_rate, burst=audio_burst_s)
        self._control = TokenBucket(rate=control_rate, burst=control_burst)

    def audio(self, now: float, nbytes: int) -> bool:
        """Whether ``nbytes`` of PCM16 may be accepted at ``now``."""
        return self._audio.take(now, nbytes / 2 / self.sample_rate)

    def control(self, now: float) -> bool:
        """Whether one more control frame may be accepted at ``now``."""
        return self._control.take(now)
