"""Desktop load: latency per class of query when every lookup comes from a fresh UDP socket.

Run from the checkout, with aidns installed (`pip install -e .`) and dnsmasq-base:

    python3 tests/bench/bench_desktop.py [--rate 300] [--seconds 20] [--rounds 4] [--busy]
        [--names 1000000] [--cached-set 200] [--timeout 2] [--json] [--keep]

Everything stays on 127.0.0.1. As in bench_resolver.py, a dnsmasq plays the upstream (names
under `cached.bench` and `fresh.bench` resolve), and aidns and dnsmasq run on core 0 with the
same million-name list. aidns runs with its default config (query log and attribution on);
only --listen, --upstream and --data-dir are given. This script, the client, runs on core 1.
dnsmasq reads the list as a hosts file (`--addn-hosts`) unless `--dnsmasq-form address`:
with a million `address=` lines it takes milliseconds per forwarded query and now and then
stalls for up to a second, all queries with it, which would flatter aidns's tail ratios.
The listed names asked are exact ones, which both forms block.

Each query opens a new socket, connects it and sends, as a stub resolver does per lookup.
Queries go out open-loop at a fixed rate: send times are scheduled in advance and a sender
thread sends on time whatever the answers do, while a receiver thread takes the answers.
Latency counts from the scheduled send time, so a stall of the client or the server shows
up in full rather than delaying the next query (no coordinated omission). A query unanswered
after --timeout seconds is counted lost. The mix: 70% names from a small cached set (asked
before each round), 15% names from the blocklist, 15% names never asked before, which both
servers must forward. Both servers get the same queries in a round; rounds alternate which
server goes first. With --busy one CPU-bound process per core runs during the rounds.

Reported per class and overall: p50, p90, p99 and max per server over all rounds, the ratios
issue 12's goals use (p99 <= 1.5x dnsmasq's, max <= 3x, p50 <= dnsmasq's + 0.3 ms), and the
overall figures per round, whose range says how much to trust them.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import select
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.common import (
    BUSY_LOAD,
    CACHED_ADDRESS,
    CLIENT_CPU,
    DNSMASQ,
    FRESH_ADDRESS,
    FRESH_ZONE,
    HOST,
    SEED,
    SINKHOLE,
    Children,
    answer_address,
    ask,
    busy_cpus,
    cached_queries,
    dns_query,
    exit_cleanly_on_sigterm,
    generate_names,
    machine_info,
    percentile,
    preflight,
    progress,
    workdir,
    write_lines,
)
from tests.bench.servers import (
    start_side_by_side,
    start_upstream,
    write_blocklists,
)

CLASSES = ("cached", "blocked", "new")
SHARES = (0.70, 0.15, 0.15)
EXPECTED = {
    "cached": socket.inet_aton(CACHED_ADDRESS),
    "blocked": SINKHOLE,
    "new": socket.inet_aton(FRESH_ADDRESS),
}
POLL_S = 0.05
DNSMASQ_FORMS = {
    "hosts": "0.0.0.0 name lines in --addn-hosts",
    "address": "address=/name/0.0.0.0 lines in a --conf-file",
}


@dataclass(frozen=True)
class Planned:
    at_s: float  # from the start of the round
    kind: str
    name: str


@dataclass
class Outcome:
    """What became of the queries of one round against one server."""

    latencies_ms: dict[str, list[float]] = field(
        default_factory=lambda: {kind: [] for kind in CLASSES}
    )
    lost: collections.Counter[str] = field(default_factory=collections.Counter)
    wrong: collections.Counter[str] = field(default_factory=collections.Counter)
    send_lag_ms: list[float] = field(default_factory=list)

    def merge(self, other: Outcome) -> None:
        for kind in CLASSES:
            self.latencies_ms[kind] += other.latencies_ms[kind]
        self.lost.update(other.lost)
        self.wrong.update(other.wrong)
        self.send_lag_ms += other.send_lag_ms

    def all_ms(self) -> list[float]:
        return [ms for kind in CLASSES for ms in self.latencies_ms[kind]]


def plan_round(
    rng: random.Random,
    rate: float,
    seconds: float,
    cached: Sequence[str],
    listed: Sequence[str],
    tag: str,
) -> list[Planned]:
    count = int(rate * seconds)
    plan = []
    for index in range(count):
        kind = rng.choices(CLASSES, SHARES)[0]
        if kind == "cached":
            name = rng.choice(cached)
        elif kind == "blocked":
            name = listed[int(rng.random() * len(listed))]
        else:
            name = f"q{index}.{tag}.{FRESH_ZONE}"
        plan.append(Planned(index / rate, kind, name))
    return plan


@dataclass(frozen=True)
class InFlight:
    sock: socket.socket
    sequence: int
    query_id: int
    scheduled: float
    planned: Planned


class Sender:
    """Sends the plan on schedule from fresh sockets; a second thread takes the answers."""

    def __init__(self, port: int, plan: Sequence[Planned], timeout_s: float) -> None:
        self.port, self.plan, self.timeout_s = port, plan, timeout_s
        self.poller = select.epoll()
        self.in_flight: dict[int, InFlight] = {}  # by file descriptor
        self.by_send_order: collections.deque[tuple[int, int]] = collections.deque()
        self.lock = threading.Lock()
        self.sending_done = False
        self.outcome = Outcome()

    def run(self) -> Outcome:
        receiver = threading.Thread(target=self._receive, name="receiver")
        receiver.start()
        try:
            self._send()
        finally:
            self.sending_done = True
            receiver.join()
            self.poller.close()
        return self.outcome

    def _send(self) -> None:
        rng = random.Random(SEED + len(self.plan))
        start = time.perf_counter() + 0.05
        for sequence, planned in enumerate(self.plan):
            scheduled = start + planned.at_s
            wait_s = scheduled - time.perf_counter()
            if wait_s > 0:
                time.sleep(wait_s)
            query_id = rng.randrange(1 << 16)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect((HOST, self.port))
            fd = sock.fileno()
            with self.lock:
                self.in_flight[fd] = InFlight(sock, sequence, query_id, scheduled, planned)
                self.by_send_order.append((sequence, fd))
                self.poller.register(fd, select.EPOLLIN)
            self.outcome.send_lag_ms.append((time.perf_counter() - scheduled) * 1000)
            with contextlib.suppress(OSError):  # counted lost at its timeout
                sock.send(dns_query(planned.name, query_id))

    def _receive(self) -> None:
        while True:
            events = self.poller.poll(POLL_S)
            received_at = time.perf_counter()
            for fd, _ in events:
                self._take(fd, received_at)
            self._expire(time.perf_counter())
            with self.lock:
                if self.sending_done and not self.in_flight:
                    return

    def _take(self, fd: int, received_at: float) -> None:
        with self.lock:
            entry = self.in_flight.pop(fd, None)
            if entry is None:
                return
            self.poller.unregister(fd)
        kind = entry.planned.kind
        try:
            reply = entry.sock.recv(4096)
        except OSError:  # refused: nobody listening
            self.outcome.lost[kind] += 1
        else:
            self.outcome.latencies_ms[kind].append((received_at - entry.scheduled) * 1000)
            if answer_address(reply, entry.query_id) != EXPECTED[kind]:
                self.outcome.wrong[kind] += 1
        entry.sock.close()

    def _expire(self, now: float) -> None:
        """Oldest first: a query still unanswered `timeout_s` after its scheduled time is lost."""
        while True:
            with self.lock:
                if not self.by_send_order:
                    return
                sequence, fd = self.by_send_order[0]
                entry = self.in_flight.get(fd)
                if entry is None or entry.sequence != sequence:
                    self.by_send_order.popleft()  # answered already; the fd may be reused
                    continue
                if entry.scheduled + self.timeout_s > now:
                    return
                self.by_send_order.popleft()
                del self.in_flight[fd]
                self.poller.unregister(fd)
            entry.sock.close()
            self.outcome.lost[entry.planned.kind] += 1


# --- the report ----------------------------------------------------------------------------


def figures(latencies_ms: Sequence[float]) -> dict[str, float]:
    ordered = sorted(latencies_ms)
    return {
        "n": len(ordered),
        "p50": percentile(ordered, 0.50),
        "p90": percentile(ordered, 0.90),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1] if ordered else 0.0,
    }


def goals(aidns: dict[str, float], peer: dict[str, float]) -> list[dict[str, Any]]:
    p99_ratio = aidns["p99"] / peer["p99"] if peer["p99"] else float("inf")
    max_ratio = aidns["max"] / peer["max"] if peer["max"] else float("inf")
    p50_extra_ms = aidns["p50"] - peer["p50"]
    return [
        {"goal": "p99 ratio", "value": p99_ratio, "target": "<= 1.5", "met": p99_ratio <= 1.5},
        {"goal": "worst ratio", "value": max_ratio, "target": "<= 3", "met": max_ratio <= 3.0},
        {
            "goal": "p50 difference (ms)",
            "value": p50_extra_ms,
            "target": "<= 0.3",
            "met": p50_extra_ms <= 0.3,
        },
    ]


def report(outcomes: dict[str, Outcome], per_round: list[dict[str, Any]]) -> dict[str, Any]:
    servers: dict[str, Any] = {}
    for label, outcome in outcomes.items():
        classes = {kind: figures(outcome.latencies_ms[kind]) for kind in CLASSES}
        for kind in CLASSES:
            classes[kind]["lost"] = outcome.lost[kind]
            classes[kind]["wrong"] = outcome.wrong[kind]
        overall = figures(outcome.all_ms())
        overall["lost"] = sum(outcome.lost.values())
        overall["wrong"] = sum(outcome.wrong.values())
        lag = sorted(outcome.send_lag_ms)
        servers[label] = {
            "classes": classes,
            "overall": overall,
            "send_lag_ms": {"p99": percentile(lag, 0.99), "max": lag[-1] if lag else 0.0},
        }
    return {
        "servers": servers,
        "goals": goals(servers["aidns"]["overall"], servers["dnsmasq"]["overall"]),
        "rounds": per_round,
    }


def print_report(result: dict[str, Any], settings: dict[str, Any], info: dict[str, str]) -> None:
    print(
        f"machine:  {info['nproc']} CPUs, {info['cpu']}, {info['kernel']}, "
        f"load average at start {info['load_at_start']}"
    )
    print(f"versions: {info['dnsmasq']}; {info['python']}; aidns {info['aidns']}")
    print(
        f"workload: {settings['rate']:g} q/s, a fresh socket per query, open-loop; "
        f"{settings['rounds']} rounds x {settings['seconds']:g} s per server, alternating; "
        f"mix {settings['mix']}; {settings['names']:,} listed names; "
        f"busy: {settings['busy']}; timeout {settings['timeout_s']:g} s"
    )
    print(f"          dnsmasq's list: {settings['dnsmasq_form']}")
    print(f"command:  {settings['command']}\n")
    print(
        f"{'class':<9}{'server':<9}{'answered':>9}{'lost':>6}{'wrong':>6}"
        f"{'p50':>8}{'p90':>8}{'p99':>8}{'max':>9}   (ms from the scheduled send)"
    )
    for kind in (*CLASSES, "overall"):
        for label, server in result["servers"].items():
            row = server["overall"] if kind == "overall" else server["classes"][kind]
            print(
                f"{kind:<9}{label:<9}{row['n']:>9,}{row['lost']:>6}{row['wrong']:>6}"
                f"{row['p50']:>8.2f}{row['p90']:>8.2f}{row['p99']:>8.2f}{row['max']:>9.2f}"
            )
    print()
    for goal in result["goals"]:
        print(
            f"{goal['goal']:<22}{goal['value']:>8.2f}  target {goal['target']:<7}"
            f"{'PASS' if goal['met'] else 'MISS'}"
        )
    print("\nper round (overall p50 / p99 / max ms, aidns vs dnsmasq; ratios p99, max):")
    for number, entry in enumerate(result["rounds"], 1):
        a, d = entry["aidns"], entry["dnsmasq"]
        print(
            f"  round {number} ({entry['first']} first): "
            f"aidns {a['p50']:.2f} / {a['p99']:.2f} / {a['max']:.1f}; "
            f"dnsmasq {d['p50']:.2f} / {d['p99']:.2f} / {d['max']:.1f}; "
            f"{a['p99'] / d['p99'] if d['p99'] else 0:.2f}, "
            f"{a['max'] / d['max'] if d['max'] else 0:.2f}"
        )
    lags = ", ".join(
        f"{label} p99 {server['send_lag_ms']['p99']:.2f} max {server['send_lag_ms']['max']:.1f}"
        for label, server in result["servers"].items()
    )
    print(f"sender's own lag behind schedule (ms): {lags}")


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=300.0, help="queries per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per server")
    parser.add_argument("--names", type=int, default=1_000_000, help="names in the blocklist")
    parser.add_argument("--cached-set", type=int, default=200, help="names the cached class uses")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds before a query is lost")
    parser.add_argument("--busy", action="store_true", help="a CPU-bound process per core")
    parser.add_argument(
        "--dnsmasq-form",
        choices=("hosts", "address"),
        default="hosts",
        help="dnsmasq's list: 0.0.0.0 lines in --addn-hosts (default), or address=/name/ lines, "
        "with which it forwards slowly and stalls now and then",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.rounds < 1 or args.names < 2:
        parser.error("--rate > 0, --seconds > 0, --rounds >= 1 and --names >= 2, please")
    return args


def warm(port: int, cached: Sequence[str]) -> None:
    for name in cached:
        if ask(port, name) != EXPECTED["cached"]:
            raise RuntimeError(f"port {port}: {name} did not resolve")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    preflight((DNSMASQ, "taskset"))
    exit_cleanly_on_sigterm()
    info = machine_info()
    if os.getloadavg()[0] > BUSY_LOAD:
        progress(f"warning: load average {info['load_at_start']}: other work will skew the figures")
    children = Children()
    cached = cached_queries(args.cached_set)
    outcomes = {"aidns": Outcome(), "dnsmasq": Outcome()}
    per_round: list[dict[str, Any]] = []
    with workdir(args.keep) as tmp:
        try:
            progress(f"writing {args.names:,} names to {tmp}")
            names = generate_names(args.names, SEED)
            _, dnsmasq_list = write_blocklists(tmp, names)
            if args.dnsmasq_form == "hosts":
                write_lines(tmp / "million.hosts", names, "0.0.0.0 {}")
                list_option = f"--addn-hosts={tmp / 'million.hosts'}"
            else:
                list_option = f"--conf-file={dnsmasq_list}"
            upstream_port = start_upstream(children, tmp)
            started = start_side_by_side(
                children, tmp, names[len(names) // 2], list_option, upstream_port
            )
            ports = {label: port for label, (_child, port) in started.items()}
            os.sched_setaffinity(0, {int(CLIENT_CPU)})  # the children keep their own
            time.sleep(2.0)  # let start-up work finish
            rng = random.Random(SEED)
            for label in ports:  # not measured: lazy imports, first connections
                warm(ports[label], cached)
                Sender(ports[label], plan_round(rng, 100, 1, cached, names, "warm"), 2).run()
            with busy_cpus(children, tmp, args.busy):
                for round_index in range(args.rounds):
                    plan = plan_round(
                        rng, args.rate, args.seconds, cached, names, f"r{round_index}"
                    )
                    order = list(ports) if round_index % 2 == 0 else list(ports)[::-1]
                    entry: dict[str, Any] = {"first": order[0]}
                    for label in order:
                        warm(ports[label], cached)
                        outcome = Sender(ports[label], plan, args.timeout).run()
                        outcomes[label].merge(outcome)
                        entry[label] = figures(outcome.all_ms())
                        entry[label]["lost"] = sum(outcome.lost.values())
                        progress(
                            f"{label}: round {round_index + 1}: p50 {entry[label]['p50']:.2f} "
                            f"p99 {entry[label]['p99']:.2f} max {entry[label]['max']:.1f} ms, "
                            f"{entry[label]['lost']} lost"
                        )
                    per_round.append(entry)
        finally:
            children.stop_all()
    settings = {
        "rate": args.rate,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "names": args.names,
        "mix": f"70% of {args.cached_set} cached names / 15% listed / 15% new (forwarded)",
        "busy": "one CPU-bound process per core" if args.busy else "no",
        "dnsmasq_form": DNSMASQ_FORMS[args.dnsmasq_form],
        "timeout_s": args.timeout,
        "aidns_config": "defaults (query log and attribution on)",
        "command": " ".join(["python3", *sys.argv]),
    }
    result = report(outcomes, per_round)
    if args.json:
        print(json.dumps({"machine": info, "settings": settings, **result}, indent=2))
    else:
        print_report(result, settings, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
