from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

from aidns.resolver.procinfo import macos as macos
from aidns.resolver.procinfo.libproc import InetSocket
from aidns.resolver.query import ProcessInfo, Transport

FIXTURES = Path(__file__).parent.parent / "fixtures"


def test_the_lsof_fallback_runs_lsof(tmp_path: Path) -> None:
    fake_lsof = tmp_path / "lsof"
    fake_lsof.write_text(f"#!/bin/sh\ncat '{FIXTURES / 'lsof' / 'tcp-connect.txt'}'\n")
    fake_lsof.chmod(0o755)
    lookup = macos.MacProcessLookup(use_libproc=False, lsof=str(fake_lsof))
    info = lookup.find(Transport.TCP, ("127.0.0.1", 55785), ("127.0.0.1", 49528), budget_s=5)
    assert info == ProcessInfo(30527, "python3", uid=0, user="root")


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("lsof") is None,
    reason="runs the real lsof, whose -F output is the same on Linux",
)
def test_the_lsof_fallback_with_the_real_lsof() -> None:
    lookup = macos.MacProcessLookup(use_libproc=False)
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        server.bind(("127.0.0.1", 0))
        client.connect(server.getsockname())
        client.send(b"q")
        _, peer = server.recvfrom(16)
        info = lookup.find(Transport.UDP, server.getsockname(), peer, budget_s=10)
    comm = Path("/proc/self/comm").read_text().strip()
    assert info is not None and (info.pid, info.name, info.uid) == (os.getpid(), comm, os.getuid())


class FakeLibProc:
    """Processes, their socket fds, and each socket's ends."""

    def __init__(self) -> None:
        self.sockets: dict[int, dict[int, InetSocket]] = {}
        self.asked: list[int] = []

    def add(self, pid: int, fds: dict[int, InetSocket] | None = None) -> None:
        self.sockets[pid] = dict(fds or {})

    def list_pids(self) -> list[int]:
        return list(self.sockets)

    def socket_fds(self, pid: int) -> list[int] | None:
        self.asked.append(pid)
        fds = self.sockets.get(pid)
        return None if fds is None else list(fds)

    def socket(self, pid: int, fd: int) -> InetSocket | None:
        return self.sockets.get(pid, {}).get(fd)

    def describe(self, pid: int) -> ProcessInfo | None:
        return ProcessInfo(pid, f"proc{pid}", uid=501) if pid in self.sockets else None


LOOPBACK = bytes([127, 0, 0, 1])


def inet(protocol: int, local_port: int, remote_port: int) -> InetSocket:
    remote = LOOPBACK if remote_port else bytes(4)
    return InetSocket(protocol, socket.AF_INET, LOOPBACK, local_port, remote, remote_port, 501)


def test_mac_search_finds_new_processes_first_then_remembers() -> None:
    libproc = FakeLibProc()
    for pid in (100, 200, 300):
        libproc.add(pid)
    lookup = macos.MacProcessLookup(libproc=libproc)
    libproc.add(400, {3: inet(17, 40000, 0)})  # an unconnected UDP client, started just now
    libproc.add(350)
    info = lookup.find(Transport.UDP, ("127.0.0.1", 53), ("127.0.0.1", 40000), budget_s=1)
    assert info == ProcessInfo(400, "proc400", uid=501)
    assert libproc.asked == [400]
    libproc.asked.clear()
    libproc.sockets[400][3] = inet(17, 40001, 53)  # the same fd again: no listing at all
    info = lookup.find(Transport.UDP, ("127.0.0.1", 53), ("127.0.0.1", 40001), budget_s=1)
    assert info is not None and info.pid == 400 and libproc.asked == []


def test_mac_search_takes_the_clients_end_of_a_tcp_connection() -> None:
    libproc = FakeLibProc()
    libproc.add(100, {4: inet(6, 53, 50000)})  # aidns's accepted socket
    libproc.add(200, {3: inet(6, 50000, 53)})  # the client
    lookup = macos.MacProcessLookup(libproc=libproc)
    info = lookup.find(Transport.TCP, ("127.0.0.1", 53), ("127.0.0.1", 50000), budget_s=1)
    assert info is not None and info.pid == 200
    assert lookup.find(Transport.UDP, ("127.0.0.1", 53), ("127.0.0.1", 50000), 1) is None


def test_mac_search_skips_processes_it_may_not_read() -> None:
    libproc = FakeLibProc()
    libproc.add(100, {3: inet(17, 40000, 53)})
    lookup = macos.MacProcessLookup(libproc=libproc)
    libproc.sockets[300] = None  # type: ignore[assignment]  # another user's process
    info = lookup.find(Transport.UDP, ("127.0.0.1", 53), ("127.0.0.1", 40000), budget_s=1)
    assert info is not None and info.pid == 100
