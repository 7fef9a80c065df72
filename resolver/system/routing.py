"""Doctor checks on the way to aidns: who listens on its addresses, whom the system's DNS
settings ask, and the relays between a program and aidns."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from aidns.resolver.config import Settings
from aidns.resolver.endpoints import ListenAddress
from aidns.resolver.procinfo.tools import ToolKind, default_tools
from aidns.resolver.query import ProcessInfo
from aidns.resolver.resolvconf import (
    RESOLV_CONF,
    RESOLVED_STUBS,
    ResolvConf,
    is_loopback,
    read_text,
)
from aidns.resolver.system.checks import DIRECT_FIX, SETUP_FIX, Check, Status
from aidns.resolver.system.holders import Holder, holders_of, socket_holders
from aidns.resolver.system.macos import macos_default_servers
from aidns.resolver.system.nameserver import Nameserver, aidns_nameservers, probe
from aidns.resolver.system.sysfiles import Machine


def _holder_fix(holder: Holder, address: ListenAddress) -> str:
    name = (holder.name or "").lower()
    if name == "systemd-resolved":
        return f"turn its stub listener off ({DIRECT_FIX}), or give aidns another --listen"
    if name == "dnsmasq":
        return (
            "stop dnsmasq, or make it bind only its own addresses (bind-interfaces, "
            "except-interface=lo), or give aidns another --listen"
        )
    return f"stop {holder.name or 'that process'}, or give aidns another --listen than {address}"


def check_listen(
    settings: Settings, machine: Machine, proc_root: Path
) -> tuple[list[Check], list[Holder]]:
    checks: list[Check] = []
    ours: list[Holder] = []
    for address in settings.listen:
        topic = f"listen {address}"
        holders = holders_of(address, machine, proc_root)
        if holders is None:
            checks.append(
                Check(Status.WARN, topic, f"cannot tell who listens on {machine.platform}")
            )
            continue
        mine = [h for h in holders if h.is_aidns]
        hidden = [h for h in holders if h.pid is None]
        others = [h for h in holders if not h.is_aidns and h.pid is not None]
        if hidden and not mine and not others:
            answer = probe(Nameserver(address.host, address.port))
            who = hidden[0].describe()
            if answer is not None:
                checks.append(
                    Check(
                        Status.WARN,
                        topic,
                        f"{who} answers on {address} ({answer}); it may well be aidns",
                        "run `sudo aidns doctor` to see which program it is",
                    )
                )
                continue
            others = hidden
        if others:
            who = ", ".join(h.describe() for h in others)
            checks.append(
                Check(
                    Status.FAIL,
                    topic,
                    f"{who} holds {address}, so aidns cannot answer there",
                    _holder_fix(others[0], address),
                )
            )
        elif not mine:
            checks.append(
                Check(
                    Status.FAIL,
                    topic,
                    f"nothing listens on {address}",
                    "start aidns: sudo aidns install, or aidns serve",
                )
            )
        else:
            ours += mine
            answer = probe(Nameserver(address.host, address.port))
            if answer is None:
                checks.append(
                    Check(
                        Status.WARN,
                        topic,
                        f"{mine[0].describe()} holds {address} but did not answer a query",
                        "look at its log (journalctl -u aidns)",
                    )
                )
            else:
                checks.append(
                    Check(Status.OK, topic, f"{mine[0].describe()} answers here ({answer})")
                )
    return checks, ours


def resolved_servers(machine: Machine) -> list[str]:
    """systemd-resolved's global DNS= servers, from its config and drop-ins in order."""
    paths = [machine.path("/etc/systemd/resolved.conf")]
    for directory in ("/usr/lib/systemd/resolved.conf.d", "/etc/systemd/resolved.conf.d"):
        found = machine.path(directory)
        if found.is_dir():
            paths += sorted(found.glob("*.conf"))
    servers: list[str] = []
    for path in paths:
        section = ""
        for raw in read_text(path).splitlines():
            line = raw.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line
            elif section == "[Resolve]" and line.startswith("DNS="):
                value = line[4:].split()
                servers = value if value else []  # an empty DNS= resets the list
    return servers


def _server_host(text: str) -> str:
    """`127.0.0.1`, `127.0.0.1:53`, `[::1]:53`, `1.1.1.1#name` -> the address."""
    text = text.split("#", 1)[0]
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    if text.count(":") == 1:
        return text.split(":", 1)[0]
    return text.split("%", 1)[0]


def is_aidns(host: str, servers: Sequence[Nameserver]) -> bool:
    """Whether the address `host` is one of aidns's `servers`."""
    try:
        wanted = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(ipaddress.ip_address(s.host) == wanted for s in servers)


def resolved_asks_aidns(machine: Machine, servers: Sequence[Nameserver]) -> bool:
    """Whether systemd-resolved's DNS= servers name one of aidns's `servers`."""
    return any(is_aidns(_server_host(s), servers) for s in resolved_servers(machine))


