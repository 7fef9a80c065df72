"""Linux: a query's client socket via netlink sock_diag (or /proc/net), its process via /proc."""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

from aidns.resolver.procinfo.lookup import (
    CMDLINE_READ_BYTES,
    DEFAULT_BUDGET_S,
    trim_cmdline,
    user_name,
)
from aidns.resolver.query import ProcessInfo, Transport

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_S_GE = 2
INET_DIAG_BC_S_LE = 3
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
ALL_STATES = 0xFFFFFFFF
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
CAP_SYS_PTRACE = 19
NEEDS_PRIVILEGE = "visible only to root, or with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"

_NLMSGHDR = struct.Struct("=IHHII")
_REQ_HEAD = struct.Struct("=BBBxI")  # family, protocol, extensions, states
_SOCKID_PORTS = struct.Struct("!HH")  # inet_diag_sockid: ports in network order ...
_SOCKID_TAIL = struct.Struct("=III")  # ... then interface and the 64-bit cookie
_MSG_UID_INODE = struct.Struct("=II")  # inet_diag_msg.idiag_uid, idiag_inode
_MSG_LEN = 72  # sizeof(struct inet_diag_msg)
_NLA = struct.Struct("=HH")
_BC_OP = struct.Struct("=BBH")
_NLMSG_ERRNO = struct.Struct("=i")

_MAPPED_PREFIX = b"\0" * 10 + b"\xff\xff"
_WILDCARD = b"\0" * 16


@dataclass(frozen=True, slots=True)
class SocketOwner:
    """What the kernel's socket table says about a socket: whose it is, and its inode."""

    uid: int
    inode: int


class SocketTable(Protocol):
    """Finds the client's socket; `deadline` is on the time.monotonic() clock."""

    def owner(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        deadline: float,
    ) -> SocketOwner | None: ...


@dataclass(frozen=True, slots=True)
class _Candidate:
    family: int
    client_ip: bytes  # 4 or 16 bytes
    client_port: int
    server_ip: bytes
    server_port: int


def _packed(ip: str) -> tuple[int, bytes]:
    try:
        return socket.AF_INET, socket.inet_pton(socket.AF_INET, ip)
    except OSError:
        return socket.AF_INET6, socket.inet_pton(socket.AF_INET6, ip.split("%", 1)[0])


def candidates(server: tuple[str, int], client: tuple[str, int]) -> list[_Candidate]:
    """The (family, addresses) under which the client's socket may be filed, likeliest first.

    A client seen as ::ffff:a.b.c.d is usually an IPv4 socket, sometimes a dual-stack IPv6 one.
    A wildcard server address is replaced by the client's own: right for loopback, which is
    where aidns's clients are.
    """
    client_family, client_ip = _packed(client[0])
    server_family, server_ip = _packed(server[0])
    if server_family == socket.AF_INET6 and server_ip.startswith(_MAPPED_PREFIX):
        server_family, server_ip = socket.AF_INET, server_ip[12:]
    found = []
    if client_family == socket.AF_INET6 and client_ip.startswith(_MAPPED_PREFIX):
        v4 = client_ip[12:]
        v4_server = server_ip if server_family == socket.AF_INET and any(server_ip) else v4
        found.append(_Candidate(socket.AF_INET, v4, client[1], v4_server, server[1]))
        v6_server = _MAPPED_PREFIX + v4_server
        found.append(_Candidate(socket.AF_INET6, client_ip, client[1], v6_server, server[1]))
        return found
    if server_family != client_family or not any(server_ip):
        server_ip = client_ip
    found.append(_Candidate(client_family, client_ip, client[1], server_ip, server[1]))
    return found


@dataclass(frozen=True, slots=True)
class _Entry:
    """One socket as the kernel lists it: local and remote ends, owner, inode."""

    local_ip: bytes
    local_port: int
    remote_ip: bytes
    remote_port: int
    uid: int
    inode: int


def _pick(entries: Iterator[_Entry], want: _Candidate) -> SocketOwner | None:
    """The client's own socket among `entries`: its local end is the client's address and
    port, its remote end the server or nothing (an unconnected UDP socket)."""
    fallback = None
    width = len(want.client_ip)
    for entry in entries:
        local_ip = entry.local_ip[:width]
        if entry.local_port != want.client_port or (local_ip != want.client_ip and any(local_ip)):
            continue
        if entry.remote_port == want.server_port:
            return SocketOwner(entry.uid, entry.inode)
        if entry.remote_port == 0 and fallback is None:
            fallback = SocketOwner(entry.uid, entry.inode)
    return fallback


