"""macOS: the process behind a query's client socket, via libproc through ctypes, or lsof."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator

from aidns.resolver.procinfo.common import (
    DEFAULT_BUDGET_S,
    NoSocketIdentity,
    SocketOwner,
    user_name,
)
from aidns.resolver.procinfo.libproc import CLibProc, InetSocket, LibProc
from aidns.resolver.procinfo.lsof import lsof_command, parse_lsof_fields, pick_lsof_socket
from aidns.resolver.query import ProcessInfo, Transport


def is_client_socket(
    sock: InetSocket, transport: Transport, server: tuple[str, int], client: tuple[str, int]
) -> bool:
    """The client's end: local port is the client's, remote is the server or, for an
    unconnected UDP socket, nothing."""
    protocol = socket.IPPROTO_UDP if transport is Transport.UDP else socket.IPPROTO_TCP
    if sock.protocol != protocol or sock.local_port != client[1]:
        return False
    if sock.remote_port == server[1]:
        return True
    return transport is Transport.UDP and sock.remote_port == 0


class MacProcessLookup(NoSocketIdentity):
    """ProcessLookup for macOS: libproc, searched newest process first; lsof without libproc.

    libproc is asked per process (no socket table to ask first), so without root only our own
    user's processes are seen. Most macOS programs resolve through mDNSResponder, which is
    then what aidns sees.
    """

    def __init__(
        self,
        libproc: LibProc | None = None,
        lsof: str | None = None,
        use_libproc: bool = True,
        recent_size: int = 16,
        new_window_s: float = 2.0,
    ):
        if libproc is None and use_libproc:
            try:
                libproc = CLibProc()
            except (OSError, AttributeError):
                libproc = None
        self.libproc = libproc
        self.lsof = lsof if lsof is not None else shutil.which("lsof")
        self._recent: OrderedDict[int, int] = OrderedDict()  # pid -> fd that last matched
        self._recent_size = recent_size
        self._new_window_s = new_window_s
        self._first_seen: dict[int, float] = {}
        self._lock = threading.Lock()
        if libproc is not None:
            self._list(float("-inf"))

    def find(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        budget_s: float = DEFAULT_BUDGET_S,
        owner: SocketOwner | None = None,
    ) -> ProcessInfo | None:
        deadline = time.monotonic() + budget_s
        if self.libproc is None:
            return self._find_with_lsof(transport, server, client, deadline) if self.lsof else None
        if not self._lock.acquire(timeout=budget_s):
            return None
        try:
            hit = self._search(self.libproc, transport, server, client, deadline)
        finally:
            self._lock.release()
        if hit is None:
            return None  # no socket table to ask first: without the process, no uid either
        pid, uid = hit
        info = self.libproc.describe(pid)
        return info if info is not None else ProcessInfo(pid, None, uid=uid, user=user_name(uid))

    def _search(
        self,
        libproc: LibProc,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        deadline: float,
    ) -> tuple[int, int] | None:
        for pid, fd in reversed(self._recent.items()):
            sock = libproc.socket(pid, fd)
            if sock is not None and is_client_socket(sock, transport, server, client):
                self._remember(pid, fd)
                return pid, sock.uid
        for pid in self._search_order():
            if time.monotonic() > deadline:
                return None
            for fd in libproc.socket_fds(pid) or ():
                sock = libproc.socket(pid, fd)
                if sock is not None and is_client_socket(sock, transport, server, client):
                    self._remember(pid, fd)
                    return pid, sock.uid
        return None

    def _search_order(self) -> Iterator[int]:
        now = time.monotonic()
        pids = self._list(now)
        cutoff = now - self._new_window_s
        seen = self._first_seen
        new = sorted((p for p in pids if seen[p] >= cutoff), reverse=True)
        recent = [p for p in reversed(self._recent) if p in seen]
        done: set[int] = set()
        for pid in (*new, *recent, *sorted(pids, key=lambda p: (seen[p], p), reverse=True)):
            if pid not in done:
                done.add(pid)
                yield pid

    def _list(self, now: float) -> set[int]:
        assert self.libproc is not None
        pids = set(self.libproc.list_pids())
        for pid in pids - self._first_seen.keys():
            self._first_seen[pid] = now
        for pid in self._first_seen.keys() - pids:
            del self._first_seen[pid]
            self._recent.pop(pid, None)
        return pids

    def _remember(self, pid: int, fd: int) -> None:
        self._recent[pid] = fd
        self._recent.move_to_end(pid)
        if len(self._recent) > self._recent_size:
            self._recent.popitem(last=False)

    def _find_with_lsof(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        deadline: float,
    ) -> ProcessInfo | None:
        """Starting lsof alone takes longer than the default budget: this is a last resort."""
        command = lsof_command(transport, client)
        command[0] = self.lsof or "lsof"
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=max(deadline - time.monotonic(), 0.001),
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        sock = pick_lsof_socket(parse_lsof_fields(done.stdout), transport, server, client)
        if sock is None:
            return None
        user = sock.login or (user_name(sock.uid) if sock.uid is not None else None)
        return ProcessInfo(sock.pid, sock.command, uid=sock.uid, user=user)
