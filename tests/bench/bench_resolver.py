"""Benchmark aidns against dnsmasq: start-up, memory and queries/second with a million-name list.

Run from the checkout, with aidns installed (`pip install -e .`), dnsmasq-base and dnsperf:

    python3 tests/bench/bench_resolver.py [--rounds N] [--seconds S] [--names N] [--json]
        [--kinds blocked,cached,mix,forwarded] [--clients C --outstanding Q]
        [--aidns-config FILE] [--also-hosts] [--keep]

Everything stays on 127.0.0.1. In a temporary directory the script writes a deterministic
blocklist in two forms (`lists/million.txt` for aidns, `address=/name/0.0.0.0` lines for
dnsmasq: both block the name and every name below it), starts a dnsmasq that plays the
upstream for both servers (names under `cached.bench` and `fresh.bench` resolve, TTL
3600 s), and starts both servers on core 0. Each server starts twice: the first start with
an empty data dir, the second with what the first left there (for aidns, its compiled rule
snapshot); both are timed to the first sinkhole answer, and the second one is put under
load. dnsperf, on core 1, loads one server at a time, alternating between them round by
round, so that a slow spell of a shared machine falls on both. The kinds of load:

- blocked: 100,000 different listed names (10% one label below a listed name);
- cached: 1,000 names under `cached.bench`, asked before measuring;
- mix: 10% listed names and 90% names from a 10,000-name cached set, asked before measuring;
- forwarded: every query a name under `fresh.bench` that no server has seen, so both forward
  it to the upstream (dnsmasq as well as aidns). dnsmasq with a million `address=` lines
  forwards only about a hundred queries a second (a search through them per forwarded query,
  it seems), so a third server, a dnsmasq without the list, takes these runs too, and the
  goal's ratio is against that one.

Per server it records the time to the first answer of each start, the RSS of the whole
process tree (server and children) after loading and after the load rounds, and the median
queries/second of `--rounds` dnsperf runs per kind. Child processes are stopped by PID on
every exit path.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.common import (
    BUSY_LOAD,
    CACHE_ENTRIES,
    CACHED_ADDRESS,
    CACHED_ZONE,
    CLIENT_CPU,
    FRESH_ADDRESS,
    SEED,
    SERVER_CPU,
    SINKHOLE,
    SUBDOMAIN_SHARE,
    Child,
    Children,
    PerfRun,
    ask,
    blocked_queries,
    cached_queries,
    dnsperf,
    exit_cleanly_on_sigterm,
    fresh_names,
    generate_names,
    machine_info,
    memory_kib,
    preflight,
    process_tree,
    progress,
    tree_rss_kib,
    workdir,
    write_lines,
)
from tests.bench.servers import (
    aidns_command,
    aidns_executable,
    peer_command,
    start_server,
    start_upstream,
    write_blocklists,
)

BLOCKED_QUERIES = 100_000
CACHED_QUERIES = 1_000
MIX_QUERIES = 100_000
MIX_BLOCKED_SHARE = 0.1
MIX_CACHED_SET = 10_000
KINDS = ("blocked", "cached", "mix", "forwarded")
CommandFor = Callable[[int], list[str]]  # the command that listens on the port given
DNSMASQ_FORM = "address=/name/0.0.0.0 in a --conf-file (name and every name below it, like aidns)"


# --- one server under test -----------------------------------------------------------------


@dataclass
class ServerResult:
    name: str
    command: list[str]
    first_answer_s: float = 0.0  # the first start, empty data dir
    second_answer_s: float = 0.0  # the second start, with what the first left in the data dir
    rss_first_kib: int = 0  # process tree at the first answer of the first start
    rss_loaded_kib: int = 0  # process tree at the first answer of the second start
    rss_after_kib: int = 0
    peak_rss_kib: int = 0
    runs: dict[str, list[PerfRun]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    wrapped: int = 0  # forwarded runs that went past the end of their names (then repeated)

    def qps(self, kind: str) -> float:
        return statistics.median(run.qps for run in self.runs[kind])

    def lost_pct(self, kind: str) -> float:
        return max(run.lost_pct for run in self.runs[kind])


@dataclass
class Server:
    child: Child
    result: ServerResult
    port: int


@dataclass
class Bench:
    workdir: Path
    names: list[str]
    query_files: dict[str, Path]
    warm_file: Path
    kinds: Sequence[str]
    forwarded_names: int
    rounds: int
    seconds: float
    clients: int
    outstanding: int
    children: Children

    def check_answers(self, label: str, port: int, sinkhole: bool) -> None:
        """The kinds of answer the rounds count on, before counting anything."""
        expected = {
            f"check.{CACHED_ZONE}": socket.inet_aton(CACHED_ADDRESS),
            fresh_names(f"check-{label}", 1)[0]: socket.inet_aton(FRESH_ADDRESS),
        }
        if sinkhole:
            expected |= {self.names[0]: SINKHOLE, f"www.{self.names[1]}": SINKHOLE}
        for name, address in expected.items():
            got = ask(port, name)
            if got != address:
                raise RuntimeError(f"{label}: {name} answered {got!r}, expected {address!r}")

    def start_only(
        self, label: str, command_for: CommandFor, sinkhole: bool = True
    ) -> tuple[float, int]:
        """Seconds to the first answer and the tree's RSS (KiB) then; stopped right after."""
        progress(f"{label}: starting")
        child, _port, first_answer_s = self.start_server(
            label, command_for, f"{label}.log", sinkhole
        )
        try:
            rss_kib = tree_rss_kib(child.pid)
            progress(
                f"{label}: first answer after {first_answer_s:.3f} s, RSS {rss_kib / 1024:.1f} MiB"
            )
            return first_answer_s, rss_kib
        finally:
            self.children.stop(child)

    def start(self, label: str, command_for: CommandFor, sinkhole: bool = True) -> Server:
        """Start a server twice (see the module docstring); the second start stays up, warm.
        Without `sinkhole` (a dnsmasq without the list) a forwarded answer counts as ready."""
        result = ServerResult(label, command_for(0))
        result.first_answer_s, result.rss_first_kib = self.start_only(label, command_for, sinkhole)
        progress(f"{label}: starting again")
        child, port, result.second_answer_s = self.start_server(
            label, command_for, f"{label}-second.log", sinkhole
        )
        result.rss_loaded_kib = tree_rss_kib(child.pid)
        progress(
            f"{label}: second start: first answer after {result.second_answer_s:.3f} s, "
            f"RSS {result.rss_loaded_kib / 1024:.1f} MiB"
        )
        self.check_answers(label, port, sinkhole)
        self.warm(port)
        return Server(child, result, port)

    def start_server(
        self, label: str, command_for: CommandFor, log_name: str, sinkhole: bool
    ) -> tuple[Child, int, float]:
        if sinkhole:
            probe, expected = self.names[len(self.names) // 2], SINKHOLE
        else:
            probe, expected = f"ready.{CACHED_ZONE}", socket.inet_aton(CACHED_ADDRESS)
        log_path = self.workdir / log_name
        return start_server(self.children, label, command_for, log_path, probe, expected)

    def warm(self, port: int) -> None:
        """Ask the cached set twice: the second pass should need no upstream at all."""
        for _ in range(2):
            dnsperf(port, self.warm_file, 0, 1, 20, once=True)

    def query_file(self, kind: str, label: str, round_index: int) -> Path:
        if kind != "forwarded":
            return self.query_files[kind]
        path = self.workdir / f"forwarded-{label}-{round_index}.queries"
        write_lines(path, fresh_names(f"{label}-r{round_index}", self.forwarded_names), "{} A")
        return path

    def load_rounds(self, servers: Sequence[Server], forwarding: Server | None = None) -> None:
        """Every round puts each server under load in turn, one at a time, so that a slow
        spell of a shared machine falls on both rather than on whichever ran then.
        `forwarding`, a dnsmasq without the list, takes the forwarded runs too."""
        for round_index in range(self.rounds):
            for kind in self.kinds:
                extra = [forwarding] if forwarding and kind == "forwarded" else []
                for server in [*servers, *extra]:
                    result = server.result
                    if kind in ("cached", "mix"):
                        self.warm(server.port)  # a forwarded run may have pushed them out
                    query_file = self.query_file(kind, result.name, round_index)
                    run = dnsperf(
                        server.port,
                        query_file,
                        self.seconds,
                        self.clients,
                        self.outstanding,
                        once=False,
                    )
                    result.runs[kind].append(run)
                    wrapped = kind == "forwarded" and run.sent > self.forwarded_names
                    result.wrapped += wrapped
                    if kind == "forwarded":
                        query_file.unlink()
                    progress(
                        f"{result.name}: round {round_index + 1} {kind}: "
                        f"{run.qps:,.0f} q/s, {run.lost_pct:.2f}% lost"
                        + (
                            " (names ran out and repeated: raise --forwarded-names)"
                            if wrapped
                            else ""
                        )
                    )

    def finish(self, server: Server) -> ServerResult:
        child, result = server.child, server.result
        if child.process.poll() is not None:
            raise RuntimeError(f"{result.name} died during the rounds:\n{child.log_tail()}")
        result.rss_after_kib = tree_rss_kib(child.pid)
        result.peak_rss_kib = sum(
            memory_kib(pid).get("VmHWM", 0) for pid in process_tree(child.pid)
        )
        self.children.stop(child)
        return result


# --- the report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    metric: str
    aidns: float
    dnsmasq: float
    target: str
    passed: bool | None  # None: no target

    @property
    def ratio(self) -> float | None:
        return self.aidns / self.dnsmasq if self.dnsmasq else None


def rows(
    aidns: ServerResult,
    peer: ServerResult,
    kinds: Sequence[str],
    forwarding: ServerResult | None = None,
) -> list[Row]:
    """The figures issue 12's goals are stated in, with those goals as targets. Forwarded
    misses compare with `forwarding`, a dnsmasq without the list, when there is one: dnsmasq
    with a million `address=` lines forwards at a small fraction of its usual rate."""

    def at_least(share: float) -> Callable[[float, float], bool]:
        return lambda a, d: a >= share * d

    def at_most(share: float) -> Callable[[float, float], bool]:
        return lambda a, d: a <= share * d

    def within_s(limit_s: float) -> Callable[[float, float], bool]:
        return lambda a, _d: a <= limit_s

    throughput_share = {"blocked": 1.0, "cached": 1.0, "mix": 1.0, "forwarded": 0.5}
    table: list[tuple[str, float, float, str, Callable[[float, float], bool] | None]] = []
    for kind in kinds:
        share = throughput_share[kind]
        versus = forwarding if kind == "forwarded" and forwarding else peer
        metric = f"{kind} q/s (median)" + (" *" if versus is forwarding else "")
        table.append((metric, aidns.qps(kind), versus.qps(kind), f">= {share}", at_least(share)))
        if versus is forwarding:
            table.append(
                (f"{kind} q/s, dnsmasq with list", aidns.qps(kind), peer.qps(kind), "", None)
            )
    for kind in kinds:
        table.append(
            (f"{kind} lost % (worst round)", aidns.lost_pct(kind), peer.lost_pct(kind), "", None)
        )
    mib = 1024
    table += [
        (
            "RSS loaded, tree (MiB)",
            aidns.rss_loaded_kib / mib,
            peer.rss_loaded_kib / mib,
            "<= 0.5",
            at_most(0.5),
        ),
        ("RSS first start (MiB)", aidns.rss_first_kib / mib, peer.rss_first_kib / mib, "", None),
        ("RSS after rounds (MiB)", aidns.rss_after_kib / mib, peer.rss_after_kib / mib, "", None),
        ("peak RSS, tree (MiB)", aidns.peak_rss_kib / mib, peer.peak_rss_kib / mib, "", None),
        (
            "first answer, empty dir (s)",
            aidns.first_answer_s,
            peer.first_answer_s,
            "aidns <= 1 s",
            within_s(1.0),
        ),
        (
            "first answer, 2nd start (s)",
            aidns.second_answer_s,
            peer.second_answer_s,
            "aidns <= 1 s",
            within_s(1.0),
        ),
    ]
    return [
        Row(metric, a, d, target, check(a, d) if check else None)
        for metric, a, d, target, check in table
    ]


def status(passed: bool | None) -> str:
    return "" if passed is None else ("PASS" if passed else "MISS")


def print_table(
    out: TextIO, info: dict[str, str], settings: dict[str, Any], table: list[Row]
) -> None:
    print(
        f"machine:  {info['nproc']} CPUs, {info['cpu']}, {info['kernel']}, "
        f"load average at start {info['load_at_start']}",
        file=out,
    )
    print(
        f"versions: {info['dnsmasq']}; dnsperf {info['dnsperf']}; {info['python']}; "
        f"aidns {info['aidns']}",
        file=out,
    )
    print(
        f"workload: {settings['names']:,} listed names; dnsmasq form: {settings['dnsmasq_form']}",
        file=out,
    )
    print(
        f"          {settings['rounds']} rounds x {settings['seconds']:g} s per kind "
        f"({', '.join(settings['kinds'])}); "
        f"{settings['blocked_queries']:,} blocked queries ({settings['subdomain_share']:.0%} "
        f"one label below a listed name), {settings['cached_queries']:,} cached names; "
        f"mix {settings['mix']}; forwarded: {settings['forwarded_names']:,} new names per run; "
        f"cache {settings['cache_entries']:,} entries on both",
        file=out,
    )
    print(
        f"          both servers on CPU {SERVER_CPU}, loaded one at a time, alternating; "
        f"dnsperf on CPU {CLIENT_CPU}: {settings['dnsperf']}",
        file=out,
    )
    print(f"          aidns config: {settings['aidns_config']}", file=out)
    print(f"command:  {settings['command']}", file=out)
    print(file=out)
    print(f"{'metric':<30}{'aidns':>12}{'dnsmasq':>12}{'ratio':>8}  {'target':<14}", file=out)
    for row in table:
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else "-"
        print(
            f"{row.metric:<30}{format_value(row.aidns):>12}{format_value(row.dnsmasq):>12}"
            f"{ratio:>8}  {row.target:<14}{status(row.passed)}",
            file=out,
        )
    if any(row.metric.endswith(" *") for row in table):
        print(
            "* against a dnsmasq without the list; the next row, against the one with it", file=out
        )
    hosts = settings["dnsmasq_addn_hosts"]
    if hosts:
        print(
            f"\ndnsmasq with {hosts['form']}: first answer {hosts['first_answer_s']:.3f} s, "
            f"RSS {hosts['rss_loaded_kib'] / 1024:.1f} MiB (not put under load)",
            file=out,
        )


def format_value(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def report_json(
    info: dict[str, str], settings: dict[str, Any], table: list[Row], results: list[ServerResult]
) -> dict[str, Any]:
    return {
        "machine": info,
        "settings": settings,
        "metrics": [
            {
                "metric": row.metric,
                "aidns": row.aidns,
                "dnsmasq": row.dnsmasq,
                "ratio": row.ratio,
                "target": row.target or None,
                "status": status(row.passed) or None,
            }
            for row in table
        ],
        "servers": {
            result.name: {
                "command": result.command,
                "first_answer_s": result.first_answer_s,
                "second_answer_s": result.second_answer_s,
                "rss_first_kib": result.rss_first_kib,
                "rss_loaded_kib": result.rss_loaded_kib,
                "rss_after_kib": result.rss_after_kib,
                "peak_rss_kib": result.peak_rss_kib,
                "forwarded_runs_wrapped": result.wrapped,
                **{
                    f"{kind}_rounds": [asdict(run) for run in runs]
                    for kind, runs in result.runs.items()
                    if runs
                },
            }
            for result in results
        },
    }


def round_ratios(
    aidns: ServerResult, peer: ServerResult, kinds: Sequence[str], forwarding: ServerResult | None
) -> str:
    """aidns / dnsmasq for each round, which ran back to back."""
    parts = []
    for kind in kinds:
        versus = forwarding if kind == "forwarded" and forwarding else peer
        mine, theirs = aidns.runs[kind], versus.runs[kind]
        ratios = [a.qps / d.qps for a, d in zip(mine, theirs, strict=True) if d.qps]
        parts.append(f"{kind} " + " ".join(f"{r:.2f}" for r in ratios))
    return "; ".join(parts)


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="dnsperf runs per kind (median)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one dnsperf run")
    parser.add_argument("--names", type=int, default=1_000_000, help="names in the blocklist")
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help=f"comma-separated kinds of load, of {', '.join(KINDS)} (default: all)",
    )
    parser.add_argument(
        "--forwarded-names",
        type=int,
        default=250_000,
        help="new names per forwarded run; dnsperf repeats them if it gets through them all",
    )
    parser.add_argument("--clients", type=int, default=1, help="dnsperf -c, same for both")
    parser.add_argument("--outstanding", type=int, default=100, help="dnsperf -q, same for both")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--also-hosts",
        action="store_true",
        help="also time dnsmasq loading the names as --addn-hosts (exact names only)",
    )
    parser.add_argument(
        "--aidns-config",
        type=Path,
        help="config file for aidns, e.g. with `query_log: false` (default: an empty one)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    args.kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    if args.rounds < 1 or args.seconds <= 0 or args.names < 2:
        parser.error("--rounds >= 1, --seconds > 0 and --names >= 2, please")
    if not args.kinds or not set(args.kinds) <= set(KINDS):
        parser.error(f"--kinds takes some of {', '.join(KINDS)}")
    return args


def mix_queries(names: Sequence[str], count: int, seed: int) -> list[str]:
    """A shuffled mix: a share of listed names, the rest from the cached set."""
    rng = random.Random(seed + 2)
    blocked = int(count * MIX_BLOCKED_SHARE)
    cached_set = cached_queries(MIX_CACHED_SET)
    picked = rng.sample(names, min(blocked, len(names)))
    picked += [rng.choice(cached_set) for _ in range(count - len(picked))]
    rng.shuffle(picked)
    return picked


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    preflight()
    exit_cleanly_on_sigterm()
    info = machine_info()
    if os.getloadavg()[0] > BUSY_LOAD:
        progress(f"warning: load average {info['load_at_start']}: other work will skew the figures")
    executable = aidns_executable()
    children = Children()
    hosts_start: tuple[float, int] | None = None
    with workdir(args.keep) as tmp:
        try:
            progress(f"writing {args.names:,} names to {tmp}")
            names = generate_names(args.names, SEED)
            _, dnsmasq_list = write_blocklists(tmp, names)
            config = tmp / "config.yaml"
            config.write_text(args.aidns_config.read_text() if args.aidns_config else "")
            blocked = blocked_queries(names, min(BLOCKED_QUERIES, args.names), SEED)
            query_files = {kind: tmp / f"{kind}.queries" for kind in ("blocked", "cached", "mix")}
            write_lines(query_files["blocked"], blocked, "{} A")
            write_lines(query_files["cached"], cached_queries(CACHED_QUERIES), "{} A")
            write_lines(query_files["mix"], mix_queries(names, MIX_QUERIES, SEED), "{} A")
            write_lines(tmp / "warm.queries", cached_queries(MIX_CACHED_SET), "{} A")

            upstream_port = start_upstream(children, tmp)
            bench = Bench(
                workdir=tmp,
                names=names,
                query_files=query_files,
                warm_file=tmp / "warm.queries",
                kinds=args.kinds,
                forwarded_names=args.forwarded_names,
                rounds=args.rounds,
                seconds=args.seconds,
                clients=args.clients,
                outstanding=args.outstanding,
                children=children,
            )
            peer_server = bench.start(
                "dnsmasq",
                lambda port: peer_command(port, f"--conf-file={dnsmasq_list}", upstream_port),
            )
            aidns_server = bench.start(
                "aidns",
                lambda port: aidns_command(executable, port, tmp / "data", config, upstream_port),
            )
            forwarding_server = None
            if "forwarded" in args.kinds:
                forwarding_server = bench.start(
                    "dnsmasq-nolist",
                    lambda port: peer_command(port, "--conf-file=/dev/null", upstream_port),
                    sinkhole=False,
                )
            bench.load_rounds([aidns_server, peer_server], forwarding_server)
            aidns = bench.finish(aidns_server)
            peer = bench.finish(peer_server)
            forwarding = bench.finish(forwarding_server) if forwarding_server else None
            if args.also_hosts:
                write_lines(tmp / "million.hosts", names, "0.0.0.0 {}")
                hosts_option = f"--addn-hosts={tmp / 'million.hosts'}"
                hosts_start = bench.start_only(
                    "dnsmasq-hosts", lambda port: peer_command(port, hosts_option, upstream_port)
                )
        finally:
            children.stop_all()

    settings: dict[str, Any] = {
        "names": args.names,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "kinds": args.kinds,
        "blocked_queries": len(blocked),
        "subdomain_share": SUBDOMAIN_SHARE,
        "cached_queries": CACHED_QUERIES,
        "mix": f"{MIX_BLOCKED_SHARE:.0%} listed names, the rest of {MIX_CACHED_SET:,} cached "
        f"names ({MIX_QUERIES:,} queries)",
        "forwarded_names": args.forwarded_names,
        "cache_entries": CACHE_ENTRIES,
        "dnsmasq_form": DNSMASQ_FORM,
        "aidns_config": str(args.aidns_config) if args.aidns_config else "defaults (empty file)",
        "dnsperf": f"-c {args.clients} -q {args.outstanding} -l {args.seconds:g} -t 2",
        "command": " ".join(["python3", *sys.argv]),
        "dnsmasq_addn_hosts": None
        if hosts_start is None
        else {
            "form": "0.0.0.0 name lines in --addn-hosts (exact names only)",
            "first_answer_s": hosts_start[0],
            "rss_loaded_kib": hosts_start[1],
        },
    }
    table = rows(aidns, peer, args.kinds, forwarding)
    results = [aidns, peer, *([forwarding] if forwarding else [])]
    if args.json:
        print(json.dumps(report_json(info, settings, table, results), indent=2))
    else:
        print_table(sys.stdout, info, settings, table)
        print(f"\nratio per round: {round_ratios(aidns, peer, args.kinds, forwarding)}")
        if aidns.wrapped or peer.wrapped:
            print("forwarded: some runs repeated names (cache hits): raise --forwarded-names")
    return 0


if __name__ == "__main__":
    sys.exit(main())
