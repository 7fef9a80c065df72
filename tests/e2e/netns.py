"""A network namespace of the test's own, with loopback up and its own resolv.conf."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

NETNS_ETC = Path("/etc/netns")


def netns_unavailable() -> str | None:
    """Why namespaces can't be used here, or None."""
    if shutil.which("ip") is None:
        return "iproute2's ip command is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"aidns-probe-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@contextmanager
def namespace(resolv_conf: str) -> Iterator[str]:
    """A fresh namespace; `ip netns exec` shows `resolv_conf` as its /etc/resolv.conf."""
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    name = f"aidns-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    etc = NETNS_ETC / name
    try:
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text(resolv_conf)
        run_in(name, ["ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(etc, ignore_errors=True)
        if NETNS_ETC.exists() and not any(NETNS_ETC.iterdir()):
            NETNS_ETC.rmdir()


def in_netns(name: str, command: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", name, *command]


def run_in(
    name: str, command: Sequence[str], **options: object
) -> subprocess.CompletedProcess[str]:
    options.setdefault("timeout", 30)
    return subprocess.run(in_netns(name, command), capture_output=True, text=True, **options)  # type: ignore[call-overload]
