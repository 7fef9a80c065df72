"""Benchmark answers while a big list reloads: aidns (compiles in a child) against dnsmasq.

    python3 tests/bench/bench_reload.py [--names N] [--rounds R]

Everything stays on 127.0.0.1. Each round a prober asks a listed name and a forwarded one
every 5 ms from one socket while the server takes a new N-name list: aidns by a file
appearing in its lists directory, dnsmasq by SIGHUP re-reading its `addn-hosts` file (how it
reloads hosts lists). Rounds alternate between the servers. It reports, per server, the
queries unanswered within 2 s, the slowest answer, and how long the new list took to take
effect; for aidns also its RSS before and after.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dns.message

HOST = "127.0.0.1"
DNSMASQ = "/usr/sbin/dnsmasq"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((HOST, 0))
        return int(udp.getsockname()[1])


class Prober(threading.Thread):
    def __init__(self, port: int, names: tuple[str, ...]) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.packets = [dns.message.make_query(n, "A").to_wire() for n in names]
        self.latencies: list[float] = []
        self.unanswered = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(2.0)
            query_id = 0
            while not self.stop.is_set():
                for packet in self.packets:
                    query_id = (query_id + 1) & 0xFFFF
                    wanted = struct.pack(">H", query_id)
                    sent = time.monotonic()
                    udp.sendto(wanted + packet[2:], (HOST, self.port))
                    try:
                        while udp.recv(4096)[:2] != wanted:
                            pass
                    except TimeoutError:
                        self.unanswered += 1
                        continue
                    self.latencies.append(time.monotonic() - sent)
                time.sleep(0.005)


def answer(port: int, name: str) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(2.0)
        udp.sendto(dns.message.make_query(name, "A").to_wire(), (HOST, port))
        try:
            return udp.recv(4096)
        except TimeoutError:
            return b""


def blocked(port: int, name: str) -> bool:
    reply = answer(port, name)
    return bool(reply) and reply.endswith(b"\x00\x00\x00\x00")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(port: int, change: object, probe_name: str, last_name: str) -> dict[str, float]:
    prober = Prober(port, (probe_name, "x.up.test"))
    prober.start()
    time.sleep(0.5)
    started = time.monotonic()
    change()  # type: ignore[operator]
    while not blocked(port, last_name):
        if time.monotonic() - started > 300:
            break
        time.sleep(0.05)
    took = time.monotonic() - started
    time.sleep(0.5)
    prober.stop.set()
    prober.join(5)
    return {
        "unanswered": prober.unanswered,
        "slowest_ms": max(prober.latencies) * 1000,
        "p99_ms": statistics.quantiles(prober.latencies, n=100)[98] * 1000,
        "effect_s": took,
        "answered": len(prober.latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--names", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aidns-bench-reload-"))
    upstream_port, aidns_port, dnsmasq_port = free_port(), free_port(), free_port()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(
            subprocess.Popen(
                [DNSMASQ, "-k", "-C", "/dev/null", f"--port={upstream_port}",
                 f"--listen-address={HOST}", "--bind-interfaces", "--no-resolv",
                 "--address=/up.test/192.0.2.10", "--user=root", "--pid-file="],
            )
        )  # fmt: skip
        hosts = work / "hosts"
        hosts.write_text("0.0.0.0 probe.test\n")
        dnsmasq = subprocess.Popen(
            [DNSMASQ, "-k", "-C", "/dev/null", f"--port={dnsmasq_port}",
             f"--listen-address={HOST}", "--bind-interfaces", "--no-resolv", "--no-hosts",
             f"--addn-hosts={hosts}", f"--server={HOST}#{upstream_port}", "--user=root",
             "--pid-file="],
        )  # fmt: skip
        processes.append(dnsmasq)
        data = work / "data"
        (data / "lists").mkdir(parents=True)
        (data / "lists" / "probe.txt").write_text("probe.test\n")
        (work / "config.yaml").write_text("")
        aidns = subprocess.Popen(
            [sys.executable, "-c", "from aidns.cli.main import app; app()", "serve",
             f"--listen={HOST}:{aidns_port}", f"--upstream={HOST}:{upstream_port}",
             f"--data-dir={data}", f"--config={work / 'config.yaml'}"],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        processes.append(aidns)
        deadline = time.monotonic() + 60
        while not (blocked(aidns_port, "probe.test") and blocked(dnsmasq_port, "probe.test")):
            assert time.monotonic() < deadline, "servers did not start"
            time.sleep(0.1)
        results: dict[str, list[dict[str, float]]] = {"aidns": [], "dnsmasq": []}
        rss = [rss_mib(aidns.pid)]
        for round_number in range(args.rounds):
            tag = f"r{round_number}"
            staged = work / f"{tag}.txt"
            with staged.open("w") as out:
                out.writelines(f"n{n}.{tag}.bench\n" for n in range(args.names))
            hosts_text = work / f"{tag}.hosts"
            with hosts_text.open("w") as out:
                out.write("0.0.0.0 probe.test\n")
                out.writelines(f"0.0.0.0 n{n}.{tag}.bench\n" for n in range(args.names))
            last = f"n{args.names - 1}.{tag}.bench"
            results["aidns"].append(
                measure(
                    aidns_port,
                    lambda s=staged, t=tag: os.replace(s, data / "lists" / f"{t}.txt"),
                    "probe.test",
                    last,
                )
            )
            rss.append(rss_mib(aidns.pid))
            results["dnsmasq"].append(
                measure(
                    dnsmasq_port,
                    lambda h=hosts_text: (os.replace(h, hosts), dnsmasq.send_signal(signal.SIGHUP)),
                    "probe.test",
                    last,
                )
            )
            (data / "lists" / f"{tag}.txt").unlink()
            for server, rounds in results.items():
                print(f"round {round_number + 1} {server}: " + ", ".join(
                    f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in rounds[-1].items()
                ), flush=True)  # fmt: skip
        print(f"aidns RSS MiB before and after each round: {', '.join(f'{r:.1f}' for r in rss)}")
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()


if __name__ == "__main__":
    main()