class NetlinkSockets:
    """sock_diag requests: an exact lookup of the 4-tuple, else a dump filtered by port.

    The kernel reads an exact request's addresses differently per protocol: a UDP lookup
    finds the socket a packet from "source" to "destination" would reach, so the server goes
    in "source"; a TCP lookup takes "source" as the socket's own end, so the client goes there.
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
        self._seq = 0
        self.protocols = {
            transport
            for transport in Transport
            if self._handler_present(socket.AF_INET, _protocol(transport))
        }

    def close(self) -> None:
        self._sock.close()

    def _handler_present(self, family: int, protocol: int) -> bool:
        """udp_diag and tcp_diag are modules; a dump says ENOENT when one is missing."""
        try:
            _, error = self._request(self._dump_request(family, protocol, 0), 0.5, dump=True)
        except OSError:
            return False
        return error == 0

    def owner(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        deadline: float,
    ) -> SocketOwner | None:
        protocol = _protocol(transport)
        wanted = candidates(server, client)
        for want in wanted:
            if transport is Transport.UDP:
                ends = (want.server_ip, want.server_port, want.client_ip, want.client_port)
            else:
                ends = (want.client_ip, want.client_port, want.server_ip, want.server_port)
            entries, _ = self._request(self._exact_request(want.family, protocol, *ends), deadline)
            found = _pick(iter(entries), want)
            if found is not None:
                return found
        for want in wanted:
            if time.monotonic() > deadline:
                return None
            request = self._dump_request(want.family, protocol, want.client_port)
            entries, _ = self._request(request, deadline, dump=True)
            found = _pick(iter(entries), want)
            if found is not None:
                return found
        return None

    def _header(self, length: int, flags: int) -> bytes:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return _NLMSGHDR.pack(_NLMSGHDR.size + length, SOCK_DIAG_BY_FAMILY, flags, self._seq, 0)

    def _exact_request(
        self, family: int, protocol: int, src: bytes, sport: int, dst: bytes, dport: int
    ) -> bytes:
        body = b"".join(
            (
                _REQ_HEAD.pack(family, protocol, 0, ALL_STATES),
                _SOCKID_PORTS.pack(sport, dport),
                src.ljust(16, b"\0"),
                dst.ljust(16, b"\0"),
                _SOCKID_TAIL.pack(0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE),
            )
        )
        return self._header(len(body), NLM_F_REQUEST) + body

    def _dump_request(self, family: int, protocol: int, local_port: int) -> bytes:
        # bytecode: local port >= p, then <= p; a failed test jumps past the end (reject)
        bytecode = b"".join(
            (
                _BC_OP.pack(INET_DIAG_BC_S_GE, 8, 20),
                _BC_OP.pack(0, 0, local_port),
                _BC_OP.pack(INET_DIAG_BC_S_LE, 8, 12),
                _BC_OP.pack(0, 0, local_port),
            )
        )
        body = b"".join(
            (
                _REQ_HEAD.pack(family, protocol, 0, ALL_STATES),
                b"\0" * 48,
                _NLA.pack(_NLA.size + len(bytecode), INET_DIAG_REQ_BYTECODE),
                bytecode,
            )
        )
        return self._header(len(body), NLM_F_REQUEST | NLM_F_DUMP) + body

    def _request(
        self, payload: bytes, deadline: float, dump: bool = False
    ) -> tuple[list[_Entry], int]:
        """Send one request; its sockets and errno (0, or e.g. ENOENT when none matched)."""
        seq = self._seq
        sock = self._sock
        sock.settimeout(max(deadline - time.monotonic(), 0.0002))
        sock.send(payload)
        entries: list[_Entry] = []
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                return entries, errno.ETIMEDOUT
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, _, msg_seq, _ = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    break
                body = offset + _NLMSGHDR.size
                offset += (length + 3) & ~3
                if msg_seq != seq:
                    continue  # a late answer to a request we gave up on
                if kind == NLMSG_DONE:
                    return entries, 0
                if kind == NLMSG_ERROR:
                    return entries, -_NLMSG_ERRNO.unpack_from(data, body)[0]
                if kind == SOCK_DIAG_BY_FAMILY and length - _NLMSGHDR.size >= _MSG_LEN:
                    entries.append(_parse_diag_msg(data, body))
                    if not dump:
                        return entries, 0


def _parse_diag_msg(data: bytes, at: int) -> _Entry:
    sport, dport = _SOCKID_PORTS.unpack_from(data, at + 4)
    uid, inode = _MSG_UID_INODE.unpack_from(data, at + 64)
    return _Entry(data[at + 8 : at + 24], sport, data[at + 24 : at + 40], dport, uid, inode)


def _protocol(transport: Transport) -> int:
    return socket.IPPROTO_UDP if transport is Transport.UDP else socket.IPPROTO_TCP


class ProcNetSockets:
    """The same answer from /proc/net/{udp,udp6,tcp,tcp6}: slower, and quadratic in the
    number of sockets, but always there."""

    def __init__(self, proc_root: Path = Path("/proc")):
        self._net = proc_root / "net"

    def owner(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        deadline: float,
    ) -> SocketOwner | None:
        for want in candidates(server, client):
            suffix = "6" if want.family == socket.AF_INET6 else ""
            found = _pick(self._entries(f"{transport.value}{suffix}", want.client_port), want)
            if found is not None:
                return found
        return None

    def _entries(self, table: str, local_port: int) -> Iterator[_Entry]:
        port_hex = f":{local_port:04X} "
        try:
            with open(self._net / table, encoding="utf-8", errors="replace") as rows:
                next(rows, None)
                for row in rows:
                    if port_hex not in row:
                        continue
                    fields = row.split()
                    try:
                        local_ip, local_port_ = _hex_address(fields[1])
                        remote_ip, remote_port = _hex_address(fields[2])
                        uid, inode = int(fields[7]), int(fields[9])
                    except (IndexError, ValueError):
                        continue
                    yield _Entry(local_ip, local_port_, remote_ip, remote_port, uid, inode)
        except OSError:
            return


def _hex_address(text: str) -> tuple[bytes, int]:
    """Address and port of a /proc/net row: the address is 32-bit words in host order."""
    address, port = text.split(":")
    words = [int(address[i : i + 8], 16) for i in range(0, len(address), 8)]
    return struct.pack(f"={len(words)}I", *words), int(port, 16)


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

    def find(self, inode: int, uid: int | None, deadline: float) -> PidSearch:
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
        for pid in self._search_order(uid):
            found = self._scan(pid, target, deadline)
            if isinstance(found, str):
                return self._found(pid, found)
            if found is _Miss.OUT_OF_TIME:
                return PidSearch(None, out_of_time=True, denied=denied)
            denied = denied or found is _Miss.DENIED
        return PidSearch(None, denied=denied)

    def _search_order(self, uid: int | None) -> Iterator[int]:
        now = self._clock()
        listed = not self._probe(now)
        if listed:
            self._list(now)
        cutoff = now - self._new_window_s
        fresh = self._fresh
        for pid in [p for p, seen in fresh.items() if seen < cutoff]:
            del fresh[pid]
        done: set[int] = set()
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
                with open(f"{self._proc}/{pid}/stat", "rb") as stat:
                    ticks = int(stat.read().rpartition(b")")[2].split()[19])
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


def _read_int(path: str) -> int | None:
    try:
        with open(path, "rb") as file:
            return int(file.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_last_pid(proc: str) -> int | None:
    """The last pid (or thread id) handed out in our pid namespace: /proc/loadavg's 5th field."""
    try:
        with open(f"{proc}/loadavg", "rb") as loadavg:
            return int(loadavg.read().split()[4])
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


class LinuxProcessLookup:
    """ProcessLookup for Linux: socket table first (uid, inode), then /proc for the pid."""

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
        self._euid = os.geteuid()
        self.sees_all = _may_read_all_processes(proc_root)

    def find(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        budget_s: float = DEFAULT_BUDGET_S,
    ) -> ProcessInfo | None:
        deadline = time.monotonic() + budget_s
        if not self._lock.acquire(timeout=budget_s):
            return None
        try:
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
                note = f"process not found within {budget_s * 1000:g} ms"
            elif search.denied:
                note = f"process not readable: {NEEDS_PRIVILEGE}"
            else:
                note = "no visible process holds the socket (closed, or another pid namespace)"
            return ProcessInfo(None, None, uid=owner.uid, user=user, note=note)
        return self.describe(search.pid, owner.uid, user)

    def describe(self, pid: int, uid: int | None = None, user: str | None = None) -> ProcessInfo:
        """Name, executable and command line of `pid`, as far as it still exists."""
        base = f"{self._proc_root}/{pid}"
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
