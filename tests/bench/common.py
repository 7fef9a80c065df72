"""Shared pieces of the benchmarks: names, loopback DNS by hand, child processes, the machine."""

from __future__ import annotations

import contextlib
import os
import platform
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

HOST = "127.0.0.1"
DNSMASQ = "/usr/sbin/dnsmasq"
SERVER_CPU = "0"
CLIENT_CPU = "1"
SEED = 20_241_129
CACHED_ZONE = "cached.bench"
CACHED_ADDRESS = "192.0.2.1"
FRESH_ZONE = "fresh.bench"  # the upstream answers every name below it; the bench never repeats one
FRESH_ADDRESS = "192.0.2.2"
SINKHOLE = bytes(4)  # 0.0.0.0
CACHE_ENTRIES = 10_000
SUBDOMAIN_SHARE = 0.1
READY_TIMEOUT_S = 120.0
POLL_INTERVAL_S = 0.010
PORT_ATTEMPTS = 5
BUSY_LOAD = 0.5  # 1-minute load average above which the figures are not worth quoting
TLDS = ["com"] * 40 + ["net"] * 10 + ["org"] * 8 + ["io"] * 6 + ["ai"] * 4
TLDS += ["de", "co", "app", "dev", "cn", "ru", "uk", "info", "xyz", "me", "fr", "jp"]
# 256 entries, so a random byte maps straight to a character; letters are the common case.
LABEL_CHARS = ("abcdefghijklmnopqrstuvwxyz" * 9 + "0123456789" * 2 + "-" * 2)[:256]


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


def wait_first_answer(child: Child, port: int, probe: str, expected: bytes = SINKHOLE) -> float:
    """Seconds from process start to the first answer `expected` (by default the sinkhole
    address) for `probe`, polled every 10 ms."""
    query = dns_query(probe)
    deadline = child.started_at + READY_TIMEOUT_S
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((HOST, port))
        while True:
            sent_at = time.monotonic()
            try:
                sock.send(query)
                sock.settimeout(POLL_INTERVAL_S)
                if answer_address(sock.recv(4096)) == expected:
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


def process_tree(pid: int) -> list[int]:
    """`pid` and every live descendant, found through the parent pid in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])  # the name may hold spaces
        children.setdefault(parent, []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def tree_rss_kib(pid: int) -> int:
    """VmRSS of `pid` and its descendants, summed (KiB); a process that just exited counts 0."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            total += memory_kib(member).get("VmRSS", 0)
    return total


@contextlib.contextmanager
def busy_cpus(children: Children, workdir: Path, enabled: bool = True) -> Iterator[None]:
    """One CPU-bound process pinned to each core while the block runs, stopped by PID."""
    started = []
    if enabled:
        for cpu in sorted(os.sched_getaffinity(0)):
            command = ["taskset", "-c", str(cpu), sys.executable, "-c", "while True: pass"]
            started.append(children.start(f"busy{cpu}", command, workdir / f"busy{cpu}.log"))
    try:
        yield
    finally:
        for child in started:
            children.stop(child)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def exit_cleanly_on_sigterm() -> None:
    """SIGTERM raises SystemExit, so the finally blocks that stop the children run."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def percentile(ordered: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of an already sorted sequence; 0.0 when empty."""
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, int(share * len(ordered) + 0.999999) - 1))
    return ordered[rank]


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


def preflight(tools: Sequence[str] = (DNSMASQ, "dnsperf", "taskset")) -> None:
    missing = [tool for tool in tools if not shutil.which(tool)]
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


def fresh_names(tag: str, count: int) -> list[str]:
    """`count` names no server has seen, each answered by the upstream; `tag` keeps runs apart."""
    return [f"n{index}.{tag}.{FRESH_ZONE}" for index in range(count)]
