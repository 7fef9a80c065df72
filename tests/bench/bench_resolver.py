"""Benchmark aidns against dnsmasq: start-up, memory and queries/second with a million-name list.

Run from the checkout, with aidns installed (`pip install -e .`), dnsmasq-base and dnsperf:

    python3 tests/bench/bench_resolver.py [--rounds N] [--seconds S] [--names N] [--json]
        [--clients C --outstanding Q] [--aidns-config FILE] [--also-hosts] [--keep]

Everything stays on 127.0.0.1. In a temporary directory the script writes a deterministic
blocklist in two forms (`lists/million.txt` for aidns, `address=/name/0.0.0.0` lines for
dnsmasq: both block the name and every name below it), starts a dnsmasq that plays the
upstream (names under `cached.bench` resolve, TTL 3600 s), and starts both servers on core 0.
dnsperf, on core 1, then loads one server at a time, alternating between them round by
round, so that a slow spell of a shared machine falls on both. Per server it records the
time from process start to the first sinkhole answer, VmRSS after loading and after the load
rounds, and the median queries/second of `--rounds` dnsperf runs for blocked names and for
cached forwarded names. aidns then starts once more with its files unchanged, mapping the
rule snapshot its first run left: the restart's first answer and RSS. Child processes are
stopped by PID on every exit path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TextIO

HOST = "127.0.0.1"
DNSMASQ = "/usr/sbin/dnsmasq"
SERVER_CPU = "0"
CLIENT_CPU = "1"
SEED = 20_241_129
CACHED_ZONE = "cached.bench"
CACHED_ADDRESS = "192.0.2.1"
SINKHOLE = bytes(4)  # 0.0.0.0
CACHE_ENTRIES = 10_000
BLOCKED_QUERIES = 100_000
SUBDOMAIN_SHARE = 0.1
CACHED_QUERIES = 1_000
READY_TIMEOUT_S = 120.0
POLL_INTERVAL_S = 0.010
BUSY_LOAD = 0.5  # 1-minute load average above which the figures are not worth quoting
TLDS = ["com"] * 40 + ["net"] * 10 + ["org"] * 8 + ["io"] * 6 + ["ai"] * 4
TLDS += ["de", "co", "app", "dev", "cn", "ru", "uk", "info", "xyz", "me", "fr", "jp"]
# 256 entries, so a random byte maps straight to a character; letters are the common case.
LABEL_CHARS = ("abcdefghijklmnopqrstuvwxyz" * 9 + "0123456789" * 2 + "-" * 2)[:256]
DNSMASQ_FORM = "address=/name/0.0.0.0 in a --conf-file (name and every name below it, like aidns)"


# --- names and query files ---------------------------------------------------------------


def generate_names(count: int, seed: int) -> list[str]:
    """`count` distinct names of two to four labels, the same for the same seed."""
    rng = random.Random(seed)
    table = bytes.maketrans(bytes(range(256)), LABEL_CHARS.encode())
    pool = rng.randbytes(1 << 22).translate(table).decode("ascii")
    random_ = rng.random

    def label(shortest: int, longest: int) -> str:
        length = shortest + int(random_() * (longest - shortest + 1))
        start = int(random_() * (len(pool) - length))
        return pool[start : start + length].strip("-") or "x"

    names: dict[str, None] = {}  # insertion-ordered, so the output does not depend on hashing
    while len(names) < count:
        tld = TLDS[int(random_() * len(TLDS))]
        shape = random_()
        if shape < 0.3:
            name = f"{label(4, 14)}.{tld}"
        elif shape < 0.85:
            name = f"{label(2, 10)}.{label(4, 14)}.{tld}"
        else:
            name = f"{label(2, 8)}.{label(2, 10)}.{label(4, 14)}.{tld}"
        names[name] = None
    return list(names)


def blocked_queries(names: Sequence[str], count: int, seed: int) -> list[str]:
    """Listed names, plus a share of names one label below a listed name."""
    rng = random.Random(seed + 1)
    subdomains = int(count * SUBDOMAIN_SHARE)
    picked = rng.sample(names, min(count, len(names)))
    for index in range(subdomains):
        picked[index] = f"{rng.choice(['www', 'api', 'cdn', 'o1', 'eu'])}.{picked[index]}"
    rng.shuffle(picked)
    return picked


def cached_queries(count: int) -> list[str]:
    return [f"host{index}.{CACHED_ZONE}" for index in range(count)]


def write_lines(path: Path, lines: Sequence[str], template: str = "{}") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        out.writelines(template.format(line) + "\n" for line in lines)


# --- loopback DNS, by hand -----------------------------------------------------------------


def dns_query(name: str, query_id: int = 0x4242, qtype: int = 1) -> bytes:
    header = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.split("."))
    return header + labels + b"\0" + struct.pack("!HH", qtype, 1)


def answer_address(reply: bytes, query_id: int = 0x4242) -> bytes | None:
    """The last 4 bytes of a NOERROR reply with answers (our queries carry no EDNS), else None."""
    if len(reply) < 16:
        return None
    reply_id, flags, _qd, answers = struct.unpack("!HHHH", reply[:8])
    if reply_id != query_id or not flags & 0x8000 or flags & 0x000F or answers == 0:
        return None
    return reply[-4:]


def ask(port: int, name: str, timeout_s: float = 1.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect((HOST, port))
        try:
            sock.send(dns_query(name))
            return answer_address(sock.recv(4096))
        except (TimeoutError, ConnectionRefusedError):
            return None


def free_port() -> int:
    """A UDP and TCP port free on 127.0.0.1 right now."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
            return port
    raise OSError(f"no port free for both UDP and TCP on {HOST}")


