"""The journal file's one writer: an OS lock, write-ahead with group commit, checked writes.

Write-ahead: ``intend`` queues an intent line and returns a future (one per batch, shared by its
intents) that completes once the line is written and fsynced; the caller sends its request only
then. Intents queued while a write and
fsync are in progress share the next one (group commit: one ``write`` call per batch of lines,
one fsync per window). A window starts when ``window`` intents are queued or when a caller is
about to wait for one (``need``), whichever comes first. Outcome lines ride along with the next
batch. Every write's result is checked (short writes, ENOSPC, EFBIG): the first failure is a
``JournalError`` for every waiting intent and the writer refuses further lines.

One writer per journal: the file is locked with ``flock`` for the writer's lifetime, and its pid
is kept in a ``<journal>.lock`` sidecar so a refused second writer can name the holder.

A line cut short by a crash or a failed write is never read back as a line: the writer that
appends after it starts on a fresh line and marks it (``resumed`` with ``torn``); see ``reader``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path

from ..errors import JournalError
from .encoders import encode
from .format import Line, Resumed, now

__all__ = [
    "JournalWriter",
    "new_journal_path",
]

MAX_PENDING_OUTCOMES = 512  # outcome lines buffered before a write is started for them alone


def new_journal_path(directory: str | os.PathLike[str], prefix: str) -> Path:
    """A new, empty journal file in ``directory`` named ``<prefix>-<UTC time>-<random>.jsonl``,
    created exclusively (mode 0600): two calls never return the same path."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder = Path(directory)
    while True:
        path = folder / f"{prefix}-{stamp}-{secrets.token_hex(4)}.jsonl"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        except OSError as error:
            raise JournalError(str(path), error.strerror or str(error)) from error
        os.close(fd)
        return path


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


