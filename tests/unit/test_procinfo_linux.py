from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pwd
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("Linux attribution", allow_module_level=True)

from aidns.resolver.procinfo.common import SocketOwner
from aidns.resolver.procinfo.linux import FallbackSockets, LinuxProcessLookup
from aidns.resolver.procinfo.netlink import NetlinkSockets
from aidns.resolver.procinfo.sockets import ProcNetSockets
from aidns.resolver.query import Transport

from .helpers import FakeProc

# A DNS client in miniature: one socket, one query to the test's server, wait for the answer.
CLIENT = r"""
import socket, sys
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
family = socket.AF_INET6 if ":" in host else socket.AF_INET
if mode == "tcp":
    s = socket.socket(family, socket.SOCK_STREAM)
    s.connect((host, port))
    s.sendall(b"\x00\x01q")
else:
    s = socket.socket(family, socket.SOCK_DGRAM)
    if mode == "connect":
        s.connect((host, port))
        s.send(b"q")
    else:
        s.sendto(b"q", (host, port))
port = s.getsockname()[1]
if mode == "close":
    s.close()
    print(port, flush=True)
    sys.stdin.readline()
else:
    print(port, flush=True)
    s.settimeout(10)
    s.recv(16)
"""


@pytest.fixture(scope="module")
def client_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clients") / "aidns_test_client.py"
    path.write_text(CLIENT)
    return path


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no ::1 on this machine")


