"""The serving side of the query log: finished queries become binary records in a buffer.

Description:
    The pipeline tells `QueryRecorder` of each finished query; it appends one record (see
    `records`) to a buffer, which costs a few hundred nanoseconds and never waits. Whoever
    sends the records on (the query-log keeper) takes the buffer whole. A buffer past
    `limit_bytes` takes no more: the queries are counted as dropped, and the serving
    threads go on answering.
Configuration:
    query_log_buffer (bytes held for the keeper; default 8 MiB, about 70,000 queries).
Example:
    query_log_buffer: 16777216
"""

from __future__ import annotations

import threading
import time

from aidns.resolver.query import Query
from aidns.resolver.querylog.records import RecordEncoder

DEFAULT_LIMIT_BYTES = 8 << 20


class QueryRecorder:
    """Observer that records each finished query. `_buffer`, its count and the encoder are
    shared by the serving threads and the sender under `_lock`."""

    def __init__(self, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> None:
        self.limit_bytes = limit_bytes
        self.dropped = 0  # queries that found the buffer full
        self.has_records = threading.Event()
        self._lock = threading.Lock()
        self._buffer = bytearray()
        self._count = 0  # queries in the buffer
        self._encoder = RecordEncoder()
        self._add = self._encoder.add
        self._wall_offset = time.time() - time.monotonic()  # answer times are monotonic
        self._prefix = b""

    def __call__(self, query: Query, count: int = 1) -> None:
        with self._lock:
            buffer = self._buffer
            if len(buffer) >= self.limit_bytes:
                self.dropped += count
                return
            was_empty = not buffer
            self._add(buffer, query, count, self._wall_offset)
            self._count += count
        if was_empty:
            self.has_records.set()

    def take(self) -> tuple[bytes, int]:
        """The records so far and how many queries they stand for; the buffer starts empty."""
        with self._lock:
            records = self._prefix + self._buffer
            count = self._count
            self._buffer = bytearray()
            self._count = 0
            self._prefix = b""
            self.has_records.clear()
            self._wall_offset = time.time() - time.monotonic()  # follows a changed clock
        return records, count

    def start_over(self) -> None:
        """The next `take` begins with every definition in force, for a new keeper."""
        with self._lock:
            self._prefix = self._encoder.definitions()
            if self._prefix:
                self.has_records.set()

    def pending(self) -> int:
        with self._lock:
            return self._count
