"""Idle wake-ups: context switches per second of every thread of aidns and its children.

Run from the checkout, with aidns installed (`pip install -e .`) and dnsmasq-base:

    python3 tests/bench/bench_idle.py [--seconds 60] [--settle 10] [--names 1000000]
        [--rounds 1] [--json] [--keep]

Everything stays on 127.0.0.1. As in bench_resolver.py, a dnsmasq plays the upstream, and
aidns (default config: query log, attribution and hot reload on) and dnsmasq start on core 0
with the same blocklist (--names; 1,000 makes it a small list). Each answers a few queries
of each kind (cached, blocked, forwarded) so that whatever starts on first use has started,
then both are left alone for --settle seconds. Then, over --seconds, the script counts the
voluntary and non-voluntary context switches (/proc/PID/task/TID/status) of every thread of
each server and of every process below it (children found through the parent pid in
/proc/*/stat), and reports wake-ups per second per thread name and in total. Both servers
are measured over the same window; a thread that starts during it counts from zero, one
that ends during it is reported as gone (its last switches are lost). Issue 12's goal is at
most 1 wake-up per second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.common import (
    BUSY_LOAD,
    CACHED_ZONE,
    DNSMASQ,
    SEED,
    Children,
    ask,
    exit_cleanly_on_sigterm,
    fresh_names,
    generate_names,
    machine_info,
    preflight,
    process_tree,
    progress,
    workdir,
)
from tests.bench.servers import (
    start_side_by_side,
    start_upstream,
    write_blocklists,
)

GOAL_PER_S = 1.0


@dataclass(frozen=True)
class ThreadCount:
    process: str  # "server" for the process started, "child <comm>" below it
    thread: str  # /proc/PID/task/TID/comm
    switches: int  # voluntary + non-voluntary
    waits_in: str  # /proc/PID/task/TID/wchan: the kernel function it sleeps in


def read_comm(path: Path) -> str:
    return path.read_text().strip()


def thread_counts(root: int) -> dict[tuple[int, int], ThreadCount]:
    """Every thread of `root` and of its descendants, keyed by (pid, tid)."""
    counts: dict[tuple[int, int], ThreadCount] = {}
    for pid in process_tree(root):
        try:
            process = "server" if pid == root else f"child {read_comm(Path(f'/proc/{pid}/comm'))}"
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue  # it exited meanwhile
        for task in tasks:
            try:
                switches = 0
                for line in (task / "status").read_text().splitlines():
                    if "ctxt_switches:" in line:
                        switches += int(line.split()[1])
                counts[(pid, int(task.name))] = ThreadCount(
                    process, read_comm(task / "comm"), switches, read_comm(task / "wchan")
                )
            except OSError:
                continue
    return counts


def wakeups(
    before: dict[tuple[int, int], ThreadCount],
    after: dict[tuple[int, int], ThreadCount],
    seconds: float,
) -> dict[str, Any]:
    per_name: dict[str, float] = {}
    threads: dict[str, int] = {}
    per_thread = []
    for (pid, tid), end in after.items():
        start = before.get((pid, tid))
        rate = (end.switches - (start.switches if start else 0)) / seconds
        name = f"{end.process}: {end.thread}"
        per_name[name] = per_name.get(name, 0.0) + rate
        threads[name] = threads.get(name, 0) + 1
        role = "main thread" if tid == pid else f"tid {tid}"
        per_thread.append({"thread": f"{name} ({role}, waits in {end.waits_in})", "per_s": rate})
    gone = [f"{count.process}: {count.thread}" for key, count in before.items() if key not in after]
    started = [
        f"{count.process}: {count.thread}" for key, count in after.items() if key not in before
    ]
    return {
        "total_per_s": sum(per_name.values()),
        "per_thread_name": dict(sorted(per_name.items(), key=lambda item: -item[1])),
        "threads": threads,
        "per_thread": sorted(per_thread, key=lambda entry: -float(entry["per_s"])),
        "processes": len({pid for pid, _tid in after}),
        "started_during": started,
        "gone_during": gone,
    }


def exercise(port: int, names: Sequence[str], tag: str) -> None:
    """A few answers of each kind, so that what starts on first use has started."""
    asked = [*names[:3], *[f"host{index}.{CACHED_ZONE}" for index in range(3)]]
    asked += fresh_names(tag, 3)
    for name in asked * 2:
        ask(port, name)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the window")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds left alone before")
    parser.add_argument("--names", type=int, default=1_000_000, help="names in the blocklist")
    parser.add_argument("--rounds", type=int, default=1, help="windows, one after the other")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.settle < 0 or args.names < 4 or args.rounds < 1:
        parser.error("--seconds > 0, --settle >= 0, --names >= 4 and --rounds >= 1, please")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    preflight((DNSMASQ, "taskset"))
    exit_cleanly_on_sigterm()
    info = machine_info()
    if os.getloadavg()[0] > BUSY_LOAD:
        progress(f"warning: load average {info['load_at_start']}: other work may wake servers")
    children = Children()
    windows: list[dict[str, Any]] = []
    with workdir(args.keep) as tmp:
        try:
            progress(f"writing {args.names:,} names to {tmp}")
            names = generate_names(args.names, SEED)
            _, dnsmasq_list = write_blocklists(tmp, names)
            upstream_port = start_upstream(children, tmp)
            started = start_side_by_side(
                children, tmp, names[len(names) // 2], f"--conf-file={dnsmasq_list}", upstream_port
            )
            pids = {label: child.pid for label, (child, _port) in started.items()}
            for label, (_child, port) in started.items():
                exercise(port, names, label)
            progress(f"settling for {args.settle:g} s")
            time.sleep(args.settle)
            for number in range(1, args.rounds + 1):
                before = {label: thread_counts(pid) for label, pid in pids.items()}
                window_start = time.monotonic()
                time.sleep(args.seconds)
                after = {label: thread_counts(pid) for label, pid in pids.items()}
                elapsed = time.monotonic() - window_start
                window = {label: wakeups(before[label], after[label], elapsed) for label in pids}
                windows.append(window)
                progress(
                    f"window {number}: "
                    + ", ".join(f"{label} {w['total_per_s']:.2f}/s" for label, w in window.items())
                )
            for child, _port in started.values():
                if child.process.poll() is not None:
                    raise RuntimeError(f"{child.name} exited:\n{child.log_tail()}")
        finally:
            children.stop_all()
    settings = {
        "names": args.names,
        "settle_s": args.settle,
        "seconds": args.seconds,
        "aidns_config": "defaults (query log, attribution and hot reload on)",
        "command": " ".join(["python3", *sys.argv]),
    }
    if args.json:
        print(json.dumps({"machine": info, "settings": settings, "windows": windows}, indent=2))
        return 0
    print(
        f"machine:  {info['nproc']} CPUs, {info['cpu']}, {info['kernel']}, "
        f"load average at start {info['load_at_start']}"
    )
    print(f"versions: {info['dnsmasq']}; {info['python']}; aidns {info['aidns']}")
    print(
        f"workload: {args.names:,} listed names; left alone {args.settle:g} s, "
        f"then {args.rounds} window(s) of {args.seconds:g} s"
    )
    print(f"command:  {settings['command']}")
    for number, window in enumerate(windows, 1):
        print(f"\nwindow {number}: wake-ups (context switches) per second")
        for label, found in window.items():
            verdict = "PASS" if found["total_per_s"] <= GOAL_PER_S else "MISS"
            goal = f"  (goal <= {GOAL_PER_S:g}/s: {verdict})" if label == "aidns" else ""
            print(
                f"  {label}: {found['total_per_s']:.2f}/s in all, {found['processes']} "
                f"process(es){goal}"
            )
            for name, rate in found["per_thread_name"].items():
                print(f"    {rate:8.2f}/s  {name} (x{found['threads'][name]})")
            for entry in found["per_thread"]:
                print(f"      {entry['per_s']:8.2f}/s  {entry['thread']}")
            for kind in ("started_during", "gone_during"):
                if found[kind]:
                    print(f"    threads {kind.replace('_', ' ')}: {', '.join(found[kind])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
