"""The query log: every query in SQLite, written in batches off the serving path.

Description:
    The pipeline hands each finished query to `QueryLog`. Identical queries (same client,
    process, name, type and decision) within one batch window of a second become one
    row with a `count`, so a flood costs a dict increment per query, not an insert; the
    pipeline hands over a socket's repeats already counted. One writer thread inserts each
    window (WAL mode), applies retention, and can mirror every row as a JSON line. When the
    window is full, new records are dropped and counted: logging never slows an answer.
    Every query handed over ends up counted as written or dropped, and drops are said in
    aidns's log, at most once every 10 s with the number since the last time. A file that
    was deleted, replaced or damaged is handled by `LogDatabase`; a full disk or a locked
    database is reported once, and the writer tries again.
Configuration:
    query_log (on/off), query_log_days, query_log_rows, query_log_jsonl (a path, or "-").
Example:
    query_log_days: 14
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from aidns.resolver.config import QueryLogConfig
from aidns.resolver.memory import release_memory
from aidns.resolver.query import Decision, ProcessInfo, Query
from aidns.resolver.querylog.database import LogDatabase
from aidns.resolver.querylog.schema import COLUMNS, INSERT_ROW, reversed_name
from aidns.resolver.querylog.summary import summarize

log = logging.getLogger(__name__)

ROWS_AT_ONCE = 2000
RELEASE_AFTER_ROWS = 5000  # a batch this big leaves megabytes the heap would otherwise keep
QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA"}
QTYPES |= {33: "SRV", 35: "NAPTR", 43: "DS", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS", 255: "ANY"}


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
DROPS_SAID_EVERY_S = 10.0


class QueryLog:
    """Observer that records each finished query; call `start` before and `stop` after serving.

    Counts are of queries (a row with `count` 5 is five): `written` the database committed,
    or with the database off the JSON-lines file took; `dropped` every other one it was
    handed; `mirror_dropped` those the JSON-lines file missed while the database is on.
    The window and `_dropped_at_intake` are shared with the serving threads under `_lock`;
    everything else belongs to the writer thread.
    """

    def __init__(
        self,
        path: Path,
        config: QueryLogConfig = DEFAULT_CONFIG,
        *,
        retry_after_s: float = 5.0,
        drops_said_every_s: float = DROPS_SAID_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.config = config
        self.written = 0
        self.mirror_dropped = 0
        self.ready = threading.Event()  # set once the writer has opened the log, or tried to
        self.database = LogDatabase(
            path, busy_timeout_s=config.busy_timeout_s, retry_after_s=retry_after_s, clock=clock
        )
        self._lock = threading.Lock()
        self._window: dict[tuple[Any, ...], list[Any]] = {}
        self._room = config.window_entries  # 0 once stopped
        self._dropped_at_intake = 0  # window full, or the log stopped
        self._dropped_at_write = 0  # the database (or the JSON-lines file) did not take them
        self._said = (0, 0)  # the two drop counts as the last drop warning left them
        self._said_at = -math.inf
        self._drops_said_every_s = drops_said_every_s
        self._clock = clock
        self._wake = threading.Event()  # set when the window fills from empty, and to stop
        self._stopped = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._jsonl: TextIO | None = None
        self._mirror_failing: str | None = None
        self._last_retention = -math.inf
        self._summaries: dict[bytes, tuple[str, str]] = {}
        self._unexpected: set[str] = set()  # kinds of error said once

    @property
    def dropped(self) -> int:
        return self._dropped_at_intake + self._dropped_at_write

    def counts(self) -> dict[str, int]:
        """For `status`: written + dropped is every query handed over and no longer pending."""
        counts = {"written": self.written, "dropped": self.dropped}
        if self.config.enabled and self.config.jsonl:
            counts["mirror_dropped"] = self.mirror_dropped
        return counts

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
        with self._lock:
            entry = self._window.get(key)
            if entry is not None:
                entry[0] += count
                return
            if len(self._window) >= self._room:
                self._dropped_at_intake += count
                return
            if not self._window:
                self._wake.set()
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
        """Write what is queued and close; what comes later is dropped."""
        self._stopping = True
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            self._room = 0
            late, self._window = self._window, {}
            self._dropped_at_intake += sum(entry[0] for entry in late.values())
        self._say_drops(final=True)
        self.database.close()
        if self._jsonl is not None and self._jsonl is not sys.stdout:
            with contextlib.suppress(OSError):
                self._jsonl.close()

    def _run(self) -> None:
        if self.config.enabled:
            self._guarded(self.database.connection)  # so the commands find a log from the start
        self.ready.set()
        while True:
            unsaid = (self._dropped_at_intake, self._dropped_at_write) != self._said
            # idle: asleep until a query comes, or ticking while some drops are not yet said
            self._wake.wait(self.config.batch_interval_s if unsaid else None)
            self._wake.clear()
            self._stopped.wait(self.config.batch_interval_s)  # the window fills meanwhile
            stopping = self._stopping
            self._guarded(self._write_pending)
            self._guarded(self._say_drops)
            if stopping:
                return

    def _guarded(self, step: Callable[[], object]) -> None:
        """Run one step of the writer; an error it did not expect is said once per kind."""
        try:
            step()
        except Exception as exc:
            kind = type(exc).__name__
            if kind not in self._unexpected:
                self._unexpected.add(kind)
                log.error("query log %s: %s: %s; the writer goes on", self.path, kind, exc)

    def _write_pending(self) -> None:
        """Write the window; every query in it ends up counted as written or dropped."""
        with self._lock:
            window, self._window = self._window, {}
        batch = list(window.values())
        if not batch:
            self._retain_if_due()
            return
        queries = sum(entry[0] for entry in batch)
        kept = 0
        try:
            kept = self._store(batch)
        finally:
            self.written += kept
            self._dropped_at_write += queries - kept
        if len(batch) >= RELEASE_AFTER_ROWS:
            del batch, window
            release_memory()
        if kept:
            self._retain_if_due()

    def _store(self, batch: Sequence[list[Any]]) -> int:
        """Insert the batch in one transaction and mirror it; the number of queries kept."""
        queries: int = sum(entry[0] for entry in batch)
        missed = [0]  # queries the mirror missed
        chunks = self._row_chunks(batch, missed)
        if not self.config.enabled:
            for _rows in chunks:
                pass
            return queries - missed[0]

        def insert(connection: sqlite3.Connection) -> None:
            for rows in chunks:
                connection.executemany(INSERT_ROW, rows)

        stored = self.database.write(insert)
        for _rows in chunks:
            pass  # what the database did not take still reaches the mirror
        self.mirror_dropped += missed[0]
        return queries if stored else 0

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

    def _row_chunks(
        self, batch: Sequence[list[Any]], missed: list[int]
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Rows a few thousand at a time, each mirrored as it is made: a full window at once
        would be tens of megabytes that the heap keeps afterwards. Adds to `missed[0]` the
        queries the mirror could not take."""
        for start in range(0, len(batch), ROWS_AT_ONCE):
            rows = list(self._rows(batch[start : start + ROWS_AT_ONCE]))
            if not self._mirror(rows):
                missed[0] += sum(row[1] for row in rows)
            yield rows

    def _summarize(self, tail: bytes, response: bytes, question_end: int) -> tuple[str, str]:
        summary = summarize(response, question_end)
        if len(self._summaries) > 10000:
            self._summaries.clear()
        self._summaries[tail] = summary
        return summary

    def _retain_if_due(self) -> None:
        now = self._clock()
        if not self.config.enabled or (now - self._last_retention < 60 and not self._stopping):
            return
        self._last_retention = now
        cutoff = time.time() - self.config.days * 86400

        def retain(connection: sqlite3.Connection) -> None:
            connection.execute("DELETE FROM queries WHERE ts < ?", (cutoff,))
            connection.execute(
                "DELETE FROM queries WHERE id <= (SELECT max(id) FROM queries) - ?",
                (self.config.max_rows,),
            )

        self.database.write(retain)

    def _mirror(self, rows: list[tuple[Any, ...]]) -> bool:
        """Append the rows to the JSON-lines file, if there is one; False when that failed."""
        target = self.config.jsonl
        if not target:
            return True
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
            if self._mirror_failing != str(exc):
                log.error("query log mirror %s: %s", target, exc)
                self._mirror_failing = str(exc)
            self._jsonl = None
            return False
        if self._mirror_failing is not None:
            log.warning("query log mirror %s is writable again", target)
            self._mirror_failing = None
        return True

    def _say_drops(self, final: bool = False) -> None:
        """One warning per `drops_said_every_s` at most, with the drops since the last one."""
        now_counts = (self._dropped_at_intake, self._dropped_at_write)
        at_intake, at_write = (now - said for now, said in zip(now_counts, self._said, strict=True))
        if not (at_intake or at_write):
            return
        now = self._clock()
        if not final and now - self._said_at < self._drops_said_every_s:
            return
        since = f"in the last {now - self._said_at:.0f} s" if self._said > (0, 0) else "so far"
        reasons = []
        if at_intake:
            reasons.append(
                f"{at_intake} because more than {self.config.window_entries} different queries "
                "came within one write"
            )
        if at_write:
            target = "the database" if self.config.enabled else "the JSON-lines file"
            reasons.append(f"{at_write} because {target} did not take them")
        dropped = at_intake + at_write
        log.warning(
            "query log: %d answered %s not logged %s (%s); %d in all",
            dropped,
            "query was" if dropped == 1 else "queries were",
            since,
            ", ".join(reasons),
            sum(now_counts),
        )
        self._said = now_counts
        self._said_at = now