class JournalWriter:
    """The one writer of a journal file. Open with ``JournalWriter.open(path)``."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self._pending: list[bytes] = []
        self._batch: asyncio.Future[None] | None = None  # the intents pending: durable together
        self._intents = 0  # intents in _pending
        self._flushing: asyncio.Task[None] | None = None
        self.error: JournalError | None = None
        self.writes = 0  # write calls made (one per batch of lines)
        self.syncs = 0  # fsyncs made (one per window of intents)
        self.window = 1  # intents that start a write and fsync without anyone waiting yet
        self._wanted = False  # someone waits on a queued intent: write and fsync now

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> JournalWriter:
        """Create or open ``path`` for appending and lock it. Everything knowable before a run
        (a directory in its place, a missing folder, no write access, another writer) is a
        JournalError here, before anything is sent."""
        path = Path(path)
        name = str(path)
        if path.is_dir():
            raise JournalError(name, "is a directory, not a file")
        if not path.parent.is_dir():
            raise JournalError(name, f"the folder {path.parent} does not exist")
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise JournalError(name, f"cannot open: {error.strerror or error}") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise JournalError(name, f"cannot lock: {error.strerror}") from error
            raise JournalError(
                name, f"in use by another process (pid {_holder(path)}); wait for it to end"
            ) from None
        writer = cls(path, fd)
        try:
            _lock_path(path).write_text(f"{os.getpid()}\n")
        except OSError as error:
            writer._release()
            raise JournalError(name, f"cannot write its lock file: {error.strerror}") from error
        return writer

    # -- state of the file ----------------------------------------------------------------------

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def ends_torn(self) -> bool:
        """Whether the file ends in a line cut short (no final newline)."""
        size = self.size()
        return size > 0 and os.pread(self._fd, 1, size - 1) != b"\n"

    def truncate(self) -> None:
        """Empty the file (only for a journal whose plan was never completed: nothing sent)."""
        try:
            os.ftruncate(self._fd, 0)
        except OSError as error:
            raise self._failed(f"cannot truncate: {error.strerror}") from error

    def start(self, lines: list[Line]) -> None:
        """Write lines and fsync them now (a header, a plan). Called before any request. A new
        journal's folder is fsynced too, so the file itself survives a power cut."""
        fresh = self.size() == 0
        if not fresh and self.ends_torn():
            self._write_all(b"\n")
        self._write_all(b"".join(encode(line) for line in lines))
        self._fsync()
        if fresh:
            self._fsync_folder()

    def _fsync_folder(self) -> None:
        try:
            folder = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as error:
            raise self._failed(f"fsync of its folder failed: {error.strerror}") from error

    def resumed(self) -> None:
        """Append the ``resumed`` marker of a later run, fsynced."""
        torn = self.ends_torn()
        prefix = b"\n" if torn else b""
        self._write_all(prefix + encode(Resumed(at=now(), pid=os.getpid(), torn=torn)))
        self._fsync()

    # -- the run's lines ------------------------------------------------------------------------

    def intend(self, line: Line | bytes) -> asyncio.Future[None]:
        """Queue an intent (a line, or its encoded bytes); the future completes once it is
        durable (or fails: JournalError). Intents of one batch share one future."""
        if self.error is not None:
            failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            failed.set_exception(self.error)
            return failed
        self._pending.append(line if type(line) is bytes else encode(line))  # type: ignore[arg-type]
        batch = self._batch
        if batch is None:
            batch = self._batch = asyncio.get_running_loop().create_future()
        self._intents += 1
        if self._intents >= self.window:
            self._kick()
        return batch

    def need(self, future: asyncio.Future[None]) -> None:
        """The caller is about to wait for this intent: make sure a write and fsync is coming."""
        if not future.done():
            self._wanted = True
            self._kick()

    def record(self, line: Line | bytes) -> None:
        """Queue an outcome line (or its bytes); it is written with the next batch (or at
        ``aclose``)."""
        if self.error is not None:
            return
        pending = self._pending
        pending.append(line if type(line) is bytes else encode(line))  # type: ignore[arg-type]
        if len(pending) >= MAX_PENDING_OUTCOMES:
            self._kick()

    def _kick(self) -> None:
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        """Started when a window is due: by the time it runs, every intent queued in the same
        loop iteration is in it, and those queued during an fsync share the next one."""
        loop = asyncio.get_running_loop()
        try:
            while self._due():
                self._wanted = False
                data = b"".join(self._pending)
                batch, self._batch = self._batch, None
                self._pending, self._intents = [], 0
                try:
                    self._write_all(data)
                    if batch is not None:
                        await loop.run_in_executor(None, self._fsync)
                except JournalError as error:
                    _settle(batch, error)
                    break
                _settle(batch, None)
            if self.error is not None:  # intents queued after a failure
                _settle(self._batch, self.error)
        finally:
            self._flushing = None

    def _due(self) -> bool:
        if self.error is not None or not self._pending:
            return False
        waiting = self._intents
        return (
            waiting >= self.window
            or (self._wanted and waiting > 0)
            or len(self._pending) >= MAX_PENDING_OUTCOMES
        )

    async def aclose(self) -> None:
        """Write and fsync what is queued, release the lock, close. Idempotent. A failure here
        is kept in ``error`` (the lines lost are outcomes: those items stay in doubt)."""
        if self._fd < 0:
            return
        try:
            if self._flushing is not None:
                await asyncio.shield(self._flushing)
        finally:
            try:
                if self._pending and self.error is None:
                    data = b"".join(self._pending)
                    batch, self._batch = self._batch, None
                    self._pending, self._intents = [], 0
                    try:
                        self._write_all(data)
                        self._fsync()
                    except JournalError as error:
                        _settle(batch, error)
                    else:
                        _settle(batch, None)
            finally:
                self._release()

    def close(self) -> None:
        """Synchronous close for paths that never queued lines (a refused start)."""
        self._release()

    def _release(self) -> None:
        if self._fd >= 0:
            # A stale sidecar only names an old pid; the lock itself goes with the fd.
            with contextlib.suppress(OSError):
                _lock_path(self.path).unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = -1

    # -- checked I/O ----------------------------------------------------------------------------

    def _failed(self, problem: str) -> JournalError:
        if self.error is None:
            self.error = JournalError(str(self.path), problem)
        return self.error

    def _write_all(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.writes += 1
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except OSError as error:
                raise self._failed(f"write failed: {error.strerror or error}") from error
            if written <= 0:
                raise self._failed("write failed: nothing written")
            view = view[written:]

    def _fsync(self) -> None:
        if self.error is not None:
            raise self.error
        self.syncs += 1
        try:
            os.fsync(self._fd)
        except OSError as error:
            raise self._failed(f"fsync failed: {error.strerror or error}") from error


def _settle(batch: asyncio.Future[None] | None, error: JournalError | None) -> None:
    """Complete a batch's shared future: durable, or failed with ``error``."""
    if batch is None or batch.done():
        return
    if error is None:
        batch.set_result(None)
    else:
        batch.set_exception(error)


def _holder(path: Path) -> str:
    try:
        return _lock_path(path).read_text().strip() or "unknown"
    except OSError:
        return "unknown"
