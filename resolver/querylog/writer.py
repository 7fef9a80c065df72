"""The query log: every query in SQLite, written in batches off the serving path.

Description:
    The pipeline hands each finished query to `QueryLog`. Identical queries (same client,
    process, name, type and decision) within one batch window of a second become one
    row with a `count`, so a flood costs a dict increment per query, not an insert; the
    pipeline hands over a socket's repeats already counted. One writer thread inserts each
    window (WAL mode), applies retention, and can mirror every row as a JSON line. When the
    window is full, new records are dropped and counted: logging never slows an answer. A
    full disk, a locked or a corrupt database is reported once; the server keeps answering
    and the writer tries again, moving a corrupt file aside.
Configuration:
    query_log (on/off), query_log_days, query_log_rows, query_log_jsonl (a path, or "-").
Example:
    query_log_days: 14
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import math
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import dnslib

from aidns.resolver.config import QueryLogConfig
from aidns.resolver.memory import release_memory
from aidns.resolver.query import Decision, ProcessInfo, Query, rcode_name, skip_name
from aidns.resolver.querylog.schema import COLUMNS, INSERT_ROW, connect, reversed_name

log = logging.getLogger(__name__)

ROWS_AT_ONCE = 2000
RELEASE_AFTER_ROWS = 5000  # a batch this big leaves megabytes the heap would otherwise keep
QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA"}
QTYPES |= {33: "SRV", 35: "NAPTR", 43: "DS", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS", 255: "ANY"}
_RR_FIXED = struct.Struct("!HHIH")




def summarize(response: bytes, question_end: int) -> tuple[str, str]:
    """(rcode, short answer text). Plain address answers are read here directly; anything
    else (CNAME chains, MX, TXT, ...) is rendered by dnslib."""
    if len(response) < 12:
        return "", ""
    rcode = rcode_name(response[3] & 0xF)
    count = response[6] << 8 | response[7]
    addresses: list[str] = []
    pos = question_end
    try:
        for _ in range(count):
            pos = skip_name(response, pos)
            rtype, _rclass, _ttl, rdlength = _RR_FIXED.unpack_from(response, pos)
            rdata = response[pos + 10 : pos + 10 + rdlength]
            pos += 10 + rdlength
            if rtype == 1 and rdlength == 4:
                addresses.append(str(ipaddress.IPv4Address(rdata)))
            elif rtype == 28 and rdlength == 16:
                addresses.append(str(ipaddress.IPv6Address(rdata)))
            else:
                return rcode, _summarize_with_dnslib(response)
    except (IndexError, ValueError, struct.error):
        return rcode, "(malformed)"
    return rcode, " ".join(addresses)


def _summarize_with_dnslib(response: bytes, limit: int = 200) -> str:
    try:
        record = dnslib.DNSRecord.parse(response)
    except dnslib.DNSError:
        return "(malformed)"
    parts = []
    for rr in record.rr:
        kind = dnslib.QTYPE.get(rr.rtype, str(rr.rtype))
        parts.append(str(rr.rdata) if kind in ("A", "AAAA") else f"{kind} {rr.rdata}")
    text = " ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _process_fields(process: ProcessInfo | None) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(pid .. user, note and relay) in COLUMNS order."""
    if process is None:
        return (None,) * 7, (None, None)
    identity = (process.pid, process.name, process.exe, process.cmdline, process.tool)
    return (*identity, process.uid, process.user), (process.note, 1 if process.relay else None)


def _decision_fields(decision: Decision | None) -> tuple[Any, ...]:
    if decision is None:
        return ("error", None, None)
    return (str(decision.action), decision.rule or None, decision.list_name or None)


DEFAULT_CONFIG = QueryLogConfig()


