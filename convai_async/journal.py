"""The bulk-run journal: append-only JSONL, one line per finished item.

Lines are written to the OS as each item finishes (so ``kill -9`` loses only the items still in
flight) and fsynced in small batches (so a power cut loses at most one batch). The file is created
with mode 0600. It never holds the API key: an entry is the item's index, char_id, the values set,
the outcome, the previous values when known, and the error message.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["JOURNAL_VERSION", "JournalWriter", "read_journal"]

logger = logging.getLogger("convai_async")

JOURNAL_VERSION = 1
DEFAULT_SYNC_EVERY = 64
DEFAULT_SYNC_SECONDS = 1.0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class JournalWriter:
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        kind: str = "bulk",
        sync_every: int = DEFAULT_SYNC_EVERY,
        sync_seconds: float = DEFAULT_SYNC_SECONDS,
    ) -> None:
        self.path = Path(path)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(self._fd, 0o600)
        self._sync_every = sync_every
        self._sync_seconds = sync_seconds
        self._unsynced = 0
        self._last_sync = time.monotonic()
        if fresh:
            self._write(
                {"journal": "convai-async", "v": JOURNAL_VERSION, "kind": kind, "created": _now()}
            )
        else:
            self._write({"journal": "convai-async", "v": JOURNAL_VERSION, "resumed": _now()})
        self.sync()

    def _write(self, entry: Mapping[str, Any]) -> None:
        # A torn previous line (kill -9 mid-write) must not swallow this one: lines start fresh.
        os.write(self._fd, b"\n" + json.dumps(entry, separators=(",", ":")).encode())
        self._unsynced += 1

    def record(self, entry: Mapping[str, Any]) -> None:
        self._write({**entry, "at": _now()})
        if (
            self._unsynced >= self._sync_every
            or time.monotonic() - self._last_sync >= self._sync_seconds
        ):
            self.sync()

    def sync(self) -> None:
        if self._unsynced:
            os.fsync(self._fd)
            self._unsynced = 0
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1


def read_journal(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The item entries of a journal, in order. Unreadable lines (a line torn by a crash) are
    skipped; header lines are not item entries."""
    with open(path, "rb") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                logger.warning("journal %s: line %d is incomplete and was skipped", path, number)
                continue
            if isinstance(entry, dict) and "char_id" in entry:
                yield entry
