from __future__ import annotations

from pathlib import Path

import pytest

from aidns.resolver.procinfo import lsof
from aidns.resolver.query import Transport

FIXTURES = Path(__file__).parent.parent / "fixtures"

LSOF_CASES = [
    # fixture, transport, server, client, pid, command
    ("udp-sendto", Transport.UDP, ("127.0.0.1", 45125), ("127.0.0.1", 35030), 30521, "python3"),
    (
        "udp-connect",
        Transport.UDP,
        ("127.0.0.1", 45843),
        ("127.0.0.1", 34679),
        30523,
        "LM Studio Helpe",
    ),
    ("udp6-connect", Transport.UDP, ("::1", 42272), ("::1", 51066), 30525, "python3"),
    ("tcp-connect", Transport.TCP, ("127.0.0.1", 55785), ("127.0.0.1", 49528), 30527, "python3"),
]


def lsof_fixture(name: str) -> str:
    text = (FIXTURES / "lsof" / f"{name}.txt").read_text()
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))


@pytest.mark.parametrize(("fixture", "transport", "server", "client", "pid", "command"), LSOF_CASES)
def test_recorded_lsof_output_names_the_client(
    fixture: str,
    transport: Transport,
    server: tuple[str, int],
    client: tuple[str, int],
    pid: int,
    command: str,
) -> None:
    sockets = lsof.parse_lsof_fields(lsof_fixture(fixture))
    found = lsof.pick_lsof_socket(sockets, transport, server, client)
    assert found is not None
    assert (found.pid, found.command, found.uid, found.login) == (pid, command, 0, "root")
    assert found.local is not None and found.local[1] == client[1]


def test_lsof_lists_both_ends_of_a_tcp_connection() -> None:
    sockets = lsof.parse_lsof_fields(lsof_fixture("tcp-connect"))
    assert [(s.pid, s.fd, s.local, s.remote) for s in sockets] == [
        (30480, "4", ("127.0.0.1", 55785), ("127.0.0.1", 49528)),
        (30527, "3", ("127.0.0.1", 49528), ("127.0.0.1", 55785)),
    ]


def test_lsof_unconnected_udp_has_no_remote_end() -> None:
    (sock,) = lsof.parse_lsof_fields(lsof_fixture("udp-sendto"))
    assert (sock.protocol, sock.local, sock.remote) == ("UDP", ("*", 35030), None)
    assert lsof.pick_lsof_socket([sock], Transport.TCP, ("127.0.0.1", 53), ("*", 35030)) is None


def test_lsof_command() -> None:
    assert lsof.lsof_command(Transport.UDP, ("127.0.0.1", 5353)) == [
        "lsof", "-nP", "-w", "-iUDP:5353", "-FpcuLftPn",
    ]  # fmt: skip
