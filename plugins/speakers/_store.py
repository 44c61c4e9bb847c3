"""The enrolment store of speaker recognition: one embedded SQLite file, embeddings only.

One table, one row per (tenant, speaker): the speaker's embedding (the normalised mean of the
embeddings of its enrolment clips, float32) with its CRC-32, how many clips it was made from, an
optional display name, when it was enrolled and by which embedding model. Opening checks the
file's structure (``PRAGMA quick_check``) and every embedding against its CRC: a damaged file
is refused as a whole rather than answering with a damaged voice. Audio is never stored. Every
statement names the tenant, so a tenant never reads, replaces or deletes another's speakers.

Deleting is for good: the file runs with ``secure_delete`` (SQLite overwrites the freed bytes
with zeros) and a rollback journal that is deleted after each transaction, so a forgotten
speaker's embedding is not left in the file nor in a write-ahead log. Nothing here logs an
embedding.

Every method blocks: call them from a worker thread, one at a time (the feature holds a
limiter of one). ``sqlite3`` errors are mapped to :class:`StoreError` here.
"""

from __future__ import annotations

import os
import sqlite3
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["MEMORY", "SpeakerStore", "StoreError", "StoredSpeaker"]

MEMORY = ":memory:"
"""A store path that keeps enrolments in memory only (lost when the process ends)."""

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS speakers (
    tenant       TEXT NOT NULL,
    speaker_id   TEXT NOT NULL,
    display_name TEXT,
    clips        INTEGER NOT NULL,
    enrolled_at  REAL NOT NULL,
    model        TEXT NOT NULL,
    embedding    BLOB NOT NULL,
    checksum     INTEGER NOT NULL,
    PRIMARY KEY (tenant, speaker_id)
)
"""


class StoreError(Exception):
    """The store file cannot be opened or used (corrupt, not a database, unwritable...)."""


@dataclass(frozen=True, slots=True)
class StoredSpeaker:
    """One row of the store (``embedding`` only when asked for)."""

    speaker_id: str
    display_name: str | None
    clips: int
    enrolled_at: float
    model: str


class SpeakerStore:
    """An open store file. Blocking; not for concurrent use (serialise the calls)."""

    def __init__(self, connection: sqlite3.Connection, path: str) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def exists(cls, path: str | Path) -> bool:
        """Whether there is a file at ``path`` (:data:`MEMORY` always exists)."""
        return str(path) == MEMORY or Path(path).exists()

    @classmethod
    def open(cls, path: str | Path) -> SpeakerStore:
        """Open (creating it if needed) the store at ``path``, or in memory for :data:`MEMORY`.

        A new file and its folder are made readable by their owner only. The file's integrity
        is checked.

        Raises:
            StoreError: the file is not a store (corrupt, not SQLite, another schema) or
                cannot be opened or created.
        """
        name = str(path)
        uri = name
        if name != MEMORY:
            file = Path(name)
            try:
                file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                if not file.exists():
                    os.close(os.open(file, os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError as exc:
                raise StoreError(f"cannot create the speaker store {name}: {exc}") from exc
            uri = file.resolve().as_uri() + "?mode=rw"  # never creates: the file is there
        try:
            db = sqlite3.connect(uri, check_same_thread=False, isolation_level=None, uri=True)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the speaker store {name}: {exc}") from exc
        try:
            db.execute("PRAGMA secure_delete = ON")
            db.execute("PRAGMA journal_mode = DELETE")
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise StoreError(f"the speaker store {name} is damaged: {check}")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise StoreError(
                    f"the speaker store {name} has schema version {version}; "
                    f"this version reads {_SCHEMA_VERSION}"
                )
            db.execute(_SCHEMA)
            db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            for tenant, blob, checksum in db.execute(
                "SELECT tenant, embedding, checksum FROM speakers"
            ):
                if not isinstance(blob, bytes) or zlib.crc32(blob) != checksum:
                    raise StoreError(
                        f"the speaker store {name} is damaged: an embedding of tenant "
                        f"{tenant!r} does not match its checksum"
                    )
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(f"the speaker store {name} is not usable: {exc}") from exc
        except StoreError:
            db.close()
            raise
        return cls(db, name)

    def close(self) -> None:
        """Close the file. Idempotent."""
        self._db.close()

    def put(
        self,
        tenant: str,
        speaker_id: str,
        embedding: npt.NDArray[np.float32],
        *,
        clips: int,
        model: str,
        display_name: str | None,
        replace: bool,
    ) -> StoredSpeaker | None:
        """Store a speaker; ``None`` when it exists and ``replace`` is false (nothing changed).

        Raises:
            StoreError: the file failed.
        """
        now = time.time()
        blob = np.ascontiguousarray(embedding, dtype="<f4").tobytes()
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self._errors():
            cursor = self._db.execute(
                f"{verb} INTO speakers "
                "(tenant, speaker_id, display_name, clips, enrolled_at, model, embedding, "
                "checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (tenant, speaker_id, display_name, clips, now, model, blob, zlib.crc32(blob)),
            )
        if cursor.rowcount == 0:
            return None
        return StoredSpeaker(speaker_id, display_name, clips, now, model)

    def speakers(self, tenant: str) -> list[StoredSpeaker]:
        """The tenant's speakers, by id.

        Raises:
            StoreError: the file failed.
        """
        with self._errors():
            rows = self._db.execute(
                "SELECT speaker_id, display_name, clips, enrolled_at, model FROM speakers "
                "WHERE tenant = ? ORDER BY speaker_id",
                (tenant,),
            ).fetchall()
        return [StoredSpeaker(*row) for row in rows]

    def embeddings(self, tenant: str, model: str) -> tuple[list[str], npt.NDArray[np.float32]]:
        """The ids and embeddings (one row each) of the tenant's speakers enrolled with ``model``.

        Raises:
            StoreError: the file failed.
        """
        with self._errors():
            rows = self._db.execute(
                "SELECT speaker_id, embedding FROM speakers WHERE tenant = ? AND model = ? "
                "ORDER BY speaker_id",
                (tenant, model),
            ).fetchall()
        if not rows:
            return [], np.zeros((0, 0), np.float32)
        ids = [row[0] for row in rows]
        matrix = np.stack([np.frombuffer(row[1], dtype="<f4") for row in rows])
        return ids, matrix.astype(np.float32)

    def delete(self, tenant: str, speaker_id: str) -> bool:
        """Delete a speaker for good; ``False`` when the tenant has none by that id.

        Raises:
            StoreError: the file failed.
        """
        with self._errors():
            cursor = self._db.execute(
                "DELETE FROM speakers WHERE tenant = ? AND speaker_id = ?", (tenant, speaker_id)
            )
        return cursor.rowcount > 0

    def _errors(self) -> _MapErrors:
        return _MapErrors(self.path)


class _MapErrors:
    """``with``: a ``sqlite3.Error`` inside becomes a :class:`StoreError`."""

    def __init__(self, path: str) -> None:
        self._path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"the speaker store {self._path} failed: {exc}") from exc
