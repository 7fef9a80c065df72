"""End-to-end: the real server, a real dnsmasq upstream, real clients; loopback only."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from .conftest import Aidns, Dnsmasq, aidns_command, free_port, start_aidns, start_dnsmasq

HOSTS = ["127.0.0.1", "::1"]


def ask(
    server: Aidns,
    name: str,
    rdtype: str = "A",
    host: str = "127.0.0.1",
    tcp: bool = False,
    **kw: object,
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    port = server.port(host, "tcp" if tcp else "udp")
    if tcp:
        return dns.query.tcp(query, host, port=port, timeout=5)
    return dns.query.udp(query, host, port=port, timeout=5)


def addresses(message: dns.message.Message) -> list[str]:
    return [r.to_text() for rrset in message.answer for r in rrset]


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_blocked_forwarded_and_watched(aidns: Aidns, host: str, tcp: bool) -> None:
    blocked = ask(aidns, "o1.Blocked.Test", host=host, tcp=tcp)
    assert blocked.rcode() == dns.rcode.NOERROR and addresses(blocked) == ["0.0.0.0"]
    assert str(blocked.question[0].name) == "o1.Blocked.Test."
    assert addresses(ask(aidns, "blocked.test", "AAAA", host=host, tcp=tcp)) == ["::"]
    assert ask(aidns, "blocked.test", "TXT", host=host, tcp=tcp).answer == []
    assert addresses(ask(aidns, "exact.test", host=host, tcp=tcp)) == ["0.0.0.0"]
    assert ask(aidns, "below.exact.test", host=host, tcp=tcp).rcode() == dns.rcode.NXDOMAIN
    assert addresses(ask(aidns, "www.up.test", host=host, tcp=tcp)) == ["192.0.2.10"]
    assert addresses(ask(aidns, "watched.up.test", "AAAA", host=host, tcp=tcp)) == ["2001:db8::10"]
    shipped = ask(aidns, "telemetry.lmstudio.ai", host=host, tcp=tcp)
    assert addresses(shipped) == ["0.0.0.0"]


def test_cache_counts_ttl_down(aidns: Aidns, dnsmasq: Dnsmasq) -> None:
    first = ask(aidns, "cached.up.test")
    assert first.answer[0].ttl == 300
    time.sleep(2.1)
    again = ask(aidns, "cached.up.test", tcp=True)
    assert 296 <= again.answer[0].ttl <= 298
    dnsmasq.stop()  # served from the cache alone now
    assert addresses(ask(aidns, "CACHED.up.test")) == ["192.0.2.10"]


def test_edns_do_bit_and_id_come_back(aidns: Aidns) -> None:
    query = dns.message.make_query("edns.up.test", "A", use_edns=0, want_dnssec=True, payload=4096)
    response = dns.query.udp(query, "127.0.0.1", port=aidns.port(), timeout=5)
    assert response.id == query.id
    assert response.edns == 0 and response.ednsflags & dns.flags.DO


def test_upstream_down_gives_servfail_within_timeout(tmp_path: Path) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # receives, never answers
    try:
        server = start_aidns(
            tmp_path, f"--upstream=127.0.0.1:{silent.getsockname()[1]}", "--upstream-timeout=1"
        )
        try:
            started = time.monotonic()
            response = ask(server, "anything.example")
            elapsed = time.monotonic() - started
            assert response.rcode() == dns.rcode.SERVFAIL
            assert elapsed < 1.5
            assert (
                ask(server, "telemetry.lmstudio.ai").rcode() == dns.rcode.NOERROR
            )  # blocking still works
        finally:
            server.stop()
    finally:
        silent.close()


def raw_exchange(port: int, payload: bytes, timeout_s: float = 1.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(timeout_s)
        client.sendto(payload, ("127.0.0.1", port))
        try:
            return client.recv(4096)
        except TimeoutError:
            return None


def test_bad_packets_get_formerr_or_silence_and_the_server_keeps_answering(aidns: Aidns) -> None:
    port = aidns.port()
    assert raw_exchange(port, b"\xff" * 5, 0.3) is None  # no readable header: dropped
    two_questions = struct.pack("!HHHHHH", 0xBEEF, 0x0100, 2, 0, 0, 0) + b"\x00\x00\x01\x00\x01" * 2
    response = raw_exchange(port, two_questions)
    assert (
        response is not None
        and response[:2] == b"\xbe\xef"
        and response[3] & 0xF == dns.rcode.FORMERR
    )
    truncated = dns.message.make_query("cut.example", "A").to_wire()[:-3]
    response = raw_exchange(port, truncated)
    assert response is not None and response[3] & 0xF == dns.rcode.FORMERR
    for garbage in (
        b"\x00" * 12,
        bytes(range(256)) * 3,
        b"\x12\x34\x01\x00\x00\x01" + b"\xc0" * 40,
    ):
        raw_exchange(port, garbage, 0.2)
    assert addresses(ask(aidns, "after.up.test")) == ["192.0.2.10"]


def test_tcp_length_prefix_past_the_data_is_closed(tmp_path: Path, dnsmasq: Dnsmasq) -> None:
    (tmp_path / "config.yaml").write_text("tcp_idle_timeout: 0.5\n")
    server = start_aidns(tmp_path, f"--upstream=127.0.0.1:{dnsmasq.port}")
    try:
        with socket.create_connection(
            ("127.0.0.1", server.port("127.0.0.1", "tcp")), timeout=5
        ) as conn:
            conn.sendall(b"\x01\x00" + b"\x00" * 20)  # promises 256 bytes, sends 20
            started = time.monotonic()
            assert conn.recv(100) == b""
            assert time.monotonic() - started < 3
        with socket.create_connection(
            ("127.0.0.1", server.port("127.0.0.1", "tcp")), timeout=5
        ) as conn:
            wires = [
                dns.message.make_query(n, "A").to_wire()
                for n in ("telemetry.lmstudio.ai", "two.up.test")
            ]
            conn.sendall(b"".join(struct.pack("!H", len(w)) + w for w in wires))
            replies = [dns.query.receive_tcp(conn, time.time() + 5)[0] for _ in wires]
            assert sorted(addresses(r)[0] for r in replies) == ["0.0.0.0", "192.0.2.10"]
    finally:
        server.stop()


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig is not installed (bind9-dnsutils)")
def test_dig_as_a_client(aidns: Aidns) -> None:
    for extra in ([], ["+tcp"], ["+dnssec"]):
        out = subprocess.run(
            ["dig", "+short", "-p", str(aidns.port()), "@127.0.0.1", "analytics.jan.ai", *extra],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split()
        assert out == ["0.0.0.0"], extra


def test_sigterm_and_sigint_stop_cleanly(tmp_path: Path, dnsmasq: Dnsmasq) -> None:
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        server = start_aidns(tmp_path, f"--upstream=127.0.0.1:{dnsmasq.port}")
        assert server.stop(sig) == 0
        assert any("stopped after" in line for line in server.log)
        assert not any("Traceback" in line for line in server.log)


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(aidns_command("serve", *args), capture_output=True, text=True, timeout=20)


def test_refuses_to_forward_to_itself(tmp_path: Path) -> None:
    port = free_port()
    result = run_serve(
        f"--listen=127.0.0.1:{port}", f"--upstream=127.0.0.1:{port}", f"--data-dir={tmp_path}"
    )
    assert result.returncode == 2
    assert "queries would loop" in result.stderr and "Traceback" not in result.stderr


def test_bad_config_names_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("listen: ['127.0.0.1:0']\nupstream: ['127.0.0.1:9']\ncache_size: lots\n")
    result = run_serve(f"--config={config}", f"--data-dir={tmp_path}")
    assert result.returncode == 2
    assert f"{config}:3: cache_size" in result.stderr and "Traceback" not in result.stderr


def test_bad_list_is_reported_and_the_rest_still_blocks(tmp_path: Path, dnsmasq: Dnsmasq) -> None:
    lists = tmp_path / "data" / "lists"
    lists.mkdir(parents=True)
    (lists / "broken.yaml").write_text("name: broken\ndomains:\n  - [unclosed\n")
    (lists / "good.txt").write_text("good.test\nnot a name\n")
    server = start_aidns(tmp_path, f"--upstream=127.0.0.1:{dnsmasq.port}")
    try:
        assert addresses(ask(server, "good.test")) == ["0.0.0.0"]
    finally:
        server.stop()
    log = "\n".join(server.log)
    assert f"{lists / 'broken.yaml'}:" in log
    assert f"{lists / 'good.txt'}:2: not a domain name" in log


def test_a_flood_from_one_socket_is_answered_and_every_query_counted(aidns: Aidns) -> None:
    # from the third identical packet on, a socket's repeats are only answered and counted;
    # the counts reach the log and the status within about a second
    query = dns.message.make_query("flood.blocked.test", "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        for query_id in range(300):
            query.id = query_id
            sock.sendto(query.to_wire(), ("127.0.0.1", aidns.port()))
            answer = dns.message.from_wire(sock.recv(512))
            assert answer.id == query_id and addresses(answer) == ["0.0.0.0"]
        # another socket, asked while the first is open so that it cannot get the same port
        assert addresses(ask(aidns, "flood.blocked.test")) == ["0.0.0.0"]
    log_command = aidns_command(
        "log", "--json", "--domain=flood.blocked.test", f"--data-dir={aidns.data_dir}"
    )
    deadline = time.monotonic() + 10
    while True:
        out = subprocess.run(log_command, capture_output=True, text=True, check=True).stdout
        rows = [json.loads(line) for line in out.splitlines()]
        status = json.loads((aidns.data_dir / "status.json").read_text())
        blocked = status["by_verdict"].get("blocked", 0)
        if sum(row["count"] for row in rows) >= 301 and blocked >= 301:
            break
        assert time.monotonic() < deadline, (rows, status)
        time.sleep(0.2)
    assert sum(row["count"] for row in rows) == 301
    assert {row["verdict"] for row in rows} == {"blocked"}
    assert all(row["latency_ms"] < 1000 for row in rows)


def test_an_expired_answer_is_served_stale_while_the_upstream_is_down(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("cache_max_ttl: 1\nupstream_timeout: 0.5\n")
    upstream = start_dnsmasq(tmp_path)
    server = start_aidns(tmp_path, f"--upstream=127.0.0.1:{upstream.port}")
    try:
        fresh = ask(server, "stale.up.test")
        assert addresses(fresh) == ["192.0.2.10"]
        upstream.stop()
        time.sleep(1.5)  # expired, and nobody to ask
        stale = ask(server, "stale.up.test", use_edns=0)
        assert addresses(stale) == ["192.0.2.10"] and stale.answer[0].ttl == 30
        said = [option for option in stale.options if isinstance(option, dns.edns.EDEOption)]
        assert [option.code for option in said] == [dns.edns.EDECode.STALE_ANSWER]
        assert ask(server, "never-asked.up.test").rcode() == dns.rcode.SERVFAIL
        log_command = aidns_command(
            "log", "--json", "--domain=stale.up.test", f"--data-dir={server.data_dir}"
        )
        deadline = time.monotonic() + 10
        while True:
            out = subprocess.run(log_command, capture_output=True, text=True, check=True).stdout
            rules = [json.loads(line)["rule"] for line in out.splitlines()]
            if len(rules) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert rules[0] == "stale: no upstream answered"  # newest first
        status_command = aidns_command("status", f"--data-dir={server.data_dir}")
        deadline = time.monotonic() + 10
        while "expired cache entries" not in (
            shown := subprocess.run(status_command, capture_output=True, text=True).stdout
        ):
            assert time.monotonic() < deadline, shown
            time.sleep(0.3)
        assert "answered 1 queries from expired cache entries" in shown
        assert f"upstreams: 127.0.0.1:{upstream.port} failing (2 in a row)" in shown
    finally:
        server.stop()
        upstream.stop()
    assert any("answering from expired cache entries" in line for line in server.log)


def test_systemd_is_told_when_ready_pinged_and_told_when_stopping(
    tmp_path: Path, dnsmasq: Dnsmasq
) -> None:
    # what systemd's Type=notify and WatchdogSec=1 would set; the socket is ours
    notify_path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify_socket:
        notify_socket.bind(str(notify_path))
        notify_socket.settimeout(10)
        server = start_aidns(
            tmp_path,
            f"--upstream=127.0.0.1:{dnsmasq.port}",
            env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000"},
        )
        try:
            ready = notify_socket.recv(4096).decode()
            assert ready == f"READY=1\nSTATUS=answering on 127.0.0.1:{server.port()}"
            ready_answer = ask(server, "telemetry.lmstudio.ai")  # ready means answering
            assert addresses(ready_answer) == ["0.0.0.0"]
            started = time.monotonic()
            pings = [notify_socket.recv(4096).decode() for _ in range(3)]
            assert pings == ["WATCHDOG=1"] * 3
            assert time.monotonic() - started < 2.5  # every half second, as systemd asks
        finally:
            server.stop()
        notify_socket.settimeout(0.5)
        after = []
        with contextlib.suppress(TimeoutError):
            while True:
                after.append(notify_socket.recv(4096).decode())
        assert after[-1:] == ["STOPPING=1"] and set(after[:-1]) <= {"WATCHDOG=1"}
