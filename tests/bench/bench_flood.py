"""A seeded flood of mutated queries against `aidns serve`, repeated, with its RSS after each pass.

Run from the checkout, with aidns installed (`pip install -e .`):

    python3 tests/bench/bench_flood.py [--packets N] [--passes P] [--seed S] [--json]
        [--aidns-arg=--no-query-log ...]

Everything stays on 127.0.0.1: aidns forwards to a fake upstream in this process that
answers what it can read with 20 A records (see tests/faults/flood.py). Each pass sends the
same `--packets` mutated packets (default 1,000,000) in batches and checks every reply
against the bound the fault tests assert. The steady state is aidns's RSS after a warm-up of
10,000 packets; the script fails when any pass leaves RSS more than 64 MiB above it, when a
reply breaks the bound, or when aidns logs a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e.conftest import start_aidns
from tests.faults.flood import SEED, FloodUpstream, flood, seeds
from tests.faults.helpers import exchange

RSS_GROWTH_LIMIT_MIB = 64
WARM_UP_PACKETS = 10_000


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--aidns-arg", action="append", default=[], help="passed to aidns serve")
    args = parser.parse_args()
    figures: dict[str, object] = {"packets": args.packets, "seed": args.seed, "passes": []}
    with tempfile.TemporaryDirectory() as directory, FloodUpstream() as upstream:
        server = start_aidns(Path(directory), f"--upstream={upstream.hostport}", *args.aidns_arg)
        assert server.process.stderr is not None
        reader = threading.Thread(
            target=lambda: server.log.extend(line.rstrip("\n") for line in server.process.stderr),
            daemon=True,
        )
        reader.start()
        pid = server.process.pid
        try:
            for wire in seeds():
                exchange(server.port(), wire)
            flood(server.port(), WARM_UP_PACKETS, seed=args.seed + 1)
            steady = rss_mib(pid)
            figures["steady_rss_mib"] = round(steady, 1)
            for number in range(1, args.passes + 1):
                started = time.monotonic()
                report = flood(server.port(), args.packets, seed=args.seed)
                passed = {
                    "pass": number,
                    "seconds": round(time.monotonic() - started, 1),
                    "replies": report.replies,
                    "violations": len(report.violations),
                    "rss_mib": round(rss_mib(pid), 1),
                }
                figures["passes"].append(passed)  # type: ignore[attr-defined]
                if not args.json:
                    print(passed, flush=True)
                if report.violations:
                    print("first violations:", *report.violations[:3], sep="\n  ")
        finally:
            server.stop()
            reader.join(5)
    log = "\n".join(server.log)
    figures["tracebacks"] = log.count("Traceback")
    figures["log_lines"] = len(server.log)
    worst = max(p["rss_mib"] for p in figures["passes"])  # type: ignore[attr-defined]
    failed = (
        worst - steady > RSS_GROWTH_LIMIT_MIB
        or figures["tracebacks"]
        or any(p["violations"] for p in figures["passes"])  # type: ignore[attr-defined]
    )
    print(json.dumps(figures) if args.json else figures)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
