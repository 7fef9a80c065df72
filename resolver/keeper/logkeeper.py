"""The server's side of the query-log keeper: runs the child, sends it records, keeps count.

The serving threads only append records (`QueryRecorder`); one sender thread here takes them
in batches and writes them to the child over a socket pair, and one reader thread per child
gathers the counts it sends back. Row building, SQLite and the JSON-lines mirror all happen
in the child, under its own interpreter lock. A child that dies is said in the log and
replaced; the queries it had not written are counted as dropped. DNS never waits for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from aidns.resolver.config import QueryLogConfig
from aidns.resolver.querylog.recorder import QueryRecorder

log = logging.getLogger(__name__)

CHILD_MODULE = "aidns.resolver.keeper.logwriter"
GATHER_S = 0.05  # records this close together go over in one write
RESTART_AFTER_S = (1.0, 60.0)  # the wait before a new child doubles from the first to the last
STOP_TIMEOUT_S = 15.0
COUNT_NAMES = ("written", "dropped", "mirror_dropped")
DROPS_SAID_EVERY_S = 10.0


class _Child:
    """One keeper child: its process, our end of the link, and what it has said."""

    def __init__(
        self,
        command: list[str],
        link: socket.socket,
        theirs: socket.socket,
        wake: Callable[[], None],
    ) -> None:
        self.link = link
        self.wake = wake  # the sender notices a child gone at once, not at the next query
        self.process = subprocess.Popen(
            [*command, f"--fd={theirs.fileno()}"],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.started_at = time.monotonic()
        self.sent = 0  # queries whose records went over whole
        self.said = dict.fromkeys(COUNT_NAMES, 0)
        self.gone = threading.Event()
        self.reader = threading.Thread(target=self._read, name="querylog-counts", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        rest = b""
        try:
            while chunk := self.link.recv(4096):
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines[-1:]:  # counts are cumulative: the last line says all
                    said = json.loads(line)
                    self.said = {name: int(said.get(name, 0)) for name in COUNT_NAMES}
        except (OSError, ValueError) as exc:
            log.error("query log writer: reading its counts: %s", exc)
        finally:
            self.gone.set()
            self.wake()

    def send(self, records: bytes, count: int) -> bool:
        try:
            self.link.sendall(records)
        except OSError:
            return False
        self.sent += count
        return True

    def finish(self, timeout_s: float) -> int | None:
        """Close our side, let the child write what it has, and reap it; its exit status."""
        with contextlib.suppress(OSError):
            self.link.shutdown(socket.SHUT_WR)
        self.gone.wait(timeout_s)
        try:
            status = self.process.wait(timeout=max(0.1, timeout_s / 3))
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        self.reader.join(1.0)
        self.link.close()
        return status


class LogKeeper:
    """Feeds `recorder`'s records to a query-log keeper child, and counts for `status`:
    every query handed to the recorder ends up written or dropped once stopped."""

    def __init__(
        self,
        recorder: QueryRecorder,
        db_path: Path,
        config: QueryLogConfig,
        *,
        restart_after_s: tuple[float, float] = RESTART_AFTER_S,
        drops_said_every_s: float = DROPS_SAID_EVERY_S,
    ) -> None:
        self.recorder = recorder
        self.command = [
            sys.executable,
            "-m",
            CHILD_MODULE,
            f"--db={db_path}",
            f"--config={json.dumps(dataclasses.asdict(config))}",
            f"--log-level={logging.getLevelName(logging.getLogger().getEffectiveLevel())}",
        ]
        self.starts = 0
        self._restart_after_s = restart_after_s
        self._wait_s = restart_after_s[0]
        self._next_start = 0.0
        self._child: _Child | None = None
        self._lock = threading.Lock()  # guards the child switch and the counts of the gone
        self._before = dict.fromkeys(COUNT_NAMES, 0)  # what children now gone had said
        self._lost = 0  # queries sent to a child that died before writing them, or never sent
        self._said = 0  # drops said so far
        self._said_by_reason: dict[str, int] = {}
        self._said_at = -math.inf
        self._drops_said_every_s = drops_said_every_s
        self._stopping = threading.Event()
        self._sender = threading.Thread(target=self._send_loop, name="querylog-send", daemon=True)

    def start(self) -> None:
        self._start_child()
        self._sender.start()

    def counts(self) -> dict[str, int]:
        with self._lock:
            said = self._child.said if self._child else dict.fromkeys(COUNT_NAMES, 0)
            counts = {name: self._before[name] + said[name] for name in COUNT_NAMES}
            counts["dropped"] += self._lost + self.recorder.dropped
        return counts

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Send what is queued, let the child write it, and wait for it to exit."""
        self._stopping.set()
        self.recorder.has_records.set()
        self._sender.join(timeout_s + 5)

    def _send_loop(self) -> None:
        recorder = self.recorder
        while True:
            recorder.has_records.wait()
            stopping = self._stopping.wait(GATHER_S)
            child = self._live_child()
            if child is None and not stopping:
                if self._stopping.wait(max(0.0, self._next_start - time.monotonic())):
                    continue
                child = self._start_child()
            records, count = recorder.take()
            if records and (child is None or not child.send(records, count)):
                with self._lock:
                    self._lost += count
            self._say_drops()
            if stopping and not recorder.pending():
                break
        with self._lock:
            child = self._child
        if child is not None:
            child.finish(STOP_TIMEOUT_S)
            self._retire(child)
        self._say_drops(final=True)

    def _say_drops(self, final: bool = False) -> None:
        """One warning per `drops_said_every_s` at most, with the drops since the last one."""
        with self._lock:
            said = self._child.said if self._child else dict.fromkeys(COUNT_NAMES, 0)
            reasons = {
                "the server's buffer for the log writer was full": self.recorder.dropped,
                "the log writer was not running": self._lost,
                "the log writer or its database did not take them": self._before["dropped"]
                + said["dropped"],
            }
        dropped = sum(reasons.values())
        now = time.monotonic()
        if dropped == self._said or (not final and now - self._said_at < self._drops_said_every_s):
            return
        since = f"in the last {now - self._said_at:.0f} s" if self._said else "so far"
        new = dropped - self._said
        news = {why: count - self._said_by_reason.get(why, 0) for why, count in reasons.items()}
        log.warning(
            "query log: %d answered %s not logged %s (%s); %d in all",
            new,
            "query was" if new == 1 else "queries were",
            since,
            ", ".join(f"{count} because {why}" for why, count in news.items() if count),
            dropped,
        )
        self._said = dropped
        self._said_by_reason = reasons
        self._said_at = now

    def _live_child(self) -> _Child | None:
        child = self._child
        if child is None:
            return None
        if not child.gone.is_set() and child.process.poll() is None:
            return child
        status = child.finish(1.0)
        self._retire(child)
        log.error(
            "query log writer (pid %d) exited with status %s; starting another in %.0f s",
            child.process.pid,
            status,
            max(0.0, self._next_start - time.monotonic()),
        )
        return None

    def _retire(self, child: _Child) -> None:
        with self._lock:
            for name in COUNT_NAMES:
                self._before[name] += child.said[name]
            self._lost += max(0, child.sent - child.said["written"] - child.said["dropped"])
            if self._child is child:
                self._child = None
        if time.monotonic() - child.started_at > self._restart_after_s[1]:
            self._wait_s = self._restart_after_s[0]  # it ran well for a while: start over
        if child.process.returncode != 0:
            self._next_start = time.monotonic() + self._wait_s
            self._wait_s = min(self._wait_s * 2, self._restart_after_s[1])

    def _start_child(self) -> _Child | None:
        link, theirs = socket.socketpair()
        try:
            child = _Child(self.command, link, theirs, self.recorder.has_records.set)
        except OSError as exc:
            link.close()
            theirs.close()
            log.error("cannot start the query log writer: %s", exc.strerror or exc)
            self._next_start = time.monotonic() + self._wait_s
            return None
        self.starts += 1
        self.recorder.start_over()
        with self._lock:
            self._child = child
        return child
