"""The protections aidns applies by default, asked with dig against a real aidns whose loopback
upstream (dnsmasq) would answer every canary and hides a tracker behind a CNAME."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Aidns, Dnsmasq, aidns_command, start_aidns, start_dnsmasq

UPSTREAM_ANSWERS = (
    "--address=/use-application-dns.net/192.0.2.9",
    "--address=/mask.icloud.com/192.0.2.9",
    "--address=/mask-h2.icloud.com/192.0.2.9",
    "--host-record=ingest.tracker.test,192.0.2.66",
    "--cname=metrics.first.test,ingest.tracker.test",
    "--cname=allowed.first.test,ingest.tracker.test",
    "--host-record=plain.first.test,192.0.2.7",
)


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Dnsmasq]:
    server = start_dnsmasq(tmp_path, *UPSTREAM_ANSWERS)
    yield server
    server.stop()


def serve(tmp_path: Path, upstream: Dnsmasq, config: str = "") -> Aidns:
    lists = tmp_path / "data" / "lists"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "trackers.txt").write_text("tracker.test\n")
    (tmp_path / "config.yaml").write_text(config + "allow: [allowed.first.test]\n")
    return start_aidns(tmp_path, f"--upstream=127.0.0.1:{upstream.port}")


def dig(server: Aidns, name: str, *options: str, qtype: str = "A") -> str:
    done = subprocess.run(
        [
            "dig",
            "@127.0.0.1",
            "-p",
            str(server.port()),
            name,
            qtype,
            "+tries=1",
            "+time=3",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def status(said: str) -> str:
    return said.split("status: ", 1)[1].split(",", 1)[0]


def answers(said: str) -> list[str]:
    section = said.split(";; ANSWER SECTION:\n", 1)
    if len(section) == 1:
        return []
    return [line.split()[-1] for line in section[1].split("\n\n", 1)[0].splitlines()]


def test_canaries_answer_nxdomain_and_resolver_discovery_nodata(
    tmp_path: Path, upstream: Dnsmasq
) -> None:
    server = serve(tmp_path, upstream)
    try:
        for canary in ("use-application-dns.net", "mask.icloud.com", "mask-h2.icloud.com"):
            said = dig(server, canary)
            assert status(said) == "NXDOMAIN" and answers(said) == [], said
        firefox = dig(server, "use-application-dns.net")
        assert "EDE: 15 (Blocked): (special: firefox canary)" in firefox
        discovery = dig(server, "_dns.resolver.arpa", qtype="TYPE64")
        assert status(discovery) == "NOERROR" and answers(discovery) == []
    finally:
        server.stop()


def test_each_canary_can_be_switched_off(tmp_path: Path, upstream: Dnsmasq) -> None:
    server = serve(
        tmp_path,
        upstream,
        "firefox_canary: false\nprivate_relay_canary: false\nhide_resolver_discovery: false\n",
    )
    try:
        assert answers(dig(server, "use-application-dns.net")) == ["192.0.2.9"]
        assert answers(dig(server, "mask.icloud.com")) == ["192.0.2.9"]
    finally:
        server.stop()


def test_a_cname_to_a_blocked_name_is_sinkholed_and_logged_with_the_cname(
    tmp_path: Path, upstream: Dnsmasq
) -> None:
    server = serve(tmp_path, upstream)
    try:
        hidden = dig(server, "metrics.first.test")
        assert answers(hidden) == ["0.0.0.0"], hidden
        assert "EDE: 15 (Blocked): (trackers)" in hidden
        assert answers(dig(server, "plain.first.test")) == ["192.0.2.7"]
        allowed = dig(server, "allowed.first.test")  # an allow rule for the question wins
        assert answers(allowed)[-1] == "192.0.2.66", allowed
        server.stop()
        rows = subprocess.run(
            aidns_command("log", "--json", "--domain=first.test", f"--data-dir={server.data_dir}"),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.splitlines()
        by_name = {row["name"]: row for row in map(json.loads, rows)}
        metrics = by_name["metrics.first.test"]
        assert metrics["verdict"] == "blocked" and metrics["list"] == "trackers"
        assert metrics["rule"] == "tracker.test via CNAME ingest.tracker.test"
    finally:
        server.stop()


def test_blocked_answers_say_why_to_edns_clients_only_and_it_can_be_switched_off(
    tmp_path: Path, upstream: Dnsmasq
) -> None:
    server = serve(tmp_path, upstream)
    try:
        said = dig(server, "x.tracker.test")
        assert answers(said) == ["0.0.0.0"] and "EDE: 15 (Blocked): (trackers)" in said
        plain = dig(server, "x.tracker.test", "+noedns")
        assert answers(plain) == ["0.0.0.0"] and "OPT PSEUDOSECTION" not in plain
    finally:
        server.stop()
    server = serve(tmp_path, upstream, "extended_dns_errors: false\n")
    try:
        said = dig(server, "x.tracker.test")
        assert "OPT PSEUDOSECTION" in said and "EDE" not in said
    finally:
        server.stop()


def test_a_list_may_give_its_sinkhole_answers_a_longer_ttl(
    tmp_path: Path, upstream: Dnsmasq
) -> None:
    """For names that programs retry in a storm when blocked (Claude Code's telemetry hosts)."""
    lists = tmp_path / "data" / "lists"
    lists.mkdir(parents=True)
    (lists / "storm.yaml").write_text(
        "name: storm\naction: block\nblock_ttl: 86400\ndomains:\n  - retry.storm.test\n"
    )
    server = serve(tmp_path, upstream)
    try:
        long = dig(server, "retry.storm.test")
        assert answers(long) == ["0.0.0.0"] and "\t86400\tIN\tA\t0.0.0.0" in long, long
        usual = dig(server, "x.tracker.test")
        assert "\t60\tIN\tA\t0.0.0.0" in usual, usual
    finally:
        server.stop()
    (lists / "storm.yaml").write_text("name: storm\nblock_ttl: -1\ndomains: [a.test]\n")
    checked = subprocess.run(
        aidns_command("lists", f"--data-dir={tmp_path / 'data'}", "--config=/dev/null"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        "block_ttl: -1 is not a number of seconds from 0 to 604800"
        in checked.stdout + checked.stderr
    )
