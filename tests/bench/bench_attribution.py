"""Benchmark of attribution: latency added per query and share of queries attributed."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from aidns.resolver.procinfo.common import DEFAULT_BUDGET_S
from aidns.resolver.procinfo.lookup import default_lookup
from aidns.resolver.procinfo.tools import default_tools
from aidns.resolver.query import Transport

# Idle processes holding many fds: one parent forks them; all exit when its stdin closes.
HOLDERS = r"""
import os, sys
count, fds = int(sys.argv[1]), int(sys.argv[2])
held = [os.open(os.devnull, os.O_RDONLY) for _ in range(fds)]
pids = []
for _ in range(count):
    pid = os.fork()
    if pid == 0:
        os.read(0, 1)
        os._exit(0)
    pids.append(pid)
print(" ".join(map(str, pids)), flush=True)
sys.stdin.read()
for pid in pids:
    os.waitpid(pid, 0)
"""

# A short-lived client: one socket, one query (glibc-style connect+send, or sendto), wait.
CLIENT = r"""
import os, socket, sys
port, mode = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = f"{os.getpid()} {mode}".encode()
if mode == "connect":
    s.connect(("127.0.0.1", port))
    s.send(payload)
else:
    s.sendto(payload, ("127.0.0.1", port))
s.settimeout(5)
s.recv(64)
"""

# Starts the short-lived clients, a few at a time, so the benchmark process only answers.
LAUNCHER = r"""
import subprocess, sys, time
port, count, parallel, client = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
running = []
for i in range(count):
    while len(running) >= parallel:
        running = [p for p in running if p.poll() is None]
        if len(running) >= parallel:
            time.sleep(0.001)
    mode = "connect" if i % 2 == 0 else "sendto"
    running.append(subprocess.Popen([sys.executable, "-I", "-S", "-c", client, port, mode]))
for p in running:
    p.wait()
"""

# A long-lived client with 50 open files and a new socket per query. "late" ones close the
# old socket only after opening the next, so the new one gets another fd number each time.
LONG_LIVED = r"""
import os, random, socket, sys, time
port, count, style = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
held = [os.open(os.devnull, os.O_RDONLY) for _ in range(50)]
old = None
for i in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if old is not None:
        old.close()
    payload = f"{os.getpid()} long-{style}".encode()
    if i % 2:
        s.connect(("127.0.0.1", port))
        s.send(payload)
    else:
        s.sendto(payload, ("127.0.0.1", port))
    s.settimeout(5)
    s.recv(64)
    if style == "late":
        old = s
    else:
        s.close()
    time.sleep(random.uniform(0.005, 0.03))
