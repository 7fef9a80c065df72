from __future__ import annotations

import shutil
import socket
import sys
import time
from pathlib import Path

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("Linux attribution", allow_module_level=True)

from aidns.resolver.procinfo.common import SocketOwner
from aidns.resolver.procinfo.sockets import ProcNetSockets, candidates
from aidns.resolver.query import Transport

# --- which socket: address forms -------------------------------------------------------------


def test_candidates_try_ipv4_first_for_mapped_clients() -> None:
    found = candidates(("::", 53), ("::ffff:127.0.0.1", 4000))
    assert [(c.family, c.client_ip, c.server_ip) for c in found] == [
        (socket.AF_INET, bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])),
        (
            socket.AF_INET6,
            socket.inet_pton(socket.AF_INET6, "::ffff:127.0.0.1"),
            socket.inet_pton(socket.AF_INET6, "::ffff:127.0.0.1"),
        ),
    ]


@pytest.mark.parametrize(
    ("server", "client", "server_ip"),
    [
        (("127.0.0.1", 53), ("127.0.0.1", 4000), "127.0.0.1"),
        (("0.0.0.0", 53), ("127.0.0.2", 4000), "127.0.0.2"),
        (("::", 53), ("::1", 4000), "::1"),
        (("127.0.0.53", 53), ("127.0.0.1", 4000), "127.0.0.53"),
        (("fe80::1%lo", 53), ("fe80::2%lo", 4000), "fe80::1"),
    ],
)
def test_candidates_fill_in_a_wildcard_server(
    server: tuple[str, int], client: tuple[str, int], server_ip: str
) -> None:
    (found,) = candidates(server, client)
    family = socket.AF_INET6 if ":" in server_ip else socket.AF_INET
    assert found.server_ip == socket.inet_pton(family, server_ip)
    assert (found.client_port, found.server_port) == (4000, 53)


# /proc/net/udp and udp6 rows in the kernel's format (addresses as host-order words)
PROC_NET = Path(__file__).parent.parent / "fixtures" / "proc_net"


@pytest.fixture
def fake_proc_net(tmp_path: Path) -> Path:
    if sys.byteorder != "little":
        pytest.skip("the /proc/net rows are written as a little-endian machine shows them")
    shutil.copytree(PROC_NET, tmp_path / "net")
    return tmp_path


@pytest.mark.parametrize(
    ("server", "client", "expected"),
    [
        (("127.0.0.1", 53), ("127.0.0.1", 40000), SocketOwner(1000, 41003)),  # bound to 0.0.0.0
        (("127.0.0.1", 53), ("127.0.0.1", 40001), SocketOwner(1001, 41004)),  # connected
        (("::1", 53), ("::1", 40002), SocketOwner(1002, 41005)),
        (("127.0.0.1", 53), ("127.0.0.1", 40009), None),
        (("127.0.0.1", 53), ("127.0.0.2", 40001), None),  # same port, other address
        (("127.0.0.1", 5353), ("127.0.0.1", 40001), None),  # connected to someone else
    ],
)
def test_proc_net_rows(
    fake_proc_net: Path,
    server: tuple[str, int],
    client: tuple[str, int],
    expected: SocketOwner | None,
) -> None:
    table = ProcNetSockets(fake_proc_net)
    assert table.owner(Transport.UDP, server, client, time.monotonic() + 1) == expected


def test_proc_net_missing_means_not_found(tmp_path: Path) -> None:
    owner = ProcNetSockets(tmp_path).owner(
        Transport.TCP, ("127.0.0.1", 53), ("127.0.0.1", 4000), time.monotonic() + 1
    )
    assert owner is None
