"""An idle aidns sleeps: with no queries, its threads (and any child's) hardly ever wake."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .conftest import Dnsmasq, answer, start_aidns

SETTLE_S = 3.0  # the query log's last batch and the status file after the first answers
SPAN_S = 10.0
MOST_PER_S = 2.0  # generous: the goal is at most 1 a second, and 0 is what it does


def process_tree(pid: int) -> list[int]:
    found = [pid]
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for thread in threads:
        try:
            children = Path(f"/proc/{pid}/task/{thread}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            found += process_tree(int(child))
    return found


def context_switches(pid: int) -> dict[tuple[int, int], int]:
    """Voluntary and involuntary switches so far of every thread of `pid` and its children."""
    counts = {}
    for process in process_tree(pid):
        try:
            threads = os.listdir(f"/proc/{process}/task")
        except OSError:
            continue
        for thread in threads:
            try:
                lines = Path(f"/proc/{process}/task/{thread}/status").read_text().splitlines()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in lines if ":" in line)
            counts[(process, int(thread))] = sum(
                int(fields[key])
                for key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")
            )
    return counts


def test_an_idle_server_wakes_at_most_twice_a_second(tmp_path: Path, dnsmasq: Dnsmasq) -> None:
    lists = tmp_path / "data" / "lists"
    lists.mkdir(parents=True)
    (lists / "mine.txt").write_text("blocked.test\n")
    server = start_aidns(tmp_path, f"--upstream=127.0.0.1:{dnsmasq.port}")  # query log on
    try:
        for _round in range(2):  # the second round repeats: remembered answers, repeat counts
            assert answer(server, "blocked.test") == "0.0.0.0"
            assert answer(server, "a.up.test") == "192.0.2.10"
        time.sleep(SETTLE_S)
        before = context_switches(server.process.pid)
        time.sleep(SPAN_S)
        after = context_switches(server.process.pid)
    finally:
        server.stop()
    woken = {thread: count - before.get(thread, 0) for thread, count in after.items()}
    assert sum(woken.values()) <= MOST_PER_S * SPAN_S, woken