def check_system_dns(settings: Settings, machine: Machine) -> Check:
    servers = aidns_nameservers(settings.listen)
    if machine.platform == "darwin":
        found = macos_default_servers(machine)
        where = "macOS (scutil --dns)"
    else:
        found = list(ResolvConf.read(machine.path(RESOLV_CONF)).nameservers)
        where = RESOLV_CONF
    if not found:
        return Check(Status.FAIL, "system DNS", f"{where} names no nameserver", SETUP_FIX)
    first = found[0]
    if is_aidns(first, servers):
        others = [s for s in found[1:] if not is_aidns(s, servers)]
        if others:
            return Check(
                Status.WARN,
                "system DNS",
                f"{where} asks aidns first, but also {', '.join(others)}: when aidns is slow or "
                "down, programs ask those instead and nothing is blocked",
                f"leave only aidns in {where} ({SETUP_FIX})",
            )
        return Check(Status.OK, "system DNS", f"{where} sends queries to aidns ({first})")
    if first in RESOLVED_STUBS:
        if resolved_asks_aidns(machine, servers):
            return Check(
                Status.OK,
                "system DNS",
                f"{where} sends queries to systemd-resolved, which asks aidns",
            )
        return Check(
            Status.FAIL,
            "system DNS",
            f"{where} sends queries to systemd-resolved, which does not ask aidns",
            SETUP_FIX,
        )
    return Check(
        Status.FAIL,
        "system DNS",
        f"{where} sends queries to {first}, not to aidns, so nothing is blocked",
        SETUP_FIX,
    )


def _running(names: set[str], proc_root: Path) -> list[str]:
    found: list[str] = []
    try:
        pids = [name for name in os.listdir(proc_root) if name.isdigit()]
    except OSError:
        return found
    for pid in pids:
        comm = read_text(proc_root / pid / "comm").strip()
        if comm in names and comm not in found:
            found.append(comm)
    return found


def _relay_checks(settings: Settings, machine: Machine, proc_root: Path) -> list[Check]:
    """A relay (a local caching resolver) that resolv.conf names first."""
    checks: list[Check] = []
    servers = aidns_nameservers(settings.listen)
    found = ResolvConf.read(machine.path(RESOLV_CONF)).nameservers
    first = found[0] if found else ""
    if first and not is_aidns(first, servers) and is_loopback(first):
        holders = socket_holders(ListenAddress(first, 53), proc_root)
        catalogue = default_tools()
        for holder in holders:
            info = ProcessInfo(holder.pid, holder.name, cmdline=holder.cmdline)
            tool = catalogue.match(info)
            if tool is not None and tool.kind is ToolKind.RELAY:
                fix = DIRECT_FIX if tool.name == "systemd-resolved" else SETUP_FIX
                checks.append(
                    Check(
                        Status.WARN,
                        "relay",
                        f"programs ask {tool.name} at {first}: if it forwards to aidns, every "
                        f"query arrives as {tool.name} and the program behind it cannot be seen",
                        fix,
                    )
                )
    return checks


def check_relay(settings: Settings, machine: Machine, proc_root: Path) -> list[Check]:
    """Whether queries arrive from the programs themselves or through a system resolver."""
    if machine.platform == "darwin":
        return [
            Check(
                Status.WARN,
                "relay",
                "on macOS most programs resolve through mDNSResponder, so aidns sees them as "
                "mDNSResponder; programs with their own DNS client show up by name",
            )
        ]
    if not machine.platform.startswith("linux"):
        return []
    checks = _relay_checks(settings, machine, proc_root)
    hosts_line = next(
        (
            line.split(":", 1)[1].split()
            for line in read_text(machine.path("/etc/nsswitch.conf")).splitlines()
            if line.strip().startswith("hosts:")
        ),
        [],
    )
    resolved_up = machine.path("/run/systemd/resolve/io.systemd.Resolve").exists() or any(
        socket_holders(ListenAddress(stub, 53), proc_root) for stub in RESOLVED_STUBS
    )
    if "resolve" in hosts_line and resolved_up:
        checks.append(
            Check(
                Status.WARN,
                "relay",
                "glibc programs resolve through systemd-resolved (`resolve` on the hosts: line "
                "of /etc/nsswitch.conf), so aidns sees them as systemd-resolved",
                "drop `resolve [!UNAVAIL=return]` from that line so glibc reads /etc/resolv.conf",
            )
        )
    caches = _running({"nscd", "unscd"}, proc_root)
    if caches:
        checks.append(
            Check(
                Status.WARN,
                "relay",
                f"{caches[0]} runs: it caches glibc lookups and asks for programs, which "
                "aidns then cannot see",
                f"stop {caches[0]}, or set `enable-cache hosts no` in /etc/nscd.conf",
            )
        )
    if not checks:
        checks.append(
            Check(Status.OK, "relay", "no system resolver relays queries: aidns can name programs")
        )
    return checks
