"""Fixtures that run the real `aidns serve` and a real dnsmasq upstream, all on loopback."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.helpers.dnsmasq import DNSMASQ, dnsmasq_command

from .netns import in_netns, namespace

LISTENING = re.compile(r"listening on (udp|tcp) (\S+):(\d+)$")


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as udp:
        udp.bind((host, 0))
        return int(udp.getsockname()[1])


@dataclass
class Dnsmasq:
    """A real dnsmasq answering a fixed zone: names under `up.test` resolve, others NXDOMAIN."""

    port: int
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(5)


def start_dnsmasq(tmp_path: Path, *extra: str, host: str = "127.0.0.1") -> Dnsmasq:
    if not os.path.exists(DNSMASQ):
        pytest.skip("dnsmasq is not installed (apt-get install dnsmasq-base)")
    for _attempt in range(5):
        port = free_port(host)
        process = subprocess.Popen(
            dnsmasq_command(
                port,
                "--local-ttl=300",
                "--address=/up.test/192.0.2.10",
                "--address=/up.test/2001:db8::10",
                "--local=/#/",
                *extra,
                host=host,
            ),
            stderr=subprocess.PIPE,
        )
        time.sleep(0.1)
        if process.poll() is None:
            return Dnsmasq(port, process)
    raise RuntimeError(
        f"dnsmasq did not start: {process.stderr.read().decode() if process.stderr else ''}"
    )


@dataclass
class Aidns:
    """A running `aidns serve`: its ports, its log so far, and a way to stop it."""

    process: subprocess.Popen[str]
    data_dir: Path
    ports: dict[tuple[str, str], int] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def port(self, host: str = "127.0.0.1", transport: str = "udp") -> int:
        return self.ports[(transport, host)]

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.log.extend(self.process.stderr.read().splitlines())
        return self.process.returncode


def aidns_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from aidns.cli.main import app; app()", *args]


def start_aidns(
    tmp_path: Path,
    *args: str,
    listen: tuple[str, ...] = ("127.0.0.1:0",),
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], object] | None = None,
) -> Aidns:
    """Start the real server; `args` or the config file must give a loopback upstream.
    `preexec_fn` runs in the child before aidns (to set its resource limits, say)."""
    data_dir = tmp_path / "data"
    config = tmp_path / "config.yaml"
    if not config.exists():
        config.write_text("")
    assert any(a.startswith("--upstream") for a in args) or (
        "upstream: 127.0.0.1:" in config.read_text()
    ), "never start aidns without a loopback upstream"
    listen_args = [f"--listen={address}" for address in listen]
    process = subprocess.Popen(
        aidns_command("serve", *listen_args, f"--data-dir={data_dir}", f"--config={config}", *args),
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        preexec_fn=preexec_fn,
    )
    server = Aidns(process, data_dir)
    deadline = time.monotonic() + 15
    assert process.stderr is not None
    while len(server.ports) < 2 * len(listen):
        line = process.stderr.readline()
        if not line:
            raise RuntimeError("aidns exited before listening:\n" + "\n".join(server.log))
        server.log.append(line.rstrip("\n"))
        found = LISTENING.search(line.rstrip("\n"))
        if found:
            transport, host, port = found.groups()
            server.ports[(transport, host.strip("[]"))] = int(port)
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("aidns did not start listening:\n" + "\n".join(server.log))
    return server


def answer(server: Aidns, name: str) -> str:
    """The first address aidns gives for `name` (type A), else the rcode's name."""
    response = dns.query.udp(
        dns.message.make_query(name, "A"), "127.0.0.1", port=server.port(), timeout=3
    )
    addresses = [r.to_text() for rrset in response.answer for r in rrset]
    return addresses[0] if addresses else dns.rcode.to_text(response.rcode())


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    upstream = start_dnsmasq(tmp_path)
    yield upstream
    upstream.stop()


@pytest.fixture
def aidns(tmp_path: Path, dnsmasq: Dnsmasq) -> Iterator[Aidns]:
    lists = tmp_path / "data" / "lists"
    lists.mkdir(parents=True)
    (lists / "mine.yaml").write_text(
        "name: mine\ndescription: test rules\naction: block\ndomains:\n"
        "  - blocked.test\n  - domain: exact.test\n    match: exact\n"
    )
    (lists / "cloud.yaml").write_text("name: cloud\naction: watch\ndomains:\n  - watched.up.test\n")
    server = start_aidns(
        tmp_path,
        f"--upstream=127.0.0.1:{dnsmasq.port}",
        "--log-level=debug",
        listen=("127.0.0.1:0", "[::1]:0"),
    )
    yield server
    server.stop()


NETNS_UPSTREAM_PORT = 5300


@contextmanager
def resolver_in_netns(tmp_path: Path, config: str) -> Iterator[tuple[str, Path]]:
    """aidns on 127.0.0.1:53 with `config`, and dnsmasq as its upstream, in a fresh namespace."""
    if not os.path.exists(DNSMASQ):
        pytest.skip("dnsmasq is not installed (apt-get install dnsmasq-base)")
    with namespace("nameserver 127.0.0.1\noptions attempts:1 timeout:2\n") as name:
        upstream = subprocess.Popen(
            in_netns(
                name,
                dnsmasq_command(
                    NETNS_UPSTREAM_PORT, "--address=/up.test/127.0.0.1", "--local=/test/"
                ),
            ),
            stderr=subprocess.DEVNULL,
        )
        data_dir = tmp_path / "data"
        (tmp_path / "config.yaml").write_text(config)
        server = subprocess.Popen(
            in_netns(
                name,
                aidns_command(
                    "serve",
                    "--listen=127.0.0.1:53",
                    f"--upstream=127.0.0.1:{NETNS_UPSTREAM_PORT}",
                    f"--data-dir={data_dir}",
                    f"--config={tmp_path / 'config.yaml'}",
                ),
            ),
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stderr is not None
            for line in server.stderr:
                if "listening on tcp" in line:
                    break
            else:
                pytest.fail("aidns did not start in the namespace")
            yield name, data_dir
        finally:
            for process in (server, upstream):
                process.terminate()
                process.wait(10)


@pytest.fixture
def resolver_netns(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """aidns on 127.0.0.1:53 and dnsmasq as its upstream, both inside a fresh namespace."""
    # a loaded CI machine is slow: these tests are about who asked, not how fast we find out
    with resolver_in_netns(tmp_path, "attribution_budget_ms: 50\n") as made:
        yield made


@pytest.fixture
def resolver_netns_defaults(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """As resolver_netns, with aidns's default config (the 2 ms attribution budget)."""
    with resolver_in_netns(tmp_path, "") as made:
        yield made