"""


@dataclass
class Tally:
    latencies_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)  # the part spent running, not preempted
    attributed: int = 0
    wrong: int = 0
    uid_only: int = 0
    later: int = 0  # of uid_only, found by the search that goes on after the answer

    def row(self, kind: str) -> str:
        n = len(self.latencies_s)
        if not n:
            return f"{kind:<14}{0:>8}"
        wall = sorted(self.latencies_s)
        cpu = sorted(self.cpu_s)
        share = 100 * self.attributed / n
        return (
            f"{kind:<14}{n:>8}{share:>11.1f}%{self.wrong:>7}{self.uid_only:>9}{self.later:>7}"
            f"{_ms(wall, 0.5):>9}{_ms(wall, 0.99):>9}{_ms(wall, 1.0):>9}"
            f"{_ms(cpu, 0.5):>9}{_ms(cpu, 0.99):>9}"
        )


def _ms(ordered: list[float], quantile: float) -> str:
    if quantile == 0.5:
        return f"{statistics.median(ordered) * 1000:.3f}"
    return f"{ordered[min(len(ordered) - 1, int(len(ordered) * quantile))] * 1000:.3f}"


@contextlib.contextmanager
def holders(count: int, fds: int) -> Iterator[list[int]]:
    parent = subprocess.Popen(
        [sys.executable, "-c", HOLDERS, str(count), str(fds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdin is not None and parent.stdout is not None
    pids: list[int] = []
    try:
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        yield pids
    finally:
        parent.stdin.close()
        try:
            parent.wait(10)
        finally:
            for pid in [*pids, parent.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            parent.wait()


def open_fds() -> int:
    total = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                total += len(os.listdir(f"/proc/{name}/fd"))
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--holders", type=int, default=300, help="idle processes")
    parser.add_argument("--holder-fds", type=int, default=50, help="open files in each")
    parser.add_argument("--short", type=int, default=600, help="short-lived clients")
    parser.add_argument("--parallel", type=int, default=2, help="short-lived clients at once")
    parser.add_argument("--long", type=int, default=4, help="long-lived clients")
    parser.add_argument("--long-queries", type=int, default=150, help="queries per long-lived")
    parser.add_argument("--budget-ms", type=float, default=DEFAULT_BUDGET_S * 1000)
    parser.add_argument("--time-limit-s", type=float, default=150.0)
    parser.add_argument(
        "--after-ms",
        type=float,
        default=50.0,
        help="search on after the answer for those not found in the budget, as aidns does",
    )
    args = parser.parse_args()
    args.holders = min(args.holders, 1000)
    args.holder_fds = min(args.holder_fds, 500)
    budget_s = args.budget_ms / 1000
    expected = args.short + args.long * args.long_queries

    tallies: dict[str, Tally] = defaultdict(Tally)
    children: list[subprocess.Popen[bytes]] = []
    with holders(args.holders, args.holder_fds) as holder_pids:
        processes = sum(1 for name in os.listdir("/proc") if name.isdigit())
        fds = open_fds()
        lookup = default_lookup()
        catalogue = default_tools()
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind(("127.0.0.1", 0))
        server.settimeout(1.0)
        address = server.getsockname()
        port = str(address[1])
        deadline = time.monotonic() + args.time_limit_s
        received = 0
        try:
            children.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        LAUNCHER,
                        port,
                        str(args.short),
                        str(args.parallel),
                        CLIENT,
                    ]
                )
            )
            for index in range(args.long):
                style = "late" if index % 2 else "prompt"
                children.append(
                    subprocess.Popen(
                        [sys.executable, "-c", LONG_LIVED, port, str(args.long_queries), style]
                    )
                )
            while received < expected and time.monotonic() < deadline:
                try:
                    payload, client = server.recvfrom(512)
                except TimeoutError:
                    if all(child.poll() is not None for child in children):
                        break
                    continue
                received += 1
                started = time.perf_counter()
                started_cpu = time.thread_time()
                owner = lookup.client_socket(Transport.UDP, address, client)
                info = None
                if owner is not None:
                    info = lookup.find(Transport.UDP, address, client, budget_s, owner=owner)
                if info is not None:
                    info = catalogue.tag(info)
                took_s = time.perf_counter() - started
                cpu_s = time.thread_time() - started_cpu
                server.sendto(b"answer", client)
                pid_text, kind = payload.decode().split()
                tally = tallies[kind]
                if owner is not None and info is not None and info.pid is None and args.after_ms:
                    later = lookup.find_later(
                        Transport.UDP, address, client, owner, args.after_ms / 1000
                    )
                    if later is not None and later.pid == int(pid_text):
                        tally.later += 1
                tally.latencies_s.append(took_s)
                tally.cpu_s.append(cpu_s)
                if info is not None and info.pid == int(pid_text):
                    tally.attributed += 1
                elif info is not None and info.pid is not None:
                    tally.wrong += 1
                    print(f"wrong: {kind} pid {pid_text} taken for {info.pid}", file=sys.stderr)
                elif info is not None:
                    tally.uid_only += 1
        finally:
            for child in children:
                try:
                    child.wait(max(0.0, min(30.0, deadline - time.monotonic())))
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
            server.close()
    assert holder_pids

    print(
        f"aidns attribution benchmark: {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, uid {os.geteuid()}"
    )
    print(
        f"machine during the run: {processes} processes, {fds} open fds "
        f"({args.holders} idle processes x {args.holder_fds} fds added)"
    )
    print(
        f"clients: {args.short} short-lived processes, one query each (half connect+send, "
        f"half sendto), {args.parallel} at a time; {args.long} long-lived processes x "
        f"{args.long_queries} queries, a new socket per query"
    )
    print(
        f"lookup: {type(lookup).__name__}: the exact socket, then the process within a budget "
        f"of {args.budget_ms:g} ms, then tool tagging; 'after': of those not found in time, "
        f"found by a search of up to {args.after_ms:g} ms after the answer"
    )
    print(f"{received} of {expected} queries answered\n")
    print("latency added per query (ms): wall clock, and the CPU time within it\n")
    header = (
        f"{'client':<14}{'queries':>8}{'attributed':>12}{'wrong':>7}{'uid only':>9}{'after':>7}"
    )
    print(header + f"{'p50':>9}{'p99':>9}{'max':>9}{'cpu p50':>9}{'cpu p99':>9}")
    total = Tally()
    for kind in sorted(tallies):
        tally = tallies[kind]
        print(tally.row(kind))
        total.latencies_s += tally.latencies_s
        total.cpu_s += tally.cpu_s
        total.attributed += tally.attributed
        total.wrong += tally.wrong
        total.uid_only += tally.uid_only
        total.later += tally.later
    print(total.row("all"))
    with open("/proc/loadavg") as loadavg:
        print(f"\nload average after the run: {' '.join(loadavg.read().split()[:3])}")
    return 0 if received == expected else 1


if __name__ == "__main__":
    sys.exit(main())
