"""A limiter made of two: a thread runs only with a token from each."""

from __future__ import annotations

import trio

__all__ = ["BothLimiters"]


class BothLimiters:
    """Acquire ``outer`` then ``inner`` for one borrower; release both together.

    Passed as ``limiter=`` to :func:`trio.to_thread.run_sync`, so an abandoned thread keeps both
    tokens until it really ends. Cancelling while waiting for ``inner`` gives ``outer`` back.
    """

    def __init__(self, outer: trio.CapacityLimiter, inner: trio.CapacityLimiter) -> None:
        self.outer = outer
        self.inner = inner

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        await self.outer.acquire_on_behalf_of(borrower)
        acquired = False
        try:
            await self.inner.acquire_on_behalf_of(borrower)
            acquired = True
        finally:
            if not acquired:
                self.outer.release_on_behalf_of(borrower)

    def release_on_behalf_of(self, borrower: object) -> None:
        self.inner.release_on_behalf_of(borrower)
        self.outer.release_on_behalf_of(borrower)