class Exchange:
    """A loopback server socket and one child process querying it."""

    def __init__(self, script: Path, host: str, mode: str):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.transport = Transport.TCP if mode == "tcp" else Transport.UDP
        kind = socket.SOCK_STREAM if mode == "tcp" else socket.SOCK_DGRAM
        self.server_sock = socket.socket(family, kind)
        self.server_sock.bind((host, 0))
        if mode == "tcp":
            self.server_sock.listen()
        self.server: tuple[str, int] = self.server_sock.getsockname()[:2]
        self.child = subprocess.Popen(
            [sys.executable, str(script), host, str(self.server[1]), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.conn: socket.socket | None = None
        self.server_sock.settimeout(10)
        if mode == "tcp":
            self.conn, peer = self.server_sock.accept()
            self.conn.recv(16)
        else:
            _, peer = self.server_sock.recvfrom(16)
        self.client: tuple[str, int] = peer[:2]
        assert self.child.stdout is not None
        assert int(self.child.stdout.readline()) == self.client[1]

    def answer(self) -> None:
        if self.conn is not None:
            self.conn.sendall(b"\x00\x01a")
            self.conn.close()
        else:
            self.server_sock.sendto(b"a", self.client)

    def close(self) -> None:
        self.child.kill()
        self.child.wait()
        if self.conn is not None:
            self.conn.close()
        self.server_sock.close()


@pytest.fixture
def exchange(client_script: Path) -> Iterator[Callable[[str, str], Exchange]]:
    made: list[Exchange] = []

    def make(host: str, mode: str) -> Exchange:
        made.append(Exchange(client_script, host, mode))
        return made[-1]

    yield make
    for each in made:
        each.close()


def assert_is_child(info: object, child: subprocess.Popen[str], script: Path) -> None:
    from aidns.resolver.query import ProcessInfo

    assert isinstance(info, ProcessInfo)
    assert info.pid == child.pid
    assert info.name == Path(sys.executable).name[:15]
    assert info.exe == os.path.realpath(sys.executable)
    assert info.cmdline is not None and info.cmdline.startswith(f"{sys.executable} {script} ")
    assert info.uid == os.getuid()
    assert info.user == pwd.getpwuid(os.getuid()).pw_name
    assert info.note is None and info.tool is None and not info.relay


CASES = [
    pytest.param("127.0.0.1", "sendto", id="udp4-sendto"),
    pytest.param("127.0.0.1", "connect", id="udp4-connect"),
    pytest.param("127.0.0.1", "tcp", id="tcp4"),
    pytest.param("::1", "sendto", id="udp6-sendto", marks=needs_ipv6),
    pytest.param("::1", "connect", id="udp6-connect", marks=needs_ipv6),
    pytest.param("::1", "tcp", id="tcp6", marks=needs_ipv6),
]


@pytest.mark.parametrize(("host", "mode"), CASES)
def test_finds_the_child_that_asked(
    exchange: Callable[[str, str], Exchange], client_script: Path, host: str, mode: str
) -> None:
    lookup = LinuxProcessLookup()
    ask = exchange(host, mode)
    info = lookup.find(ask.transport, ask.server, ask.client, budget_s=0.5)
    ask.answer()
    assert_is_child(info, ask.child, client_script)


@pytest.mark.parametrize(("host", "mode"), CASES)
def test_the_proc_net_fallback_finds_it_too(
    exchange: Callable[[str, str], Exchange], client_script: Path, host: str, mode: str
) -> None:
    lookup = LinuxProcessLookup(use_netlink=False)
    assert isinstance(lookup.sockets, FallbackSockets) and lookup.sockets.netlink is None
    ask = exchange(host, mode)
    info = lookup.find(ask.transport, ask.server, ask.client, budget_s=0.5)
    ask.answer()
    assert_is_child(info, ask.child, client_script)


@pytest.mark.parametrize(("host", "mode"), CASES)
def test_netlink_and_proc_net_agree_on_the_socket(
    exchange: Callable[[str, str], Exchange], host: str, mode: str
) -> None:
    ask = exchange(host, mode)
    deadline = time.monotonic() + 1
    by_netlink = NetlinkSockets().owner(ask.transport, ask.server, ask.client, deadline)
    by_proc = ProcNetSockets().owner(ask.transport, ask.server, ask.client, deadline)
    fd_inodes = {
        int(link[8:-1])
        for fd in os.listdir(f"/proc/{ask.child.pid}/fd")
        if (link := os.readlink(f"/proc/{ask.child.pid}/fd/{fd}")).startswith("socket:[")
    }
    ask.answer()
    assert by_netlink is not None and by_netlink == by_proc
    assert by_netlink.inode in fd_inodes  # the client's socket, never the server's own


def test_a_wildcard_server_address_still_finds_connected_clients(
    exchange: Callable[[str, str], Exchange], client_script: Path
) -> None:
    lookup = LinuxProcessLookup()
    ask = exchange("127.0.0.1", "connect")
    info = lookup.find(ask.transport, ("0.0.0.0", ask.server[1]), ask.client, budget_s=0.5)
    ask.answer()
    assert_is_child(info, ask.child, client_script)


def test_many_short_lived_clients_are_each_found(
    exchange: Callable[[str, str], Exchange],
) -> None:
    lookup = LinuxProcessLookup()
    for mode in ("sendto", "connect") * 5:
        ask = exchange("127.0.0.1", mode)
        info = lookup.find(ask.transport, ask.server, ask.client, budget_s=0.5)
        ask.answer()
        assert info is not None and info.pid == ask.child.pid
        ask.child.wait(5)


def test_a_client_that_closed_its_socket_is_not_found(
    exchange: Callable[[str, str], Exchange],
) -> None:
    ask = exchange("127.0.0.1", "close")
    assert LinuxProcessLookup().find(ask.transport, ask.server, ask.client, 0.5) is None


def test_a_query_from_no_socket_at_all_is_none() -> None:
    lookup = LinuxProcessLookup()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        assert lookup.find(Transport.UDP, server.getsockname(), ("127.0.0.1", 1), 0.1) is None


def test_addresses_that_are_not_ip_literals_find_nothing() -> None:
    lookup = LinuxProcessLookup()
    assert lookup.find(Transport.UDP, ("127.0.0.1", 53), ("localhost", 4000), 0.1) is None


def test_only_the_uid_without_the_rights_to_see_other_users(
    exchange: Callable[[str, str], Exchange],
) -> None:
    lookup = LinuxProcessLookup()
    lookup.sees_all = False
    lookup._euid = os.geteuid() + 1  # as if we were another user
    ask = exchange("127.0.0.1", "sendto")
    info = lookup.find(ask.transport, ask.server, ask.client, budget_s=0.5)
    ask.answer()
    assert info is not None and info.pid is None and info.name is None
    assert info.uid == os.getuid() and info.note is not None and "CAP_SYS_PTRACE" in info.note


@pytest.mark.skipif(os.geteuid() != 0, reason="drops from root to nobody in a child")
def test_without_privileges_only_own_processes_are_named(
    exchange: Callable[[str, str], Exchange],
) -> None:
    ask = exchange("127.0.0.1", "sendto")  # a root process holds this client socket
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            lookup = LinuxProcessLookup()
            results: list[object] = [lookup.sees_all]
            first = lookup.find(ask.transport, ask.server, ask.client)
            results.append(dataclasses.asdict(first) if first else None)
            lookup.sees_all = True  # try anyway: the kernel says no
            info = lookup.find(ask.transport, ask.server, ask.client, 0.5)
            results.append(dataclasses.asdict(info) if info else None)
            with (
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
            ):
                server.bind(("127.0.0.1", 0))
                client.sendto(b"q", server.getsockname())
                _, peer = server.recvfrom(16)
                mine = lookup.find(Transport.UDP, server.getsockname(), peer, 0.5)
            results.append(dataclasses.asdict(mine) if mine else None)
            os.write(write_end, json.dumps(results).encode())
        except BaseException:
            import traceback

            os.write(write_end, json.dumps(traceback.format_exc()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        data = reader.read()
    os.waitpid(child, 0)
    ask.answer()
    reported: Any = json.loads(data)
    assert isinstance(reported, list), reported
    sees_all, shortcut, denied, own = reported
    assert sees_all is False
    assert (shortcut["pid"], shortcut["uid"], shortcut["user"]) == (None, 0, "root")
    assert "CAP_SYS_PTRACE" in shortcut["note"]
    assert denied["pid"] is None and denied["uid"] == 0 and "not readable" in denied["note"]
    assert (own["pid"], own["uid"], own["user"]) == (child, 65534, pwd.getpwuid(65534).pw_name)


# Idle processes holding many fds: one parent forks them, all exit when stdin closes.
HOLDERS = r"""
import os, sys
count, fds = int(sys.argv[1]), int(sys.argv[2])
held = [os.open(os.devnull, os.O_RDONLY) for _ in range(fds)]
pids = []
for _ in range(count):
    pid = os.fork()
    if pid == 0:
        os.read(0, 1)
        os._exit(0)
    pids.append(pid)
print(" ".join(map(str, pids)), flush=True)
sys.stdin.read()
for pid in pids:
    os.waitpid(pid, 0)
"""


@pytest.fixture
def busy_machine() -> Iterator[list[int]]:
    """80 idle processes with 150 fds each; a full search of them takes tens of ms."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDERS, "80", "150"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    pids = [int(pid) for pid in holder.stdout.readline().split()]
    try:
        yield pids
    finally:
        holder.stdin.close()
        try:
            holder.wait(10)
        finally:
            for pid in [*pids, holder.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            holder.wait()


def test_the_budget_is_honoured_on_a_busy_machine(busy_machine: list[int]) -> None:
    lookup = LinuxProcessLookup()  # the holders are old now; the test process is older
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        server.bind(("127.0.0.1", 0))
        client.sendto(b"q", server.getsockname())
        _, peer = server.recvfrom(16)
        started = time.perf_counter()
        info = lookup.find(Transport.UDP, server.getsockname(), peer, budget_s=0.002)
        took_s = time.perf_counter() - started
        assert info is not None and info.pid is None and info.uid == os.getuid()
        assert info.note == "process not found within 2 ms"
        assert lookup.pids.scanned and os.getpid() not in lookup.pids.scanned
        assert took_s < 0.015  # the budget, plus one process's fds and scheduling slack
        started = time.perf_counter()
        info = lookup.find(Transport.UDP, server.getsockname(), peer, budget_s=5.0)
        full_search_s = time.perf_counter() - started
        assert info is not None and info.pid == os.getpid()
        assert full_search_s > 0.004, "the machine was not busy enough to test the budget"
        # found once, it is found again without a search
        started = time.perf_counter()
        assert lookup.find(Transport.UDP, server.getsockname(), peer, 0.002) == info
        assert time.perf_counter() - started < 0.002 + 0.005


# --- the lookup over a fake /proc --------------------------------------------------------------


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path)


class FixedSockets:
    def __init__(self, owner: SocketOwner | None):
        self.owner_ = owner

    def owner(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        deadline: float,
    ) -> SocketOwner | None:
        return self.owner_


def test_lookup_over_a_fake_proc_describes_the_process(proc: FakeProc) -> None:
    proc.add(100, sockets={3: 9001})
    (proc.root / "100" / "cmdline").write_bytes(b"/bin/proc100\0-x\0" + b"y" * 500 + b"\0")
    lookup = LinuxProcessLookup(proc.root, sockets=FixedSockets(SocketOwner(0, 9001)))
    info = lookup.find(Transport.UDP, ("127.0.0.1", 53), ("127.0.0.1", 4000), 1.0)
    assert info is not None
    assert (info.pid, info.name, info.exe, info.uid) == (100, "proc100", "/bin/proc100", 0)
    assert info.cmdline is not None and info.cmdline.startswith("/bin/proc100 -x yyy")
    assert len(info.cmdline) == 200 and info.cmdline.endswith("…")


def test_a_vanished_process_is_described_as_far_as_it_can_be(proc: FakeProc) -> None:
    lookup = LinuxProcessLookup(proc.root, sockets=FixedSockets(None))
    info = lookup.describe(4242, 1000, "someone")
    assert (info.pid, info.name, info.exe, info.cmdline, info.uid) == (4242, None, None, None, 1000)


def test_no_process_holding_the_socket_is_said_so(proc: FakeProc) -> None:
    proc.add(100)
    lookup = LinuxProcessLookup(proc.root, sockets=FixedSockets(SocketOwner(0, 9001)))
    info = lookup.find(Transport.UDP, ("127.0.0.1", 53), ("127.0.0.1", 4000), 1.0)
    assert info is not None and info.pid is None and info.uid == 0
    assert info.note is not None and "no visible process" in info.note


def test_a_process_is_read_once_and_a_pid_used_again_is_read_afresh(proc: FakeProc) -> None:
    proc.add(100, started=500)
    lookup = LinuxProcessLookup(proc.root, sockets=FixedSockets(None))
    first = lookup.describe(100, 0, "root")
    assert (first.name, first.cmdline) == ("proc100", "/bin/proc100 --flag")
    (proc.root / "100" / "cmdline").write_bytes(b"/bin/proc100\0--changed\0")
    assert lookup.describe(100, 0, "root") == first  # same pid, start time and name: kept
    proc.remove(100)
    proc.add(100, started=900)  # another process got the pid
    (proc.root / "100" / "cmdline").write_bytes(b"/bin/other\0")
    assert lookup.describe(100, 0, "root").cmdline == "/bin/other"
