from __future__ import annotations

import asyncio
import logging
import resource
import socket
import subprocess
import sys

import pytest

from aidns.resolver.config import TcpConfig
from aidns.resolver.tcpclients import (
    FD_RESERVE,
    SAY_AGAIN_S,
    Complaints,
    TcpClient,
    TcpClients,
    client_limit,
    open_streams,
)


def test_the_client_limit_leaves_the_reserve_to_upstreams_and_files() -> None:
    assert client_limit(100, None) == 100
    assert client_limit(100, 1024) == 100
    assert client_limit(2000, 1024) == 1024 - FD_RESERVE
    assert client_limit(100, FD_RESERVE) == 1  # one client, rather than none at all


def test_a_complaint_is_said_once_per_interval_with_the_count_in_between(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    complaints = Complaints(clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            complaints.say("accept EMFILE", "cannot accept")
        complaints.say("refused", "none idle")
        now[0] = SAY_AGAIN_S
        complaints.say("accept EMFILE", "cannot accept")
    assert [r.getMessage() for r in caplog.records] == [
        "cannot accept",
        "none idle",
        "cannot accept (4 more since last said)",
    ]
    assert complaints.counts == {"accept EMFILE": 6, "refused": 1}


RAISE = "from aidns.resolver.tcpclients import raise_open_files_limit as r; print(r())"


@pytest.mark.parametrize(("soft", "hard"), [(256, 512), (256, 256)])
def test_the_soft_open_files_limit_is_raised_to_the_hard_one(soft: int, hard: int) -> None:
    """In a child: this process's own limits stay as they are."""
    own_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if own_hard != resource.RLIM_INFINITY and own_hard < hard:
        pytest.skip(f"the hard open files limit here is {own_hard}")
    result = subprocess.run(
        [sys.executable, "-c", RAISE],
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
    )
    assert result.stdout.split() == [str(hard)], result.stderr


def closed_by_peer(sock: socket.socket, within_s: float) -> bool:
    sock.settimeout(within_s)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def idle_until_closed(client: TcpClient) -> None:
    """A server that only waits: its clients are idle until they send a byte, then busy."""
    reader, writer = await open_streams(client, 1024)
    client.waiting = True
    if await reader.read(1):
        client.waiting = False
        await reader.read()
    writer.close()


async def at_the_limit() -> tuple[list[bool], dict[str, object]]:
    clients = TcpClients(TcpConfig(max_clients=2), idle_until_closed, open_files=None)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    clients.listen(listener)
    address = listener.getsockname()
    socks: list[socket.socket] = []

    async def connect() -> None:
        socks.append(await asyncio.to_thread(socket.create_connection, address, 2))
        await asyncio.sleep(0.1)

    for _ in range(3):
        await connect()  # the third closes the first, idle the longest
    for sock in socks[1:]:
        await asyncio.to_thread(sock.sendall, b"x")  # both busy now
    await asyncio.sleep(0.1)
    await connect()  # none idle: the fourth is closed itself
    closed = [await asyncio.to_thread(closed_by_peer, sock, 0.3) for sock in socks]
    status = clients.status()
    for sock in socks:
        sock.close()
    await clients.aclose()
    return closed, status


def test_at_the_limit_the_client_idle_longest_goes_else_the_new_one() -> None:
    closed, status = asyncio.run(at_the_limit())
    assert closed == [True, False, False, True]
    assert status["closed_idle_for_new"] == 1 and status["refused_at_limit"] == 1
    assert status["clients"] == 2 and status["limit"] == 2
