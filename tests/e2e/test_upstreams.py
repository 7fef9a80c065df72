"""End-to-end through the real server to scripted upstreams: TC retry, failover, DoT, DoH."""

from __future__ import annotations

import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.helpers.certs import make_cert
from tests.helpers.dnsserver import Behaviour, FakeDohServer, FakeNameserver, FakeTlsNameserver

from .conftest import start_aidns, start_dnsmasq


def ask_udp(port: int, name: str, host: str = "127.0.0.1") -> tuple[dns.message.Message, float]:
    started = time.monotonic()
    response = dns.query.udp(dns.message.make_query(name, "A"), host, port=port, timeout=5)
    return response, time.monotonic() - started


def only_address(message: dns.message.Message) -> str:
    (rrset,) = message.answer
    (record,) = rrset
    return str(record.address)


def test_truncated_udp_answer_is_asked_again_over_tcp(tmp_path: Path) -> None:
    with FakeNameserver("::1") as upstream:
        upstream.behaviours["big.test"] = Behaviour.TRUNCATE
        server = start_aidns(tmp_path, f"--upstream={upstream.hostport}")
        try:
            response, _ = ask_udp(server.port(), "big.test")
            assert only_address(response) == upstream.address
            assert [r.transport for r in upstream.received] == ["udp", "tcp"]
        finally:
            server.stop()


def test_fails_over_from_a_silent_upstream_and_then_prefers_the_healthy_one(tmp_path: Path) -> None:
    with (
        FakeNameserver(default=Behaviour.SILENT) as silent,
        FakeNameserver(address="192.0.2.2") as healthy,
    ):
        server = start_aidns(
            tmp_path, f"--upstream={silent.hostport}", f"--upstream={healthy.hostport}"
        )
        try:
            response, elapsed = ask_udp(server.port(), "one.test")
            assert only_address(response) == "192.0.2.2"
            assert elapsed < 2.0
            response, elapsed = ask_udp(server.port(), "two.test")
            assert only_address(response) == "192.0.2.2"
            assert elapsed < 0.5
            assert silent.queries_for("two.test") == 0
        finally:
            server.stop()


def test_servfail_fails_over(tmp_path: Path) -> None:
    with (
        FakeNameserver(default=Behaviour.SERVFAIL) as broken,
        FakeNameserver(address="192.0.2.3") as good,
    ):
        server = start_aidns(
            tmp_path, f"--upstream={broken.hostport}", f"--upstream={good.hostport}"
        )
        try:
            response, _ = ask_udp(server.port(), "x.test")
            assert response.rcode() == dns.rcode.NOERROR and only_address(response) == "192.0.2.3"
        finally:
            server.stop()


@pytest.mark.parametrize("kind", ["tls", "https"])
def test_encrypted_upstreams(tmp_path: Path, kind: str) -> None:
    cert = make_cert(tmp_path)
    if kind == "tls":
        upstream: FakeNameserver = FakeTlsNameserver(cert.server_context(), address="192.0.2.4")
    else:
        upstream = FakeDohServer(cert.server_context(), address="192.0.2.4")
    with upstream:
        url = (
            f"tls://127.0.0.1:{upstream.port}#dns.test"
            if kind == "tls"
            else f"https://127.0.0.1:{upstream.port}/dns-query"
        )
        server = start_aidns(tmp_path, f"--upstream={url}", f"--upstream-ca={cert.cert}")
        try:
            response, _ = ask_udp(server.port(), "secret.test")
            assert only_address(response) == "192.0.2.4"
            assert [r.transport for r in upstream.received] == [kind]
        finally:
            server.stop()


def test_a_named_dot_upstream_is_found_through_dnsmasq_as_bootstrap(tmp_path: Path) -> None:
    cert = make_cert(tmp_path)
    bootstrap = start_dnsmasq(tmp_path, "--address=/upstream.test/127.0.0.1")
    try:
        with FakeTlsNameserver(cert.server_context(), address="192.0.2.5") as upstream:
            server = start_aidns(
                tmp_path,
                f"--upstream=tls://upstream.test:{upstream.port}#dns.test",
                f"--bootstrap=127.0.0.1:{bootstrap.port}",
                f"--upstream-ca={cert.cert}",
            )
            try:
                answers = [only_address(ask_udp(server.port(), f"n{i}.test")[0]) for i in range(3)]
            finally:
                server.stop()
    finally:
        bootstrap.stop()
    assert answers == ["192.0.2.5"] * 3
    assert upstream.queries == 3 and upstream.connections == 1  # and one TLS connection
    assert not any("found through the system" in line for line in server.log)
