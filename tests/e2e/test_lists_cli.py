"""End-to-end: the real `aidns lists` and `aidns check` commands, a list server on 127.0.0.1,
and a running `aidns serve` that follows list changes. Loopback only."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from ..listserver import ListServer, serve_lists
from .conftest import Dnsmasq, aidns_command, start_aidns

HOSTS = "# test list\n127.0.0.1 localhost\n0.0.0.0 ads.example tracker.example\n"


@pytest.fixture
def site() -> Iterator[ListServer]:
    with serve_lists() as server:
        yield server


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "config.yaml"
    if not config.exists():
        config.write_text("")
    return {
        **os.environ,
        "AIDNS_CONFIG": str(config),
        "AIDNS_DATA_DIR": str(tmp_path / "data"),
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }


def aidns(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(aidns_command(*args), capture_output=True, text=True, env=env, timeout=60)


def test_add_check_update_and_keep_the_last_good_copy(
    env: dict[str, str], site: ListServer
) -> None:
    url = site.put("/hosts", HOSTS)
    added = aidns(env, "lists", "add", url, "--name", "ads")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("added ads: 2 entries, block, on; from " + url)

    blocked = aidns(env, "check", "Tracker.Example")
    assert blocked.returncode == 1
    assert blocked.stdout.splitlines()[:2] == [
        "tracker.example: blocked",
        "  rule: =tracker.example (list ads)",
    ]
    forwarded = aidns(env, "check", "sub.tracker.example")  # hosts lines are exact
    assert (forwarded.returncode, forwarded.stdout.splitlines()[0]) == (
        0,
        "sub.tracker.example: forwarded",
    )

    table = aidns(env, "lists")
    row = next(line for line in table.stdout.splitlines() if line.startswith("ads "))
    assert row.split()[:4] == ["ads", "block", "on", "2"] and url in row

    unchanged = aidns(env, "lists", "update")
    assert (unchanged.returncode, unchanged.stdout) == (
        0,
        "ads: unchanged, not modified (HTTP 304)\n",
    )
    assert site.requests[-1][1]["if-none-match"] == site.pages["/hosts"].etag

    site.put("/hosts", HOSTS, status=503)
    failed = aidns(env, "lists", "update", "ads")
    assert failed.returncode == 1
    assert failed.stdout.startswith("ads: failed, ") and "HTTP 503" in failed.stdout
    assert "kept the copy in use" in failed.stdout
    assert aidns(env, "check", "ads.example").returncode == 1
    assert "ads: the last update failed" in aidns(env, "lists").stdout

    site.put("/hosts", HOSTS + "0.0.0.0 third.example\n")
    updated = aidns(env, "lists", "update", "--json")
    assert json.loads(updated.stdout) == [
        {
            "name": "ads",
            "status": "updated",
            "detail": "3 entries",
            "entries": 3,
            "previous": 2,
            "kept_from": None,
        }
    ]
    assert aidns(env, "check", "third.example").returncode == 1

    removed = aidns(env, "lists", "remove", "ads")
    assert removed.returncode == 0 and removed.stdout.startswith("removed ads")
    assert aidns(env, "check", "ads.example").returncode == 0


def test_add_reports_skipped_lines_and_refuses_a_page_that_is_no_list(
    env: dict[str, str], site: ListServer
) -> None:
    mixed = "||ok.example^\n@@||exception.example^\nexample.org##.ad\nbad..name\n"
    added = aidns(env, "lists", "add", site.put("/filters.txt", mixed), "--action", "watch")
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines() == [
        f"added filters: 1 entries, watch, on; from {site.url('/filters.txt')}, "
        f"in {Path(env['AIDNS_DATA_DIR']) / 'lists' / 'filters.txt'}",
        "3 lines skipped, e.g.:",
        f"  {site.url('/filters.txt')}:2: AdBlock exception rule, not supported: "
        "'@@||exception.example^'",
        f"  {site.url('/filters.txt')}:3: AdBlock cosmetic rule, not supported: 'example.org##.ad'",
        f"  {site.url('/filters.txt')}:4: not a domain name: 'bad..name'",
    ]
    watched = aidns(env, "check", "a.ok.example")
    assert watched.returncode == 0 and watched.stdout.startswith("a.ok.example: watched")

    page = aidns(env, "lists", "add", site.put("/page", "<html>\n<p>moved</p>\n</html>\n"))
    assert page.returncode == 2 and "no usable entries" in page.stderr
    assert not (Path(env["AIDNS_DATA_DIR"]) / "lists" / "page.txt").exists()


def test_enable_disable_show_and_where_options_go(env: dict[str, str], tmp_path: Path) -> None:
    Path(env["AIDNS_CONFIG"]).write_text("lists:\n  disable: [vllm]\n")
    assert aidns(env, "check", "analytics.jan.ai").returncode == 1
    off = aidns(env, "lists", "disable", "jan")
    assert (off.returncode, off.stdout) == (0, "jan: off (it was on)\n")
    assert aidns(env, "check", "analytics.jan.ai").returncode == 0

    on = aidns(env, "lists", "enable", "vllm")
    assert on.stdout.splitlines() == [
        "vllm: on (it was off)",
        f"this overrides `lists: disable` in {env['AIDNS_CONFIG']}",
    ]
    assert aidns(env, "check", "stats.vllm.ai").returncode == 1
    rows = json.loads(aidns(env, "lists", "--json").stdout)
    by_name = {row["name"]: row for row in rows}
    assert (by_name["jan"]["enabled"], by_name["jan"]["why"]) == (False, "lists disable")
    assert (by_name["vllm"]["enabled"], by_name["vllm"]["why"]) == (True, "lists enable")
    assert (by_name["sentry-all"]["enabled"], by_name["sentry-all"]["why"]) == (False, "default")

    unknown = aidns(env, "lists", "enable", "nosuch")
    assert unknown.returncode == 2
    assert "no list named 'nosuch', so nothing changed; the lists are: aider, amplitude," in (
        unknown.stderr
    )

    # Options before the subcommand count too, and override the environment.
    other = tmp_path / "other-data"
    before = aidns(env, "lists", f"--data-dir={other}", "enable", "sentry-all")
    assert before.returncode == 0, before.stderr
    assert "sentry-all" in (other / "lists.state.yaml").read_text()
    assert aidns(env, "check", "o1.ingest.sentry.io", f"--data-dir={other}").returncode == 1
    assert aidns(env, "check", "o1.ingest.sentry.io").returncode == 0

    shown = aidns(env, "lists", "show", "sentry").stdout
    assert shown.startswith("sentry: block+watch, on, 9 entries\n")
    assert "block  =o19358.ingest.sentry.io  (crash; breaks: no)" in shown
    assert "    evidence: [SRC] sourcegraph/cody@dced3c1:vscode/src/services/sentry" in shown
    as_json = json.loads(aidns(env, "lists", "show", "lmstudio", "--json").stdout)
    telemetry = next(e for e in as_json["list"] if e["domain"] == "telemetry.lmstudio.ai")
    assert (telemetry["action"], telemetry["verified"]) == ("block", False)


def test_check_json_and_errors(env: dict[str, str]) -> None:
    result = aidns(env, "check", "--json", "o151352.ingest.us.sentry.io")
    assert result.returncode == 1
    verdict = json.loads(result.stdout)
    assert (verdict["verdict"], verdict["list"], verdict["rule"]) == (
        "blocked",
        "sentry",
        "=o151352.ingest.us.sentry.io",
    )
    assert verdict["entry"]["purpose"] == "crash" and "wandb" in verdict["entry"]["evidence"]
    watched = json.loads(aidns(env, "check", "--json", "registry.ollama.ai").stdout)
    assert (watched["verdict"], watched["entry"]["breaks"]) == ("watched", "yes")
    bad = aidns(env, "check", "bad..name")
    assert bad.returncode == 2 and "not a domain name" in bad.stderr


def ask(port: int, name: str) -> list[str]:
    reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=5)
    if reply.rcode() != dns.rcode.NOERROR:
        return [dns.rcode.to_text(reply.rcode())]
    return [r.to_text() for rrset in reply.answer for r in rrset]


def eventually(port: int, name: str, wanted: list[str]) -> list[str]:
    deadline = time.monotonic() + 10
    while (got := ask(port, name)) != wanted and time.monotonic() < deadline:
        time.sleep(0.2)
    return got


def test_a_running_server_follows_lists_add_disable_and_remove(
    env: dict[str, str], tmp_path: Path, dnsmasq: Dnsmasq
) -> None:
    server = start_aidns(tmp_path, f"--upstream=127.0.0.1:{dnsmasq.port}")
    try:
        port = server.port()
        assert ask(port, "blocked.up.test") == ["192.0.2.10"]
        mine = tmp_path / "mine.hosts"
        mine.write_text("0.0.0.0 blocked.up.test\n")
        assert aidns(env, "lists", "add", str(mine)).returncode == 0
        assert eventually(port, "blocked.up.test", ["0.0.0.0"]) == ["0.0.0.0"]
        assert aidns(env, "lists", "disable", "mine").returncode == 0
        assert eventually(port, "blocked.up.test", ["192.0.2.10"]) == ["192.0.2.10"]
        assert aidns(env, "lists", "enable", "mine").returncode == 0
        assert eventually(port, "blocked.up.test", ["0.0.0.0"]) == ["0.0.0.0"]
        assert aidns(env, "lists", "remove", "mine").returncode == 0
        assert eventually(port, "blocked.up.test", ["192.0.2.10"]) == ["192.0.2.10"]
        assert ask(port, "telemetry.lmstudio.ai") == ["0.0.0.0"]
    finally:
        server.stop()
