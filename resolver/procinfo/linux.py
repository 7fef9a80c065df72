"""Linux: a query's client socket via netlink sock_diag (or /proc/net), its process via /proc."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from aidns.resolver.procinfo.common import (
    CMDLINE_READ_BYTES,
    DEFAULT_BUDGET_S,
    SOCKET_FALLBACK_S,
    SocketOwner,
    out_of_time,
    trim_cmdline,
    user_name,
)
from aidns.resolver.procinfo.netlink import NetlinkSockets
from aidns.resolver.procinfo.pids import PidFinder, read_head
from aidns.resolver.procinfo.sockets import ProcNetSockets, SocketTable
from aidns.resolver.query import ProcessInfo, Transport

CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
CAP_SYS_PTRACE = 19
DESCRIBED_PROCESSES = 1024
LATER_SLICE_S = 0.005  # find_later checks the socket is still there this often
NEEDS_PRIVILEGE = "visible only to root, or with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"


class FallbackSockets:
    """Netlink for each protocol it can serve, /proc/net for the rest."""

    def __init__(self, proc_root: Path = Path("/proc"), use_netlink: bool = True):
        self.procnet = ProcNetSockets(proc_root)
        self.netlink: NetlinkSockets | None = None
        if use_netlink:
            try:
                self.netlink = NetlinkSockets()
            except OSError:
                self.netlink = None

    def owner(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        deadline: float,
    ) -> SocketOwner | None:
        if self.netlink is not None and transport in self.netlink.protocols:
            try:
                return self.netlink.owner(transport, server, client, deadline)
            except OSError:
                pass
        return self.procnet.owner(transport, server, client, deadline)


def _may_read_all_processes(proc_root: Path) -> bool:
    """True when we may list another user's /proc/PID/fd (CAP_DAC_READ_SEARCH or
    CAP_DAC_OVERRIDE) and read its links (CAP_SYS_PTRACE); root usually has all three."""
    try:
        with open(proc_root / "self" / "status", "rb") as status:
            for line in status:
                if line.startswith(b"CapEff:"):
                    effective = int(line.split()[1], 16)
                    listing = (1 << CAP_DAC_READ_SEARCH) | (1 << CAP_DAC_OVERRIDE)
                    return bool(effective & (1 << CAP_SYS_PTRACE)) and bool(effective & listing)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


class _NoNetlink(threading.local):
    """holds() without netlink here: it asks the socket table through client_socket."""


class LinuxProcessLookup:
    """ProcessLookup for Linux: socket table first (uid, inode), then /proc for the pid.

    What /proc says of a process (name, executable, command line) is read once and kept by
    (pid, start time, name): a pid used again, or a process that runs another program under
    another name, is read afresh.
    """

    identifies_sockets = True

    def __init__(
        self,
        proc_root: Path = Path("/proc"),
        sockets: SocketTable | None = None,
        use_netlink: bool = True,
    ):
        self._proc_root = proc_root
        self.sockets = sockets if sockets is not None else FallbackSockets(proc_root, use_netlink)
        self.pids = PidFinder(proc_root)
        self._lock = threading.Lock()
        # find_later's own socket table and /proc view, made on first use: `find` never waits
        self._later: tuple[SocketTable, PidFinder] | None = None
        self._later_lock = threading.Lock()
        self._use_netlink = use_netlink
        self._checkers: threading.local = threading.local()  # holds()'s netlink, per thread
        self._euid = os.geteuid()
        self.sees_all = _may_read_all_processes(proc_root)
        self._described: dict[tuple[int, bytes, bytes], tuple[str, str | None, str | None]] = {}

    def client_socket(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        fallback_s: float = SOCKET_FALLBACK_S,
    ) -> SocketOwner | None:
        deadline = time.monotonic() + fallback_s
        if not self._lock.acquire(timeout=max(fallback_s, 0.0005)):
            return None
        try:
            return self.sockets.owner(transport, server, client, deadline)
        except OSError:  # not an IP address, or the socket table could not be read
            return None
        finally:
            self._lock.release()

    def holds(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        identity: tuple[int, int],
    ) -> bool:
        """True while the client's address and port belong to the socket (inode, cookie)
        `identity`. Each thread asks through a netlink socket of its own, without a lock."""
        checker = getattr(self._checkers, "netlink", None)
        if checker is None:
            if not self._use_netlink or isinstance(self._checkers, _NoNetlink):
                owner = self.client_socket(transport, server, client, fallback_s=0.0)
                return owner is not None and owner.identity == identity
            try:
                checker = self._checkers.netlink = NetlinkSockets()
            except OSError:
                self._checkers = _NoNetlink()
                return False
            if transport not in checker.protocols:
                self._checkers = _NoNetlink()
                return False
        try:
            return checker.holds(transport, server, client, identity)
        except OSError:
            return False

    def find(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        budget_s: float = DEFAULT_BUDGET_S,
        owner: SocketOwner | None = None,
    ) -> ProcessInfo | None:
        deadline = time.monotonic() + budget_s
        if not self._lock.acquire(timeout=budget_s):
            return None
        try:
            if owner is None:
                try:
                    owner = self.sockets.owner(transport, server, client, deadline)
                except OSError:  # not an IP address, or the socket table could not be read
                    return None
            if owner is None:
                return None
            user = user_name(owner.uid)
            if not self.sees_all and owner.uid != self._euid:
                note = f"another user's process: {NEEDS_PRIVILEGE}"
                return ProcessInfo(None, None, uid=owner.uid, user=user, note=note)
            search = self.pids.find(owner.inode, owner.uid, deadline)
        finally:
            self._lock.release()
        if search.pid is None:
            if search.out_of_time:
                note = out_of_time(budget_s)
            elif search.denied:
                note = f"process not readable: {NEEDS_PRIVILEGE}"
            else:
                note = "no visible process holds the socket (closed, or another pid namespace)"
            return ProcessInfo(None, None, uid=owner.uid, user=user, note=note)
        return self.describe(search.pid, owner.uid, user)

    def find_later(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        owner: SocketOwner,
        budget_s: float,
    ) -> ProcessInfo | None:
        """The search goes on with a /proc view of its own, so that `find` never waits for it,
        in slices of LATER_SLICE_S; it ends as soon as the client's socket is gone."""
        deadline = time.monotonic() + budget_s
        scanned: set[int] = set()
        with self._later_lock:
            if self._later is None:
                table: SocketTable = FallbackSockets(self._proc_root, self._use_netlink)
                self._later = table, PidFinder(self._proc_root)
            sockets, pids = self._later
            while time.monotonic() < deadline:
                try:
                    now = sockets.owner(transport, server, client, time.monotonic())
                except OSError:
                    return None
                if now is None or now.identity != owner.identity:
                    return None  # closed: the program has its answer and is gone
                slice_end = min(deadline, time.monotonic() + LATER_SLICE_S)
                search = pids.find(owner.inode, owner.uid, slice_end, scanned)
                if search.pid is not None:
                    return self.describe(search.pid, owner.uid, user_name(owner.uid))
                if not search.out_of_time:
                    return None
                scanned.update(pids.scanned)
        return None

    def describe(self, pid: int, uid: int | None = None, user: str | None = None) -> ProcessInfo:
        """Name, executable and command line of `pid`, as far as it still exists."""
        base = f"{self._proc_root}/{pid}"
        try:
            head = read_head(f"{base}/stat")
            name_bytes = head[head.index(b"(") + 1 : head.rindex(b")")]
            started = head[head.rindex(b")") + 2 :].split()[19]
        except (OSError, ValueError, IndexError):
            return self._read(base, pid, uid, user)
        key = (pid, started, name_bytes)
        known = self._described.get(key)
        if known is None:
            info = self._read(base, pid, uid, user)
            if info.name is not None:
                if len(self._described) >= DESCRIBED_PROCESSES:
                    self._described.clear()
                self._described[key] = (info.name, info.exe, info.cmdline)
            return info
        name, exe, cmdline = known
        return ProcessInfo(pid, name, exe=exe, cmdline=cmdline, uid=uid, user=user)

    def _read(self, base: str, pid: int, uid: int | None, user: str | None) -> ProcessInfo:
        name = exe = cmdline = None
        try:
            with open(f"{base}/comm", "rb") as comm:
                name = comm.read().rstrip(b"\n").decode("utf-8", "replace") or None
            exe = os.readlink(f"{base}/exe").removesuffix(" (deleted)")
        except OSError:
            pass
        try:
            with open(f"{base}/cmdline", "rb") as raw:
                cmdline = trim_cmdline(raw.read(CMDLINE_READ_BYTES))
        except OSError:
            pass
        return ProcessInfo(pid, name, exe=exe, cmdline=cmdline, uid=uid, user=user)
