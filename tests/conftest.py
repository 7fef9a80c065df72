"""Test-wide guards: no test sends a packet beyond loopback or reads the machine's own config."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest


class OffLoopbackTraffic(AssertionError):
    pass


def _check_destination(address: Any) -> None:
    if not isinstance(address, tuple) or not address:
        return  # AF_UNIX paths, netlink
    host = str(address[0]).split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if host in ("localhost", ""):
            return
        raise OffLoopbackTraffic(
            f"a test tried to reach {host!r}, which is not a loopback literal"
        ) from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if not ip.is_loopback:
        raise OffLoopbackTraffic(f"a test tried to reach {ip}, outside loopback")


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_sendto = socket.socket.sendto


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check_destination(address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check_destination(address)
    return _real_connect_ex(self, address)


def _guarded_sendto(self: socket.socket, data: Any, *args: Any) -> int:
    _check_destination(args[-1])
    return _real_sendto(self, data, *args)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In this process; child processes get explicit loopback upstreams from the tests."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    monkeypatch.setattr(socket.socket, "sendto", _guarded_sendto)
    yield


@pytest.fixture(autouse=True)
def own_config_and_data(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test, and every aidns it starts, sees an empty config and data dir of its own.

    As root aidns reads /etc/aidns and /var/lib/aidns whatever XDG says, so the explicit
    AIDNS_CONFIG and AIDNS_DATA_DIR are what isolate; a test may still set its own.
    """
    home = tmp_path_factory.mktemp("home")
    config = home / "config" / "aidns" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("# empty: tests start from the defaults\n")
    monkeypatch.setenv("AIDNS_CONFIG", str(config))
    monkeypatch.setenv("AIDNS_DATA_DIR", str(home / "data" / "aidns"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setattr("aidns.resolver.configfile._is_root", lambda: False)
