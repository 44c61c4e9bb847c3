"""The lifecycle every engine-wide plugin object shares: ``open``, ``aclose``, ``async with``."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self

import trio

__all__ = ["Resource"]


class Resource(abc.ABC):
    """Opened once per engine with ``async with``; closed (shielded) on the way out."""

    async def open(self) -> None:
        """Load models / open connection pools. Cancelling it abandons the load."""

    async def aclose(self) -> None:
        """Release resources. Idempotent: a second call does nothing."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with trio.CancelScope(shield=True):
            await self.aclose()
