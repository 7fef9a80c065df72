"""Linux: the process holding a socket inode, found by reading /proc/PID/fd links."""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


@dataclass(frozen=True, slots=True)
class PidSearch:
    """How a search for a socket's process ended."""

    pid: int | None
    out_of_time: bool = False
    denied: bool = False  # some processes' fds could not be read


class _Miss(Enum):
    ABSENT = "absent"
    DENIED = "denied"
    OUT_OF_TIME = "out of time"


class PidFinder:
    """Finds the process holding socket inode N by reading /proc/PID/fd links, likeliest first.

    Order: the process last seen holding this inode; the 16 last matched processes at the fds
    that matched; processes first seen in the last 2 s, newest first; those 16 in full;
    processes of the socket's uid, newest first; then the rest, newest first. Newest means
    latest start time, not highest pid: pids wrap. `clock` is the clock of the deadlines too.

    Processes started since the last look are found from the last pid the kernel handed out
    (/proc/loadavg), which is much cheaper than listing /proc; /proc is listed only when the
    likely candidates did not hold the socket, or too many pids went by.
    """

    def __init__(
        self,
        proc_root: Path = Path("/proc"),
        clock: Callable[[], float] = time.monotonic,
        recent_size: int = 16,
        new_window_s: float = 2.0,
        known_sockets: int = 4096,
        max_probe: int = 64,
    ):
        self._proc = str(proc_root)
        self._clock = clock
        self._recent_size = recent_size
        self._new_window_s = new_window_s
        self._known_sockets = known_sockets
        self._max_probe = max_probe
        self._first_seen: dict[int, float] = {}
        self._fresh: dict[int, float] = {}  # first seen within the window, oldest first
        self._started: dict[int, tuple[int, int]] = {}  # pid -> (start time in ticks, pid)
        self._uids: dict[int, int] = {}
        self._fd_names: dict[int, frozenset[str]] = {}
        # pid -> the last two fds that matched: a client that opens its next socket before
        # closing the last one alternates between two fd numbers
        self._recent: OrderedDict[int, tuple[str, ...]] = OrderedDict()
        self._sockets: OrderedDict[int, tuple[int, str]] = OrderedDict()  # inode -> pid, fd
        self._pid_max = _read_int(f"{self._proc}/sys/kernel/pid_max") or 4194304
        self._last_pid: int | None = None
        self._listed = False
        self.listings = 0  # full listings of /proc, for tests and benchmarks
        self.scanned: list[int] = []  # pids whose fds the last search read, in order
        self._list(clock())  # what runs now is old; what starts later is new
        for pid in self._first_seen:
            self._start_key(pid)

    def find(
        self, inode: int, uid: int | None, deadline: float, skip: Iterable[int] = ()
    ) -> PidSearch:
        """`skip`: processes a search for this inode just read in full (see `scanned`)."""
        self.scanned = []
        target = f"socket:[{inode}]"
        known = self._sockets.get(inode)
        if known is not None and self._holds(known[0], known[1], target):
            return self._found(known[0], known[1])
        for which in (0, 1):
            for pid, fds in reversed(self._recent.items()):
                if len(fds) > which and self._holds(pid, fds[which], target):
                    return self._found(pid, fds[which])
        denied = False
        for pid in self._search_order(uid, set(skip)):
            found = self._scan(pid, target, deadline)
            if isinstance(found, str):
                return self._found(pid, found)
            if found is _Miss.OUT_OF_TIME:
                return PidSearch(None, out_of_time=True, denied=denied)
            denied = denied or found is _Miss.DENIED
        return PidSearch(None, denied=denied)

    def _search_order(self, uid: int | None, done: set[int]) -> Iterator[int]:
        now = self._clock()
        listed = not self._probe(now)
        if listed:
            self._list(now)
        cutoff = now - self._new_window_s
        fresh = self._fresh
        for pid in [p for p, seen in fresh.items() if seen < cutoff]:
            del fresh[pid]
        for pid in (*reversed(fresh), *reversed(self._recent)):
            if pid not in done and pid in self._first_seen:
                done.add(pid)
                yield pid
        if not listed:
            self._list(now)
        rest = sorted(
            (p for p in self._first_seen if p not in done), key=self._start_key, reverse=True
        )
        if uid is not None:
            for pid in rest:
                if self._uid(pid) == uid:
                    done.add(pid)
                    yield pid
        for pid in rest:
            if pid not in done:
                yield pid

    def _probe(self, now: float) -> bool:
        """Note the processes started since the last look; False when /proc must be listed."""
        last = _read_last_pid(self._proc)
        previous, self._last_pid = self._last_pid, last
        if last is None or previous is None:
            return False
        span = (last - previous) % self._pid_max
        if span > self._max_probe:
            return False
        for offset in range(1, span + 1):
            pid = (previous + offset) % self._pid_max
            if pid not in self._first_seen and _read_tgid(self._proc, pid) == pid:
                self._first_seen[pid] = self._fresh[pid] = now
        return True

    def _list(self, now: float) -> set[int]:
        self.listings += 1
        self._last_pid = _read_last_pid(self._proc)
        try:
            names = os.listdir(self._proc)
        except OSError:
            return set()
        pids = {int(name) for name in names if name.isdigit()}
        seen = self._first_seen
        first = now if self._listed else float("-inf")
        for pid in sorted(pids - seen.keys()):
            seen[pid] = first
            if self._listed:
                self._fresh[pid] = first
        self._listed = True
        for pid in seen.keys() - pids:
            self._forget(pid)
        return pids

    def _start_key(self, pid: int) -> tuple[int, int]:
        """(start time, pid): field 22 of /proc/PID/stat, after the name in parentheses."""
        key = self._started.get(pid)
        if key is None:
            try:
                ticks = int(read_head(f"{self._proc}/{pid}/stat").rpartition(b")")[2].split()[19])
            except (OSError, ValueError, IndexError):
                ticks = 0
            key = self._started[pid] = (ticks, pid)
        return key

    def _forget(self, pid: int) -> None:
        self._first_seen.pop(pid, None)
        self._fresh.pop(pid, None)
        self._started.pop(pid, None)
        self._uids.pop(pid, None)
        self._fd_names.pop(pid, None)
        self._recent.pop(pid, None)

    def _found(self, pid: int, fd: str) -> PidSearch:
        before = self._recent.get(pid, ())
        self._recent[pid] = (fd, before[0]) if before and before[0] != fd else (fd,)
        self._recent.move_to_end(pid)
        if len(self._recent) > self._recent_size:
            self._recent.popitem(last=False)
        return PidSearch(pid)

    def _holds(self, pid: int, fd: str, target: str) -> bool:
        try:
            return os.readlink(f"{self._proc}/{pid}/fd/{fd}") == target
        except OSError:
            return False

    def _uid(self, pid: int) -> int | None:
        uid = self._uids.get(pid)
        if uid is None:
            try:
                uid = os.stat(f"{self._proc}/{pid}").st_uid
            except OSError:
                return None
            self._uids[pid] = uid
        return uid

    def _scan(self, pid: int, target: str, deadline: float) -> str | _Miss:
        """The fd of `pid` that links to `target`, or why there is none."""
        if self._clock() > deadline:
            return _Miss.OUT_OF_TIME
        self.scanned.append(pid)
        try:
            fd_dir = os.open(f"{self._proc}/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY)
        except PermissionError:
            return _Miss.DENIED
        except OSError:
            self._forget(pid)  # exited
            return _Miss.ABSENT
        try:
            names = os.listdir(fd_dir)
            before = self._fd_names.get(pid)
            self._fd_names[pid] = frozenset(names)
            if before is not None:  # fds opened since the last look are likelier
                names.sort(key=before.__contains__)
            sockets = self._sockets
            for index, name in enumerate(names):
                if index & 15 == 15 and self._clock() > deadline:
                    return _Miss.OUT_OF_TIME
                try:
                    link = os.readlink(name, dir_fd=fd_dir)
                except OSError:
                    continue
                if link == target:
                    return name
                if link.startswith("socket:["):
                    sockets[int(link[8:-1])] = (pid, name)
                    if len(sockets) > self._known_sockets:
                        sockets.popitem(last=False)
            return _Miss.ABSENT
        except PermissionError:
            return _Miss.DENIED
        except OSError:
            return _Miss.ABSENT
        finally:
            os.close(fd_dir)


def read_head(path: str, size: int = 1024) -> bytes:
    """The first `size` bytes of a small /proc file, without a buffered file object."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


def _read_int(path: str) -> int | None:
    try:
        with open(path, "rb") as file:
            return int(file.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_last_pid(proc: str) -> int | None:
    """The last pid (or thread id) handed out in our pid namespace: /proc/loadavg's 5th field."""
    try:
        return int(read_head(f"{proc}/loadavg").split()[4])
    except (OSError, ValueError, IndexError):
        return None


def _read_tgid(proc: str, pid: int) -> int | None:
    """The process a pid belongs to; a thread's id gives its process's, a process's its own."""
    try:
        fd = os.open(f"{proc}/{pid}/status", os.O_RDONLY)
    except OSError:
        return None
    try:
        head = os.read(fd, 512)
    except OSError:
        return None
    finally:
        os.close(fd)
    at = head.find(b"\nTgid:")
    if at < 0:
        return None
    try:
        return int(head[at + 6 : head.index(b"\n", at + 6)])
    except ValueError:
        return None
