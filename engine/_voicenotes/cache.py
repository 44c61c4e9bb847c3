"""A content-addressed cache for synthesised voice notes.

The key is the SHA-256 of everything that shapes the audio (text, voice, model, format,
options), so a hit is byte-for-byte what synthesis would produce. Two identical requests in
flight synthesise once: the second waits for the first. Storage is bounded: least recently used
entries are evicted past ``max_bytes``. With a directory, entries are files written atomically
(temporary file + rename), so several engine processes may share one volume; without one, an
in-memory store.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

__all__ = ["CacheStats", "SpeechCache", "cache_key"]


def cache_key(**parts: Any) -> str:
    """A stable key over ``parts`` (any JSON-serialisable values)."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(slots=True)
class CacheStats:
    """Counters, for ``/health`` and tests."""

    hits: int = 0
    misses: int = 0
    coalesced: int = 0
    evictions: int = 0


@dataclass(slots=True)
class _Flight:
    done: trio.Event = field(default_factory=trio.Event)
    value: bytes | None = None


class SpeechCache:
    """Bounded, content-addressed storage with in-flight de-duplication.

    Args:
        directory: where entries live (may be a shared volume); ``None`` keeps them in memory.
        max_bytes: the bound; least recently used entries are evicted beyond it.
        suffix: ``None``: an entry is the file ``directory/<first two of the key>/<key>``;
            a suffix (``".ogg"``): the file ``directory/<key><suffix>``, for callers that hand
            out the file's path (``scaivoice mcp``).
    """

    def __init__(
        self, directory: Path | None, max_bytes: int, *, suffix: str | None = None
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.suffix = suffix
        self.stats = CacheStats()
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._memory_bytes = 0
        self._flights: dict[str, _Flight] = {}
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    async def get_or_create(
        self, key: str, produce: Callable[[], Awaitable[bytes]]
    ) -> tuple[bytes, bool]:
        """The cached value of ``key``, or ``produce()``'s, stored. Returns (value, was_hit).

        A concurrent call for a key already being produced waits for that value instead of
        producing it again. If the producer fails, its error propagates to it alone and
        waiting callers produce the value themselves. Cancelling abandons the wait (or the
        production; nothing is stored then).
        """
        while True:
            cached = await self.get(key)
            if cached is not None:
                self.stats.hits += 1
                return cached, True
            flight = self._flights.get(key)
            if flight is None:
                break
            self.stats.coalesced += 1
            await flight.done.wait()
            if flight.value is not None:
                return flight.value, True
        self.stats.misses += 1
        flight = self._flights[key] = _Flight()
        try:
            value = await produce()
            flight.value = value
            await self.put(key, value)
            return value, False
        finally:
            del self._flights[key]
            flight.done.set()

    async def get(self, key: str) -> bytes | None:
        """The entry for ``key`` (marking it recently used), or ``None``."""
        if self.directory is None:
            value = self._memory.get(key)
            if value is not None:
                self._memory.move_to_end(key)
            return value
        return await trio.to_thread.run_sync(self._read_file, self._path(key))

    async def put(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key``, then evict beyond ``max_bytes``."""
        if len(value) > self.max_bytes:
            return
        if self.directory is None:
            previous = self._memory.pop(key, None)
            self._memory_bytes -= len(previous or b"")
            self._memory[key] = value
            self._memory_bytes += len(value)
            while self._memory_bytes > self.max_bytes:
                _, evicted = self._memory.popitem(last=False)
                self._memory_bytes -= len(evicted)
                self.stats.evictions += 1
            return
        await trio.to_thread.run_sync(self._write_file, self._path(key), value)
        self.stats.evictions += await trio.to_thread.run_sync(self._evict_files)

    def describe(self) -> Mapping[str, Any]:
        """Settings and counters, for health output."""
        return {
            "store": str(self.directory) if self.directory else "memory",
            "max_bytes": self.max_bytes,
            "hits": self.stats.hits,
            "misses": self.stats.misses,
            "coalesced": self.stats.coalesced,
            "evictions": self.stats.evictions,
        }

    def path(self, key: str) -> Path | None:
        """Where the entry of ``key`` is (or would be) stored; ``None`` in memory."""
        if self.directory is None:
            return None
        return self._path(key)

    # ---------------------------------------------------------------- files (worker threads)

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        if self.suffix is not None:
            return self.directory / f"{key}{self.suffix}"
        return self.directory / key[:2] / key

    @staticmethod
    def _read_file(path: Path) -> bytes | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            os.utime(path)  # recently used: evicted last
        except FileNotFoundError:  # evicted by another process meanwhile
            pass
        return data

    @staticmethod
    def _write_file(path: Path, value: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(value)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _evict_files(self) -> int:
        assert self.directory is not None
        entries: list[tuple[float, int, Path]] = []
        total = 0
        pattern = "??/*" if self.suffix is None else f"*{self.suffix}"
        for path in self.directory.glob(pattern):
            if path.name.startswith(".tmp-"):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
            total += stat.st_size
        evicted = 0
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            evicted += 1
        return evicted