# --- child processes -----------------------------------------------------------------------


@dataclass
class Child:
    """A process we started; `stop()` ends it by its PID and only it."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


class Children:
    """Every process the bench starts, stopped in reverse order on the way out."""

    def __init__(self) -> None:
        self._children: list[Child] = []

    def start(self, name: str, command: list[str], log_path: Path) -> Child:
        with log_path.open("wb") as log:
            started_at = time.monotonic()
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        child = Child(name, process, log_path, started_at)
        self._children.append(child)
        return child

    def stop(self, child: Child) -> None:
        child.stop()
        self._children.remove(child)

    def stop_all(self) -> None:
        while self._children:
            self._children.pop().stop()


def wait_first_answer(child: Child, port: int, probe: str) -> float:
    """Seconds from process start to the first sinkhole answer for `probe`, polled every 10 ms."""
    query = dns_query(probe)
    deadline = child.started_at + READY_TIMEOUT_S
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((HOST, port))
        while True:
            sent_at = time.monotonic()
            try:
                sock.send(query)
                sock.settimeout(POLL_INTERVAL_S)
                if answer_address(sock.recv(4096)) == SINKHOLE:
                    return time.monotonic() - child.started_at
            except (TimeoutError, ConnectionRefusedError):
                pass
            if child.process.poll() is not None:
                raise RuntimeError(
                    f"{child.name} exited with {child.process.returncode}:\n{child.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{child.name} gave no answer in {READY_TIMEOUT_S} s")
            time.sleep(max(0.0, POLL_INTERVAL_S - (time.monotonic() - sent_at)))


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


# --- dnsperf ------------------------------------------------------------------------------


@dataclass
class PerfRun:
    qps: float
    sent: int
    lost: int
    lost_pct: float
    avg_latency_ms: float


def dnsperf(
    port: int, query_file: Path, seconds: float, clients: int, outstanding: int, *, once: bool
) -> PerfRun:
    command = ["taskset", "-c", CLIENT_CPU, "dnsperf", "-s", HOST, "-p", str(port)]
    command += ["-d", str(query_file), "-c", str(clients), "-q", str(outstanding), "-t", "2"]
    command += ["-n", "1"] if once else ["-l", f"{seconds:g}"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"dnsperf failed ({result.returncode}): {result.stderr.strip()}")
    return parse_dnsperf(result.stdout)


def parse_dnsperf(output: str) -> PerfRun:
    def number(label: str) -> float:
        found = re.search(rf"{label}:\s+([\d.]+)", output)
        if not found:
            raise RuntimeError(f"dnsperf output has no {label!r}:\n{output}")
        return float(found.group(1))

    sent = int(number("Queries sent"))
    lost = int(number("Queries lost"))
    return PerfRun(
        qps=number("Queries per second"),
        sent=sent,
        lost=lost,
        lost_pct=100.0 * lost / sent if sent else 0.0,
        avg_latency_ms=1000.0 * number("Average Latency \\(s\\)"),
    )


# --- one server under test -----------------------------------------------------------------


@dataclass
class ServerResult:
    name: str
    command: list[str]
    first_answer_s: float = 0.0
    rss_loaded_kib: int = 0
    restart_first_answer_s: float = 0.0  # aidns again, mapping the snapshot the first run left
    restart_rss_kib: int = 0
    rss_after_kib: int = 0
    peak_rss_kib: int = 0
    blocked: list[PerfRun] = field(default_factory=list)
    cached: list[PerfRun] = field(default_factory=list)

    @property
    def blocked_qps(self) -> float:
        return statistics.median(run.qps for run in self.blocked)

    @property
    def cached_qps(self) -> float:
        return statistics.median(run.qps for run in self.cached)

    @property
    def blocked_lost_pct(self) -> float:
        return max(run.lost_pct for run in self.blocked)

    @property
    def cached_lost_pct(self) -> float:
        return max(run.lost_pct for run in self.cached)


@dataclass
class Bench:
    workdir: Path
    names: list[str]
    blocked_file: Path
    cached_file: Path
    rounds: int
    seconds: float
    clients: int
    outstanding: int
    children: Children
    progress: Callable[[str], None]

    def check_answers(self, label: str, port: int) -> None:
        """Both kinds of answer the rounds count on, before counting anything."""
        expected = {
            self.names[0]: SINKHOLE,
            f"www.{self.names[1]}": SINKHOLE,
            f"check.{CACHED_ZONE}": socket.inet_aton(CACHED_ADDRESS),
        }
        for name, address in expected.items():
            got = ask(port, name)
            if got != address:
                raise RuntimeError(f"{label}: {name} answered {got!r}, expected {address!r}")

    def start_only(self, label: str, command: list[str], port: int) -> tuple[float, int]:
        """Seconds to the first answer and VmRSS (KiB) then, for a variant not put under load."""
        self.progress(f"{label}: starting")
        child = self.children.start(label, command, self.workdir / f"{label}.log")
        try:
            first_answer_s = wait_first_answer(child, port, self.names[len(self.names) // 2])
            return first_answer_s, memory_kib(child.pid)["VmRSS"]
        finally:
            self.children.stop(child)

    def start(self, label: str, command: list[str], port: int) -> Server:
        """Start a server, time its first answer, read its RSS and warm its cache."""
        result = ServerResult(label, command)
        self.progress(f"{label}: starting")
        child = self.children.start(label, command, self.workdir / f"{label}.log")
        result.first_answer_s = wait_first_answer(child, port, self.names[len(self.names) // 2])
        result.rss_loaded_kib = memory_kib(child.pid)["VmRSS"]
        self.progress(
            f"{label}: first answer after {result.first_answer_s:.3f} s, "
            f"RSS {result.rss_loaded_kib / 1024:.1f} MiB"
        )
        self.check_answers(label, port)
        for _ in range(2):  # the second pass should need no upstream at all
            dnsperf(port, self.cached_file, 0, 1, 20, once=True)
        return Server(child, result, port)

    def load_rounds(self, servers: Sequence[Server]) -> None:
        """Every round puts each server under load in turn, one at a time, so that a slow
        spell of a shared machine falls on both rather than on whichever ran then."""
        for round_index in range(self.rounds):
            for kind, query_file in (("blocked", self.blocked_file), ("cached", self.cached_file)):
                for server in servers:
                    run = dnsperf(
                        server.port,
                        query_file,
                        self.seconds,
                        self.clients,
                        self.outstanding,
                        once=False,
                    )
                    runs = server.result.blocked if kind == "blocked" else server.result.cached
                    runs.append(run)
                    self.progress(
                        f"{server.result.name}: round {round_index + 1} {kind}: "
                        f"{run.qps:,.0f} q/s, {run.lost_pct:.2f}% lost"
                    )

    def finish(self, server: Server) -> ServerResult:
        child, result = server.child, server.result
        if child.process.poll() is not None:
            raise RuntimeError(f"{result.name} died during the rounds:\n{child.log_tail()}")
        memory = memory_kib(child.pid)
        result.rss_after_kib, result.peak_rss_kib = memory["VmRSS"], memory["VmHWM"]
        self.children.stop(child)
        return result


@dataclass
class Server:
    child: Child
    result: ServerResult
    port: int


# --- commands ------------------------------------------------------------------------------


def dnsmasq_base(port: int) -> list[str]:
    command = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv"]
    command += ["--no-hosts", "--no-poll", "--bind-interfaces", f"--listen-address={HOST}"]
    command += [f"--port={port}", "--pid-file=", "--log-facility=-"]
    if os.geteuid() == 0:
        command.append("--user=root")  # as root it would switch to nobody; keep file access simple
    return command


def upstream_command(port: int) -> list[str]:
    return [
        "taskset",
        "-c",
        CLIENT_CPU,
        *dnsmasq_base(port),
        "--local-ttl=3600",
        f"--address=/{CACHED_ZONE}/{CACHED_ADDRESS}",
    ]


def peer_command(port: int, list_option: str, upstream_port: int) -> list[str]:
    return [
        "taskset",
        "-c",
        SERVER_CPU,
        *dnsmasq_base(port),
        list_option,
        f"--server={HOST}#{upstream_port}",
        f"--cache-size={CACHE_ENTRIES}",
    ]


def aidns_executable() -> str:
    """The entry point beside this Python: a pyenv shim would add its own start-up time."""
    beside = Path(sys.executable).with_name("aidns")
    if beside.exists():
        return str(beside)
    found = shutil.which("aidns")
    if not found:
        raise RuntimeError("aidns is not installed: pip install -e /path/to/aidns")
    return found


def aidns_command(
    executable: str, port: int, data_dir: Path, config: Path, upstream_port: int
) -> list[str]:
    return [
        "taskset",
        "-c",
        SERVER_CPU,
        executable,
        "serve",
        "--listen",
        f"{HOST}:{port}",
        "--upstream",
        f"{HOST}:{upstream_port}",
        "--data-dir",
        str(data_dir),
        "--config",
        str(config),
        "--cache-size",
        str(CACHE_ENTRIES),
    ]


def wait_upstream(child: Child, port: int) -> None:
    deadline = time.monotonic() + 10
    while ask(port, f"ready.{CACHED_ZONE}", 0.1) != socket.inet_aton(CACHED_ADDRESS):
        if child.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the upstream dnsmasq did not answer:\n{child.log_tail()}")
        time.sleep(0.05)


# --- the machine and the report ------------------------------------------------------------


def first_line(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError as exc:
        return f"unavailable ({exc})"
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    try:
        aidns_version = version("aidns")
    except PackageNotFoundError:
        aidns_version = "not installed"
    usage = subprocess.run(["dnsperf", "-h"], capture_output=True, text=True, check=False)
    dnsperf_version = next(
        (
            line.split(maxsplit=1)[1]
            for line in (usage.stdout + usage.stderr).splitlines()
            if line.startswith("Version ")
        ),
        "unknown",
    )
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": f"{platform.system()} {platform.release()}",
        "load_at_start": " ".join(f"{load:.2f}" for load in os.getloadavg()),
        "dnsmasq": first_line([DNSMASQ, "--version"]),
        "dnsperf": dnsperf_version,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "aidns": aidns_version,
    }


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


def rows(aidns: ServerResult, peer: ServerResult) -> list[Row]:
    def at_least(share: float) -> Callable[[float, float], bool]:
        return lambda a, d: a >= share * d

    def at_most_peer(a: float, d: float) -> bool:
        return a <= d

    table: list[tuple[str, float, float, str, Callable[[float, float], bool] | None]] = [
        ("blocked q/s (median)", aidns.blocked_qps, peer.blocked_qps, ">= 0.8", at_least(0.8)),
        ("cached q/s (median)", aidns.cached_qps, peer.cached_qps, ">= 0.8", at_least(0.8)),
        ("blocked lost % (worst round)", aidns.blocked_lost_pct, peer.blocked_lost_pct, "", None),
        ("cached lost % (worst round)", aidns.cached_lost_pct, peer.cached_lost_pct, "", None),
        (
            "RSS loaded (MiB)",
            aidns.rss_loaded_kib / 1024,
            peer.rss_loaded_kib / 1024,
            "<= 0.5x",
            lambda a, d: a <= 0.5 * d,
        ),
        (
            "RSS after rounds (MiB)",
            aidns.rss_after_kib / 1024,
            peer.rss_after_kib / 1024,
            "<= dnsmasq",
            at_most_peer,
        ),
        ("peak RSS (MiB)", aidns.peak_rss_kib / 1024, peer.peak_rss_kib / 1024, "", None),
        (
            "first answer (s)",
            aidns.first_answer_s,
            peer.first_answer_s,
            "aidns <= 2 s",
            lambda a, _d: a <= 2.0,
        ),
        (
            "first answer, restart (s)",
            aidns.restart_first_answer_s,
            peer.first_answer_s,
            "aidns <= 1 s",
            lambda a, _d: a <= 1.0,
        ),
        (
            "RSS loaded, restart (MiB)",
            aidns.restart_rss_kib / 1024,
            peer.rss_loaded_kib / 1024,
            "<= 0.5x",
            lambda a, d: a <= 0.5 * d,
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
        f"          {settings['rounds']} rounds x {settings['seconds']:g} s per kind; "
        f"{settings['blocked_queries']:,} blocked queries ({settings['subdomain_share']:.0%} "
        f"one label below a listed name), {settings['cached_queries']:,} cached names; "
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
                "rss_loaded_kib": result.rss_loaded_kib,
                "restart_first_answer_s": result.restart_first_answer_s or None,
                "restart_rss_kib": result.restart_rss_kib or None,
                "rss_after_kib": result.rss_after_kib,
                "peak_rss_kib": result.peak_rss_kib,
                "blocked_rounds": [asdict(run) for run in result.blocked],
                "cached_rounds": [asdict(run) for run in result.cached],
            }
            for result in results
        },
    }


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="dnsperf runs per kind (median)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one dnsperf run")
    parser.add_argument("--names", type=int, default=1_000_000, help="names in the blocklist")
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
    if args.rounds < 1 or args.seconds <= 0 or args.names < 2:
        parser.error("--rounds >= 1, --seconds > 0 and --names >= 2, please")
    return args


def preflight() -> None:
    missing = [tool for tool in (DNSMASQ, "dnsperf", "taskset") if not shutil.which(tool)]
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)} (apt-get install dnsmasq-base dnsperf)")
    cpus = os.sched_getaffinity(0)
    if not {int(SERVER_CPU), int(CLIENT_CPU)} <= cpus:
        raise SystemExit(f"needs CPUs {SERVER_CPU} and {CLIENT_CPU}; this process may use {cpus}")


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="aidns-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    preflight()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally blocks run

    def progress(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

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
            write_lines(tmp / "data" / "lists" / "million.txt", names)
            write_lines(tmp / "dnsmasq-million.conf", names, "address=/{}/0.0.0.0")
            config = tmp / "config.yaml"
            config.write_text(args.aidns_config.read_text() if args.aidns_config else "")
            blocked = blocked_queries(names, min(BLOCKED_QUERIES, args.names), SEED)
            write_lines(tmp / "blocked.queries", blocked, "{} A")
            write_lines(tmp / "cached.queries", cached_queries(CACHED_QUERIES), "{} A")

            upstream_port = free_port()
            upstream = children.start(
                "upstream", upstream_command(upstream_port), tmp / "upstream.log"
            )
            wait_upstream(upstream, upstream_port)
            bench = Bench(
                workdir=tmp,
                names=names,
                blocked_file=tmp / "blocked.queries",
                cached_file=tmp / "cached.queries",
                rounds=args.rounds,
                seconds=args.seconds,
                clients=args.clients,
                outstanding=args.outstanding,
                children=children,
                progress=progress,
            )
            port = free_port()
            peer_server = bench.start(
                "dnsmasq",
                peer_command(port, f"--conf-file={tmp / 'dnsmasq-million.conf'}", upstream_port),
                port,
            )
            port = free_port()
            command = aidns_command(executable, port, tmp / "data", config, upstream_port)
            aidns_server = bench.start("aidns", command, port)
            bench.load_rounds([aidns_server, peer_server])
            aidns = bench.finish(aidns_server)
            peer = bench.finish(peer_server)
            port = free_port()  # a restart with the files unchanged maps the last snapshot
            command = aidns_command(executable, port, tmp / "data", config, upstream_port)
            aidns.restart_first_answer_s, aidns.restart_rss_kib = bench.start_only(
                "aidns-restart", command, port
            )
            if args.also_hosts:
                write_lines(tmp / "million.hosts", names, "0.0.0.0 {}")
                port = free_port()
                hosts_option = f"--addn-hosts={tmp / 'million.hosts'}"
                hosts_start = bench.start_only(
                    "dnsmasq-hosts", peer_command(port, hosts_option, upstream_port), port
                )
        finally:
            children.stop_all()

    settings: dict[str, Any] = {
        "names": args.names,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "blocked_queries": len(blocked),
        "subdomain_share": SUBDOMAIN_SHARE,
        "cached_queries": CACHED_QUERIES,
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
    table = rows(aidns, peer)
    if args.json:
        print(json.dumps(report_json(info, settings, table, [aidns, peer]), indent=2))
    else:
        print_table(sys.stdout, info, settings, table)
        print(f"\nratio per round: {round_ratios(aidns, peer)}")
    return 0


def round_ratios(aidns: ServerResult, peer: ServerResult) -> str:
    """aidns / dnsmasq for each round, which ran back to back."""
    parts = []
    for kind in ("blocked", "cached"):
        mine, theirs = getattr(aidns, kind), getattr(peer, kind)
        ratios = [a.qps / d.qps for a, d in zip(mine, theirs, strict=True) if d.qps]
        parts.append(f"{kind} " + " ".join(f"{r:.2f}" for r in ratios))
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
