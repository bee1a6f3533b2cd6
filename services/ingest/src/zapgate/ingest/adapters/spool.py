"""A durable local spool: what JetStream could not take is appended here, fsynced, then drained.

Records are appended to numbered segment files (`<n>.seg`) and fsynced before `append` returns,
so a webhook answered 2xx survives the process being killed. New appends never go into a
segment left by an earlier process (its tail may be torn); `drain` seals the open segment, hands
every record of each sealed segment to `publish` in order, and deletes the segment once all of
its records are published. A record is re-published after a crash mid-segment, which is safe:
records carry their `Nats-Msg-Id`, so JetStream (within its duplicate window) and the archive's
unique key keep one copy.

One process owns a spool directory at a time (an exclusive `flock`), so two replicas can never
drain the same records.

Frame: `ZG` | u32 length | u32 crc32 | payload; payload: u16 len | subject | u16 len | msg id |
body. A frame that is cut short or fails its checksum ends the segment's readable records.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import zlib
from typing import IO, TYPE_CHECKING, Final

from zapgate.ingest.ports import SpoolError, SpoolRecord

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from pathlib import Path

_MAGIC: Final = b"ZG"
_HEADER: Final = struct.Struct(">2sII")
_FIELD: Final = struct.Struct(">H")
_SUFFIX: Final = ".seg"
_LOCK_NAME: Final = "spool.lock"
DEFAULT_SEGMENT_BYTES: Final = 16 * 1024 * 1024


class SpoolLockedError(SpoolError):
    """Another process owns this spool directory."""


def encode_record(record: SpoolRecord) -> bytes:
    """One frame: header, then subject, msg id and body."""
    subject = record.subject.encode()
    msg_id = record.msg_id.encode()
    payload = b"".join(
        (_FIELD.pack(len(subject)), subject, _FIELD.pack(len(msg_id)), msg_id, record.body)
    )
    return _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode_record(payload: bytes) -> SpoolRecord:
    """The record in one frame's payload (after the header)."""
    (subject_len,) = _FIELD.unpack_from(payload, 0)
    start = _FIELD.size
    subject = payload[start : start + subject_len].decode()
    start += subject_len
    (msg_id_len,) = _FIELD.unpack_from(payload, start)
    start += _FIELD.size
    msg_id = payload[start : start + msg_id_len].decode()
    return SpoolRecord(subject=subject, msg_id=msg_id, body=payload[start + msg_id_len :])


def read_segment(path: Path) -> Iterator[tuple[int, SpoolRecord]]:
    """(end offset, record) for every whole, intact record of one segment file, in order."""
    data = path.read_bytes()
    offset = 0
    while offset + _HEADER.size <= len(data):
        magic, length, crc = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        payload = data[start : start + length]
        if magic != _MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
            return
        offset = start + length
        yield offset, decode_record(payload)


class FileSpool:
    """Append-and-fsync records; drain them in order. `append` is blocking (use a thread)."""

    def __init__(self, directory: Path, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        self.directory = directory
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._lock_file: IO[bytes] | None = None
        self._current: IO[bytes] | None = None
        self._current_number = 0
        self._current_size = 0
        self._next_number = 0
        self._pending = 0
        self._drained_to: dict[int, int] = {}

    @property
    def pending(self) -> int:
        """Records appended and not yet drained (counted since open, plus what was found)."""
        return self._pending

    def open(self) -> FileSpool:
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_file = (self.directory / _LOCK_NAME).open("ab")
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            lock_file.close()
            raise SpoolLockedError(f"spool {self.directory} is owned by another process") from error
        self._lock_file = lock_file
        numbers = self._segment_numbers()
        self._pending = sum(sum(1 for _ in read_segment(self._path(number))) for number in numbers)
        # Never append to a segment an earlier process left behind: its tail may be torn.
        self._next_number = (numbers[-1] + 1) if numbers else 1
        return self

    def close(self) -> None:
        with self._lock:
            if self._current is not None:
                self._current.close()
                self._current = None
            if self._lock_file is not None:
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
                self._lock_file.close()
                self._lock_file = None

    def append(self, record: SpoolRecord) -> None:
        """Write `record` and fsync it: when this returns, the record survives a crash."""
        frame = encode_record(record)
        with self._lock:
            if self._lock_file is None:
                raise SpoolError("spool is not open")
            try:
                current = self._writable()
                current.write(frame)
                current.flush()
                os.fsync(current.fileno())
            except OSError as error:
                raise SpoolError(f"cannot spool record: {error}") from error
            self._current_size += len(frame)
            self._pending += 1
            if self._current_size >= self._segment_bytes:
                self._seal()

    async def drain(self, publish: Callable[[SpoolRecord], Awaitable[None]]) -> int:
        """Publish every spooled record in order; stop at the first failure (it propagates).

        Returns how many records were published. Safe to call again after a failure: it
        resumes at the first record not yet published by this process.
        """
        if not self._drain_lock.acquire(blocking=False):
            return 0
        try:
            with self._lock:
                self._seal()
                # Segments numbered from here on are (or will be) written by concurrent appends.
                sealed_below = self._next_number
            published = 0
            for number in self._segment_numbers():
                if number >= sealed_below:
                    break
                published += await self._drain_segment(number, publish)
            return published
        finally:
            self._drain_lock.release()

    async def _drain_segment(
        self, number: int, publish: Callable[[SpoolRecord], Awaitable[None]]
    ) -> int:
        path = self._path(number)
        done_to = self._drained_to.get(number, 0)
        published = 0
        for end, record in read_segment(path):
            if end <= done_to:
                continue
            await publish(record)
            self._drained_to[number] = end
            with self._lock:
                self._pending = max(0, self._pending - 1)
            published += 1
        path.unlink()
        self._drained_to.pop(number, None)
        self._fsync_directory()
        return published

    def _writable(self) -> IO[bytes]:
        if self._current is None:
            self._current_number = self._next_number
            self._next_number += 1
            self._current = self._path(self._current_number).open("ab")
            self._current_size = 0
            # The new file's name must be durable too, not only its bytes.
            self._fsync_directory()
        return self._current

    def _seal(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None

    def _segment_numbers(self) -> list[int]:
        numbers = []
        for path in self.directory.glob(f"*{_SUFFIX}"):
            stem = path.name.removesuffix(_SUFFIX)
            if stem.isdigit():
                numbers.append(int(stem))
        return sorted(numbers)

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:012d}{_SUFFIX}"

    def _fsync_directory(self) -> None:
        descriptor = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
