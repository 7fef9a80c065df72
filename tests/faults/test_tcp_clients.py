"""Local TCP clients cannot take aidns's memory or descriptors: the real server, loopback only."""

from __future__ import annotations

import json
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import pytest

from aidns.resolver.tcpclients import FD_RESERVE
from tests.e2e.conftest import Aidns, start_aidns, start_dnsmasq

REPO = Path(__file__).parent.parent.parent
MIB = 1024 * 1024
RSS_BOUND = 64 * MIB  # the goal: never more than this above the steady state
IDLE_CLIENTS = 1110  # what used up every descriptor under a soft limit of 1024
# A 16 KB answer, so a client that never reads fills the kernel's buffers within a second.
BIG_TXT = "--txt-record=big.up.test," + ",".join(["x" * 250] * 64)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def open_files_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open files limit for {pid}")


def nofile(soft: int, hard: int) -> Callable[[], None]:
    """For preexec_fn: the child's own limits, never this process's."""
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def tcp_status(server: Aidns, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The `tcp` part of status.json, once `done` holds for it (it is written every 2 s)."""
    deadline = time.monotonic() + 6
    tcp: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            tcp = json.loads((server.data_dir / "status.json").read_text()).get("tcp", {})
        except (OSError, ValueError):
            tcp = {}
        if tcp and done(tcp):
            return tcp
        time.sleep(0.2)
    return tcp


def framed(name: str, rdtype: str = "A") -> bytes:
    wire = dns.message.make_query(name, rdtype).to_wire()
    return struct.pack("!H", len(wire)) + wire


def forwarded_answer(server: Aidns, name: str) -> list[str]:
    query = dns.message.make_query(name, "A")
    response = dns.query.udp(query, "127.0.0.1", port=server.port(), timeout=3)
    return [r.to_text() for rrset in response.answer for r in rrset]


def closed_by_peer(sock: socket.socket, within_s: float) -> bool:
    sock.settimeout(within_s)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    finally:
        sock.settimeout(5)


def flood_without_reading(port: int, stop: threading.Event, batches: list[int]) -> None:
    """Sends queries as fast as the socket takes them and never reads an answer; when aidns
    closes the connection, opens another."""
    while not stop.is_set():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(0.2)
        try:
            sock.connect(("127.0.0.1", port))
            while not stop.is_set():
                batch = memoryview(
                    framed("big.up.test", "TXT") * 32
                    + framed("telemetry.lmstudio.ai") * 16
                    + b"".join(framed(f"f{len(batches)}-{i}.up.test") for i in range(16))
                )
                while batch and not stop.is_set():
                    try:
                        batch = batch[sock.send(batch) :]
                    except TimeoutError:
                        continue
                batches.append(1)
        except OSError:
            pass
        finally:
            sock.close()


def test_a_client_that_never_reads_is_no_longer_read_and_memory_stays_bounded(
    tmp_path: Path,
) -> None:
    dnsmasq = start_dnsmasq(tmp_path, BIG_TXT)
    (tmp_path / "config.yaml").write_text("tcp_idle_timeout: 3\n")
    server = start_aidns(tmp_path, f"--upstream=127.0.0.1:{dnsmasq.port}")
    try:
        pid, tcp_port = server.process.pid, server.port("127.0.0.1", "tcp")
        for i in range(20):
            assert forwarded_answer(server, f"warm{i}.up.test") == ["192.0.2.10"]
            query = dns.message.make_query("telemetry.lmstudio.ai", "A")
            dns.query.tcp(query, "127.0.0.1", port=tcp_port, timeout=3)
        samples = []
        for _ in range(10):
            samples.append(rss_bytes(pid))
            time.sleep(0.1)
        steady = max(samples)

        stop, batches = threading.Event(), []
        flooder = threading.Thread(target=flood_without_reading, args=(tcp_port, stop, batches))
        flooder.start()
        peak, asked, answered = steady, 0, 0
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                peak = max(peak, rss_bytes(pid))
                asked += 1
                if forwarded_answer(server, f"during{asked}.up.test") == ["192.0.2.10"]:
                    answered += 1
                time.sleep(0.2)
        finally:
            stop.set()
            flooder.join(10)
        assert len(batches) > 10, "the flood never got going"
        assert answered == asked
        assert peak - steady <= RSS_BOUND, f"RSS {steady / MIB:.0f} -> {peak / MIB:.0f} MiB"
        tcp = tcp_status(server, lambda tcp: tcp["closed_stalled"] >= 1)
        assert tcp["closed_stalled"] >= 1, tcp
    finally:
        server.stop()
        dnsmasq.stop()
    assert not any("Traceback" in line for line in server.log)


@pytest.mark.parametrize("hard", [1024, 4096], ids=["hard-1024", "hard-4096"])
def test_more_idle_clients_than_descriptors_leave_forwarding_working(
    tmp_path: Path, hard: int
) -> None:
    own_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    wanted = max(hard, IDLE_CLIENTS + 200)
    if own_hard != resource.RLIM_INFINITY and own_hard < wanted:
        pytest.skip(f"needs a hard open files limit of {wanted}, not {own_hard}")
    dnsmasq = start_dnsmasq(tmp_path)
    (tmp_path / "config.yaml").write_text("tcp_max_clients: 2000\n")
    server = start_aidns(
        tmp_path, f"--upstream=127.0.0.1:{dnsmasq.port}", preexec_fn=nofile(1024, hard)
    )
    holder = None
    try:
        assert open_files_limits(server.process.pid) == (hard, hard)  # raised to the hard one
        tcp_port = str(server.port("127.0.0.1", "tcp"))
        hold = ["-m", "tests.faults.idle_connections", "127.0.0.1", tcp_port, str(IDLE_CLIENTS)]
        holder = subprocess.Popen(
            [sys.executable, *hold],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=nofile(wanted, own_hard),
        )
        assert holder.stdin is not None and holder.stdout is not None
        assert holder.stdout.readline().split() == ["opened", str(IDLE_CLIENTS), "0"]
        time.sleep(1)
        for i in range(20):
            assert forwarded_answer(server, f"q{i}.up.test") == ["192.0.2.10"]
        limit = min(2000, hard - FD_RESERVE)
        holder.stdin.write("check\n")
        holder.stdin.flush()
        closed = json.loads(holder.stdout.readline())
        assert closed == list(range(max(0, IDLE_CLIENTS - limit)))  # the oldest idle ones
        tcp = tcp_status(
            server,
            lambda tcp: (
                tcp["clients"] == min(limit, IDLE_CLIENTS)
                and tcp["closed_idle_for_new"] >= len(closed)
            ),  # the status file lags the closes
        )
        assert tcp["limit"] == limit and tcp["clients"] == min(limit, IDLE_CLIENTS), tcp
        assert tcp["closed_idle_for_new"] == len(closed) and tcp["accept_errors"] == {}, tcp
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        server.stop()
        dnsmasq.stop()
    assert not any("Traceback" in line for line in server.log)
    about_it = [line for line in server.log if "TCP client" in line or "open files" in line]
    assert len(about_it) <= 3, about_it


def test_the_sixth_client_closes_the_one_idle_longest_or_with_none_idle_itself(
    tmp_path: Path,
) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # an upstream that never answers keeps queries in progress
    (tmp_path / "config.yaml").write_text("tcp_max_clients: 5\n")
    server = start_aidns(
        tmp_path, f"--upstream=127.0.0.1:{silent.getsockname()[1]}", "--upstream-timeout=3"
    )
    address = ("127.0.0.1", server.port("127.0.0.1", "tcp"))
    clients: list[socket.socket] = []
    try:
        for _ in range(5):
            clients.append(socket.create_connection(address, timeout=3))
            time.sleep(0.05)
        time.sleep(0.3)
        clients.append(socket.create_connection(address, timeout=3))
        assert closed_by_peer(clients[0], 2)
        assert not any(closed_by_peer(sock, 0.1) for sock in clients[1:])
        clients[5].sendall(framed("telemetry.lmstudio.ai"))
        blocked = dns.query.receive_tcp(clients[5], time.time() + 3)[0]
        assert [r.to_text() for rrset in blocked.answer for r in rrset] == ["0.0.0.0"]

        for i, sock in enumerate(clients[1:]):  # all busy: a query waits on the silent upstream
            sock.sendall(framed(f"busy{i}.example"))
        time.sleep(0.3)
        clients.append(socket.create_connection(address, timeout=3))
        assert closed_by_peer(clients[6], 1)
        for sock in clients[1:6]:
            answer = dns.query.receive_tcp(sock, time.time() + 5)[0]
            assert answer.rcode() == dns.rcode.SERVFAIL
        tcp = tcp_status(server, lambda tcp: tcp["refused_at_limit"] >= 1)
        assert tcp["closed_idle_for_new"] == 1 and tcp["refused_at_limit"] == 1, tcp
    finally:
        for sock in clients:
            sock.close()
        server.stop()
        silent.close()
    assert not any("Traceback" in line for line in server.log)
