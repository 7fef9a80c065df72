"""RFC 6891 and hostile packets against the real server: BADVERS, FORMERR for two OPT
records, silence for responses, and a seeded flood of mutated queries."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.e2e.conftest import Aidns, start_aidns
from tests.helpers.dnsserver import FakeNameserver

from .flood import FloodUpstream, flood, seeds
from .helpers import exchange, final_status, stopped_log

FLOOD_PACKETS = 100_000


@pytest.fixture
def upstream() -> Iterator[FakeNameserver]:
    with FloodUpstream() as server:  # answers anything, so whatever aidns asks shows
        yield server


@pytest.fixture
def aidns(tmp_path: Path, upstream: FakeNameserver) -> Iterator[Aidns]:
    server = start_aidns(tmp_path, f"--upstream={upstream.hostport}")
    yield server
    log = stopped_log(server)
    assert "Traceback" not in log


def test_a_newer_edns_version_gets_badvers_with_our_version(
    aidns: Aidns, upstream: FakeNameserver
) -> None:
    query = dns.message.make_query("new.test", "A", use_edns=1, want_dnssec=True)
    wire = query.to_wire()
    reply = exchange(aidns.port(), wire)
    assert reply is not None and len(reply) <= len(wire)
    response = dns.message.from_wire(reply)
    assert response.id == query.id and response.question == query.question
    assert response.rcode() == dns.rcode.BADVERS and reply[3] & 0x0F == 0
    assert response.edns == 0 and response.ednsflags & dns.flags.DO
    assert response.answer == [] and upstream.queries == 0


def test_two_opt_records_get_formerr(aidns: Aidns, upstream: FakeNameserver) -> None:
    wire = bytearray(dns.message.make_query("two.test", "A", use_edns=0).to_wire())
    wire += wire[-11:]  # the same OPT record again
    struct.pack_into("!H", wire, 10, 2)
    reply = exchange(aidns.port(), bytes(wire))
    assert reply is not None and len(reply) <= len(wire)
    assert reply[:2] == wire[:2] and reply[3] & 0x0F == dns.rcode.FORMERR
    assert upstream.queries == 0


def test_a_packet_with_qr_set_gets_no_answer_over_udp_or_tcp(aidns: Aidns) -> None:
    query = dns.message.make_query("qr.test", "A")
    query.flags |= dns.flags.QR
    assert exchange(aidns.port(), query.to_wire(), 0.5) is None
    with socket.create_connection(("127.0.0.1", aidns.port(transport="tcp")), timeout=5) as conn:
        good = dns.message.make_query("after.test", "A")
        for message in (query, good):
            wire = message.to_wire()
            conn.sendall(struct.pack("!H", len(wire)) + wire)
        (length,) = struct.unpack("!H", conn.recv(2))
        assert dns.message.from_wire(conn.recv(length)).id == good.id  # the first and only


def test_a_flood_of_mutated_queries_is_never_amplified_and_never_stops_answering(
    tmp_path: Path,
) -> None:
    with FloodUpstream() as upstream:
        server = start_aidns(tmp_path, f"--upstream={upstream.hostport}")
        try:
            for wire in seeds():  # cached first: a lax parser would serve the big answers
                assert exchange(server.port(), wire) is not None
            started = time.monotonic()
            report = flood(server.port(), FLOOD_PACKETS)
            elapsed = time.monotonic() - started
            answer = dns.query.udp(
                dns.message.make_query("after.flood.test", "A"),
                "127.0.0.1",
                port=server.port(),
                timeout=5,
            )
        finally:
            log = stopped_log(server)
    summary = f"{report.sent} sent, {report.replies} replies in {elapsed:.1f} s"
    assert not report.violations, f"{summary}; first: {report.violations[:5]}"
    assert report.replies > report.sent // 2, summary
    assert answer.rcode() == dns.rcode.NOERROR and len(answer.answer[0]) == 20
    assert "Traceback" not in log
    faults = final_status(server)["faults"]
    assert not [kind for kind in faults if "while" in kind], faults
    lines = log.splitlines()
    assert len(lines) < 50, f"{len(lines)} log lines for a junk flood:\n" + "\n".join(lines[:60])


MILLION = 1_000_000
RSS_GROWTH_LIMIT_MIB = 64


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_a_million_mutated_packets_leave_rss_within_its_bound(tmp_path: Path) -> None:
    with FloodUpstream() as upstream:
        server = start_aidns(tmp_path, f"--upstream={upstream.hostport}")
        try:
            # warm-up to the steady state: the cache, the memo and the repeats (20,000 each by
            # default) full, as a busy day leaves them; what the flood adds beyond is a leak
            flood(server.port(), 60_000, seed=1)
            steady = rss_mib(server.process.pid)
            report = flood(server.port(), MILLION)
            grown = rss_mib(server.process.pid) - steady
            answer = dns.query.udp(
                dns.message.make_query("after.flood.test", "A"),
                "127.0.0.1",
                port=server.port(),
                timeout=5,
            )
        finally:
            log = stopped_log(server)
    assert report.sent == MILLION
    assert not report.violations, report.violations[:5]
    assert grown <= RSS_GROWTH_LIMIT_MIB, f"RSS grew {grown:.1f} MiB over {steady:.1f} MiB"
    assert answer.rcode() == dns.rcode.NOERROR
    assert "Traceback" not in log
