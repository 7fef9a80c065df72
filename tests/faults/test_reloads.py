"""Big and hostile files reloaded under steady queries: nothing goes unanswered, nothing is lost.

A prober asks the running server a blocked name and a forwarded one every few milliseconds
while a file changes; every query must be answered, none slower than `GAP_S`, and the rules
must be right afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.e2e.conftest import Aidns, Dnsmasq, answer, start_aidns

from .helpers import stopped_log

GAP_S = 0.1
SETTLE_S = 90.0
RULES = "\n".join(f"  - {{name: r{n}.rules.test, kind: block, match: subtree}}" for n in range(7))


def wire(name: str) -> bytes:
    return dns.message.make_query(name, "A").to_wire()


@dataclass
class Prober:
    """Asks `names` in turn from one socket, each with a fresh ID, until stopped."""

    port: int
    names: tuple[str, ...] = ("blocked.test", "x.up.test")
    answered: int = 0
    unanswered: list[str] = field(default_factory=list)
    slowest_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        packets = [wire(name) for name in self.names]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(2.0)
            query_id = 0
            while not self._stop.is_set():
                for name, packet in zip(self.names, packets, strict=True):
                    query_id = (query_id + 1) & 0xFFFF
                    sent = time.monotonic()
                    udp.sendto(struct.pack(">H", query_id) + packet[2:], ("127.0.0.1", self.port))
                    try:
                        while True:
                            reply = udp.recv(4096)
                            if reply[:2] == struct.pack(">H", query_id):
                                break
                    except TimeoutError:
                        self.unanswered.append(name)
                        continue
                    self.answered += 1
                    self.slowest_s = max(self.slowest_s, time.monotonic() - sent)
                time.sleep(0.005)

    def __enter__(self) -> Prober:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def status(server: Aidns) -> dict[str, object]:
    try:
        return dict(json.loads((server.data_dir / "status.json").read_text()))
    except (OSError, ValueError):
        return {}


def wait_for_reload(server: Aidns, after: float) -> dict[str, object]:
    """The status once a reload that ended after `after` (Unix time) shows, or fail."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        now = status(server)
        reloaded = now.get("reloaded")
        if isinstance(reloaded, float) and reloaded > after:
            return now
        updated = now.get("updated")
        if now.get("errors") and isinstance(updated, float) and updated > after:
            return now  # a reload that failed as a whole
        time.sleep(0.1)
    raise AssertionError(f"no reload within {SETTLE_S} s:\n" + "\n".join(server.log[-20:]))


@pytest.fixture
def server(tmp_path: Path, dnsmasq: Dnsmasq) -> Iterator[Aidns]:
    lists = tmp_path / "data" / "lists"
    lists.mkdir(parents=True)
    (lists / "mine.txt").write_text("blocked.test\nalso-blocked.test\n")
    (tmp_path / "data" / "rules.yaml").write_text(f"rules:\n{RULES}\n")
    aidns = start_aidns(tmp_path, f"--upstream=127.0.0.1:{dnsmasq.port}")
    assert answer(aidns, "blocked.test") == "0.0.0.0"
    yield aidns
    aidns.stop()
    assert not [line for line in aidns.log if "Traceback" in line]


def test_a_million_name_list_reloads_without_a_gap(server: Aidns, tmp_path: Path) -> None:
    staged = tmp_path / "big.txt"
    with staged.open("w") as out:
        out.writelines(f"n{n}.big.test\n" for n in range(1_000_000))
    with Prober(server.port()) as prober:
        time.sleep(0.3)
        before = time.time()
        os.replace(staged, server.data_dir / "lists" / "big.txt")
        wait_for_reload(server, before)
        time.sleep(0.3)
    assert prober.unanswered == []
    assert prober.answered > 50
    assert prober.slowest_s < GAP_S, f"slowest answer {prober.slowest_s * 1000:.0f} ms"
    assert answer(server, "n999999.big.test") == "0.0.0.0"
    assert answer(server, "blocked.test") == "0.0.0.0"


HOSTILE = {
    "one 50 MB line": ("huge.txt", b"a" * (50 << 20), "list_max_line_bytes"),
    "a billion laughs": (
        "bomb.yaml",
        (
            "name: bomb\nl0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
            + "".join(f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]\n" for n in range(1, 9))
            + "domains: *l8\n"
        ).encode(),
        "anchors and aliases",
    ),
    "a FIFO": ("fifo.txt", None, "not a regular file"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_list_is_refused_while_serving_goes_on(
    server: Aidns, tmp_path: Path, case: str
) -> None:
    name, content, said = HOSTILE[case]
    target = server.data_dir / "lists" / name
    with Prober(server.port()) as prober:
        time.sleep(0.3)
        before = time.time()
        if content is None:
            os.mkfifo(target)
        else:
            staged = tmp_path / name
            staged.write_bytes(content)
            os.replace(staged, target)
        wait_for_reload(server, before)
        time.sleep(0.3)
    assert prober.unanswered == []
    assert prober.slowest_s < GAP_S, f"slowest answer {prober.slowest_s * 1000:.0f} ms"
    assert answer(server, "blocked.test") == "0.0.0.0"
    errors = " ".join(map(str, status(server).get("errors") or []))
    assert said in errors and name in errors
    log = stopped_log(server)
    assert said in log
    assert max(map(len, log.splitlines())) < 1000  # no file content copied into the log


def test_a_config_bomb_keeps_the_rules_and_says_why(server: Aidns, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    bomb = "".join(
        f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9) if n else 'lol'}]\n" for n in range(9)
    )
    with Prober(server.port()) as prober:
        time.sleep(0.3)
        before = time.time()
        config.write_text(f"{bomb}block: *l8\n")
        wait_for_reload(server, before)
        time.sleep(0.3)
    assert prober.unanswered == []
    assert prober.slowest_s < GAP_S
    assert answer(server, "blocked.test") == "0.0.0.0"
    assert "anchors and aliases" in stopped_log(server)


def test_an_unreadable_list_keeps_its_last_good_version(server: Aidns) -> None:
    mine = server.data_dir / "lists" / "mine.txt"
    mine.unlink()
    mine.mkdir()  # unreadable even for root, unlike chmod 000
    before = time.time()
    server.process.send_signal(signal.SIGHUP)
    now = wait_for_reload(server, before)
    assert answer(server, "also-blocked.test") == "0.0.0.0"
    errors = " ".join(map(str, now.get("errors") or []))
    assert "mine.txt" in errors and "last good version" in errors


@pytest.mark.parametrize("cut", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_rules_written_in_place_slowly_are_read_whole(server: Aidns, cut: float) -> None:
    rules = server.data_dir / "rules.yaml"
    text = rules.read_bytes()
    at = int(len(text) * cut)
    before = time.time()
    with rules.open("r+b") as out:  # truncate, then write in two parts, as some editors do
        out.truncate(0)
        out.write(text[:at])
        out.flush()
        time.sleep(0.15)
        out.write(text[at:])
    wait_for_reload(server, before)
    time.sleep(0.5)  # any later reload of the same burst
    for n in range(7):
        assert answer(server, f"x.r{n}.rules.test") == "0.0.0.0", n
