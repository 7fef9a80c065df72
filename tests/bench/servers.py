"""The servers every benchmark starts: the upstream dnsmasq, aidns and dnsmasq beside it."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.bench.common import (
    CACHE_ENTRIES,
    CACHED_ADDRESS,
    CACHED_ZONE,
    CLIENT_CPU,
    DNSMASQ,
    FRESH_ADDRESS,
    FRESH_ZONE,
    HOST,
    PORT_ATTEMPTS,
    SERVER_CPU,
    SINKHOLE,
    Child,
    Children,
    ask,
    free_port,
    progress,
    wait_first_answer,
    write_lines,
)

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
        f"--address=/{FRESH_ZONE}/{FRESH_ADDRESS}",
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
    executable: str,
    port: int,
    data_dir: Path,
    config: Path,
    upstream_port: int,
    cache_entries: int | None = CACHE_ENTRIES,
) -> list[str]:
    """`cache_entries=None` leaves the cache at its configured size (the default config)."""
    command = [
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
    ]
    if cache_entries is not None:
        command += ["--cache-size", str(cache_entries)]
    return command


def wait_upstream(child: Child, port: int) -> None:
    deadline = time.monotonic() + 10
    while ask(port, f"ready.{CACHED_ZONE}", 0.1) != socket.inet_aton(CACHED_ADDRESS):
        if child.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the upstream dnsmasq did not answer:\n{child.log_tail()}")
        time.sleep(0.05)


def start_server(
    children: Children,
    label: str,
    command_for: Callable[[int], list[str]],
    log_path: Path,
    probe: str,
    expected: bytes = SINKHOLE,
) -> tuple[Child, int, float]:
    """Start a server on a free port and wait for its first sinkhole answer to `probe`: the
    child, its port and the seconds that took. Other work on the machine binds ports too, so
    a port taken between choosing and binding it costs another attempt, not the run."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = free_port()
        child = children.start(label, command_for(port), log_path)
        try:
            return child, port, wait_first_answer(child, port, probe, expected)
        except RuntimeError:
            children.stop(child)
            if "in use" not in child.log_tail().lower() or attempt == PORT_ATTEMPTS:
                raise
            progress(f"{label}: port {port} was taken meanwhile; another one")
    raise AssertionError("unreachable")


# --- the setting every benchmark shares ----------------------------------------------------


def write_blocklists(tmp: Path, names: Sequence[str]) -> tuple[Path, Path]:
    """The list for aidns (`<tmp>/data/lists/million.txt`) and dnsmasq's `address=` form of it."""
    aidns_list, dnsmasq_conf = tmp / "data" / "lists" / "million.txt", tmp / "dnsmasq-million.conf"
    write_lines(aidns_list, names)
    write_lines(dnsmasq_conf, names, "address=/{}/0.0.0.0")
    return aidns_list, dnsmasq_conf


def start_upstream(children: Children, tmp: Path) -> int:
    """The dnsmasq that plays the upstream for both servers, answering; its port."""
    port = free_port()
    upstream = children.start("upstream", upstream_command(port), tmp / "upstream.log")
    wait_upstream(upstream, port)
    return port


def start_side_by_side(
    children: Children, tmp: Path, probe: str, dnsmasq_list_option: str, upstream_port: int
) -> dict[str, tuple[Child, int]]:
    """aidns in its default config (an empty config file, its data dir `<tmp>/data`) and
    dnsmasq with the list (`--conf-file=` or `--addn-hosts=`), both answering: each one's
    child and port, by name."""
    config = tmp / "config.yaml"
    config.write_text("")
    executable = aidns_executable()
    commands: dict[str, Callable[[int], list[str]]] = {
        "aidns": lambda port: aidns_command(
            executable, port, tmp / "data", config, upstream_port, None
        ),
        "dnsmasq": lambda port: peer_command(port, dnsmasq_list_option, upstream_port),
    }
    started = {}
    for label, command_for in commands.items():
        child, port, seconds = start_server(
            children, label, command_for, tmp / f"{label}.log", probe
        )
        progress(f"{label}: first answer after {seconds:.2f} s")
        started[label] = (child, port)
    return started
