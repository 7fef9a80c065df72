"""Clients for the fault tests: many real UDP sockets at once, raw packets, aidns's own record."""

from __future__ import annotations

import json
import os
import resource
import selectors
import socket
import time
from dataclasses import dataclass
from typing import Any

from tests.e2e.conftest import Aidns

BUDGET_S = 2.0  # aidns's default upstream_timeout
SLACK_S = 0.5  # for a loaded two-core machine: scheduling, not waiting on an upstream


@dataclass(frozen=True, slots=True)
class Reply:
    latency_s: float
    wire: bytes


def raise_descriptor_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def burst(port: int, wires: list[bytes], wait_s: float) -> list[Reply | None]:
    """Send each wire from its own socket, all at once; each reply with its time from sending."""
    raise_descriptor_limit(len(wires))
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in wires]
    selector = selectors.DefaultSelector()
    replies: list[Reply | None] = [None] * len(wires)
    sent_at = [0.0] * len(wires)
    try:
        for index, sock in enumerate(sockets):
            sock.setblocking(False)
            sock.connect(("127.0.0.1", port))
            selector.register(sock, selectors.EVENT_READ, index)
        for index, sock in enumerate(sockets):
            sent_at[index] = time.monotonic()
            sock.send(wires[index])
        waiting = len(wires)
        deadline = time.monotonic() + wait_s
        while waiting and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.05):
                index = key.data
                wire = sockets[index].recv(65535)
                replies[index] = Reply(time.monotonic() - sent_at[index], wire)
                selector.unregister(sockets[index])
                waiting -= 1
    finally:
        selector.close()
        for sock in sockets:
            sock.close()
    return replies


def exchange(port: int, wire: bytes, wait_s: float = 1.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(wait_s)
        client.sendto(wire, ("127.0.0.1", port))
        try:
            return client.recv(65535)
        except TimeoutError:
            return None


def stopped_log(server: Aidns) -> str:
    """Stop aidns and return everything it wrote to stderr."""
    server.stop()
    return "\n".join(server.log)


def final_status(server: Aidns) -> dict[str, Any]:
    """The status aidns wrote as it stopped."""
    status = json.loads((server.data_dir / "status.json").read_text())
    assert isinstance(status, dict)
    return status


def log_writer_pid(server: Aidns, timeout_s: float = 10.0) -> int:
    """The pid of the server's query-log writer child, once it runs."""
    deadline = time.monotonic() + timeout_s
    while True:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = open(f"/proc/{entry}/stat", "rb").read()  # noqa: SIM115
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read()  # noqa: SIM115
            except OSError:
                continue
            ppid = int(stat.rsplit(b")", 1)[1].split()[1])
            if ppid == server.process.pid and b"keeper.logwriter" in cmdline:
                return int(entry)
        assert time.monotonic() < deadline, "no query-log writer child"
        time.sleep(0.05)