class QueryLog:
    """Observer that records each finished query; call `start` before and `stop` after serving."""

    def __init__(self, path: Path, config: QueryLogConfig = DEFAULT_CONFIG) -> None:
        self.path = path
        self.config = config
        self.dropped = 0
        self.written = 0
        self.ready = threading.Event()  # set once the writer has opened the log, or tried to
        self._window: dict[tuple[Any, ...], list[Any]] = {}
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._connection: sqlite3.Connection | None = None
        self._jsonl: TextIO | None = None
        self._failing: str | None = None
        self._retry_at = 0.0
        self._last_retention = -math.inf
        self._summaries: dict[bytes, tuple[str, str]] = {}

    def __call__(self, query: Query, count: int = 1) -> None:
        process = query.process
        decision = query.decision
        key = (
            query.client[0],
            process.pid if process else None,
            query.qname,
            query.qtype,
            decision,
        )
        entry = self._window.get(key)
        if entry is not None:
            entry[0] += count
            return
        if len(self._window) >= self.config.window_entries:
            self.dropped += count
            return
        self._window[key] = [
            count,
            time.time(),
            (query.answered_at or time.monotonic()) - query.received_at,
            query.client,
            query.transport,
            process,
            query.qname,
            query.qtype,
            decision,
            query.response,
            query.question_end,
            query.upstream,
        ]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="querylog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued and close."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
        if self._jsonl is not None and self._jsonl is not sys.stdout:
            with contextlib.suppress(OSError):
                self._jsonl.close()

    def _run(self) -> None:
        if self.config.enabled:
            self._open()  # so the commands find a log from the start
        self.ready.set()
        while True:
            self._wake.wait(self.config.batch_interval_s)
            self._wake.clear()
            self._write_pending()
            if self._stopping:
                self._write_pending()
                return

    def _rows(self, batch: Sequence[list[Any]]) -> Iterator[tuple[Any, ...]]:
        """Rows in COLUMNS order; per-process and per-decision fields are built once a batch."""
        processes: dict[int, tuple[tuple[Any, ...], tuple[Any, ...]]] = {}
        decisions: dict[Any, tuple[Any, ...]] = {}
        summaries = self._summaries
        for entry in batch:
            count, wall, latency_s, client, transport, process, qname, qtype, decision = entry[:9]
            response, question_end, upstream = entry[9:]
            fields = processes.get(id(process))
            if fields is None:
                fields = processes[id(process)] = _process_fields(process)
            verdict = decisions.get(decision)
            if verdict is None:
                verdict = decisions[decision] = _decision_fields(decision)
            summary = ("", "")
            if response is not None:
                key = response[3:4] + response[question_end:]  # the same for every sinkhole
                summary = summaries.get(key) or self._summarize(key, response, question_end)
            name = qname.decode("ascii", "backslashreplace")
            yield (
                (wall, count, str(client[0]) if client else None, client[1] if client else None)
                + (str(transport),)
                + fields[0]
                + (name, QTYPES.get(qtype) or str(qtype))
                + verdict
                + summary
                + (upstream, round(latency_s * 1000, 3))
                + fields[1]
                + (reversed_name(name),)
            )

    def _store(self, chunks: Iterator[list[tuple[Any, ...]]], count: int) -> bool:
        """Insert every chunk in one transaction; False when the log is off or failing."""
        if not self.config.enabled:
            return False
        connection = self._open()
        if connection is None:
            self.dropped += count
            return False
        try:
            with connection:
                for rows in chunks:
                    connection.executemany(INSERT_ROW, rows)
        except sqlite3.Error as exc:
            self.dropped += count
            self._fail(exc)
            return False
        self.written += count
        return True

    def _row_chunks(self, batch: Sequence[list[Any]]) -> Iterator[list[tuple[Any, ...]]]:
        """Rows a few thousand at a time, each mirrored as it is made: a full window at once
        would be tens of megabytes that the heap keeps afterwards."""
        for start in range(0, len(batch), ROWS_AT_ONCE):
            rows = list(self._rows(batch[start : start + ROWS_AT_ONCE]))
            self._mirror(rows)
            yield rows

    def _summarize(self, tail: bytes, response: bytes, question_end: int) -> tuple[str, str]:
        summary = summarize(response, question_end)
        if len(self._summaries) > 10000:
            self._summaries.clear()
        self._summaries[tail] = summary
        return summary

    def _write_pending(self) -> None:
        window, self._window = self._window, {}
        if window:
            time.sleep(0.002)  # let a serving thread finish counting into the old window
        batch = list(window.values())
        if not batch:
            self._retain_if_due()
            return
        chunks = self._row_chunks(batch)
        stored = self._store(chunks, len(batch))
        for _rows in chunks:
            pass  # what the database did not take still reaches the mirror
        if not stored:
            return
        if len(batch) >= RELEASE_AFTER_ROWS:
            del batch, window
            release_memory()
        if self._failing is not None:
            log.warning(
                "query log %s is writable again; %d records were lost", self.path, self.dropped
            )
            self._failing = None
        self._retain_if_due()

    def _open(self) -> sqlite3.Connection | None:
        if self._connection is not None:
            return self._connection
        if time.monotonic() < self._retry_at:
            return None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._connection = connect(self.path, timeout_s=self.config.busy_timeout_s)
            except sqlite3.DatabaseError as exc:
                if not _is_corrupt(exc):
                    raise
                self._move_aside(exc)
                self._connection = connect(self.path, timeout_s=self.config.busy_timeout_s)
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
            return None
        return self._connection

    def _move_aside(self, exc: sqlite3.DatabaseError) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        self.path.rename(aside)
        for suffix in ("-wal", "-shm"):
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
        log.error("query log %s: %s; moved it to %s and started a new one", self.path, exc, aside)

    def _fail(self, exc: Exception) -> None:
        """Say it once, close, and try again in a few seconds."""
        reason = str(exc)
        if self._failing != reason:
            log.error(
                "query log %s: %s; still answering, dropping records until it recovers",
                self.path,
                reason,
            )
            self._failing = reason
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None
        self._retry_at = time.monotonic() + 5.0

    def _retain_if_due(self) -> None:
        now = time.monotonic()
        if not self.config.enabled or (now - self._last_retention < 60 and not self._stopping):
            return
        connection = self._open()
        if connection is None:
            return
        self._last_retention = now
        cutoff = time.time() - self.config.days * 86400
        try:
            with connection:
                connection.execute("DELETE FROM queries WHERE ts < ?", (cutoff,))
                connection.execute(
                    "DELETE FROM queries WHERE id <= (SELECT max(id) FROM queries) - ?",
                    (self.config.max_rows,),
                )
        except sqlite3.Error as exc:
            self._fail(exc)

    def _mirror(self, rows: list[tuple[Any, ...]]) -> None:
        target = self.config.jsonl
        if not target:
            return
        try:
            if self._jsonl is None:
                self._jsonl = sys.stdout if target == "-" else open(target, "a", encoding="utf-8")  # noqa: SIM115
            write = self._jsonl.write
            for row in rows:
                write(
                    json.dumps(dict(zip(COLUMNS, row, strict=False)), separators=(",", ":")) + "\n"
                )
            self._jsonl.flush()
        except OSError as exc:
            if self._failing != str(exc):
                log.error("query log mirror %s: %s", target, exc)
                self._failing = str(exc)
            self._jsonl = None


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text or "corrupt" in text
