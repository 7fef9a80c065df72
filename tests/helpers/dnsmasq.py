"""A real dnsmasq on a loopback port, as an upstream for tests; it forwards nowhere."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


def available() -> bool:
    return Path(DNSMASQ).exists()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP right now (another process could still take it)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise OSError(f"no port free for both UDP and TCP on {host}")


def dnsmasq_command(port: int, *options: str, host: str = "127.0.0.1") -> list[str]:
    """dnsmasq in the foreground on host:port, with no config file, upstream or hosts file."""
    command = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv"]
    command += ["--no-hosts", "--bind-interfaces", f"--listen-address={host}", f"--port={port}"]
    as_root = os.geteuid() == 0 and not any(o.startswith("--user") for o in options)
    command += ["--pid-file=", *(["--user=root"] if as_root else []), *options]
    return command


@contextmanager
def run_dnsmasq(*options: str, host: str = "127.0.0.1", ready_s: float = 5.0) -> Iterator[int]:
    """dnsmasq on host:PORT with no upstream servers and no config file; yields PORT.

    with run_dnsmasq("--address=/example.test/192.0.2.1") as port: ...
    """
    port = free_port(host)
    command = dnsmasq_command(port, "--no-poll", "--log-facility=-", *options, host=host)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(process, host, port, ready_s)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def _wait_listening(process: subprocess.Popen[bytes], host: str, port: int, ready_s: float) -> None:
    deadline = time.monotonic() + ready_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"dnsmasq exited with {process.returncode}: {error.strip()}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"dnsmasq did not listen on {host}:{port} within {ready_s} s")
