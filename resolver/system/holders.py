"""Who holds a DNS address: the processes with a socket bound there (Linux /proc, macOS lsof)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from aidns.resolver.endpoints import ListenAddress
from aidns.resolver.procinfo.common import proc_net_address, user_name
from aidns.resolver.procinfo.lsof import parse_lsof_fields
from aidns.resolver.resolvconf import read_text
from aidns.resolver.system.sysfiles import Machine

TCP_LISTEN = 0x0A


@dataclass(frozen=True, slots=True)
class Holder:
    """A process with a socket bound to a DNS address, as far as we may see it."""

    transport: str
    uid: int
    pid: int | None = None
    name: str | None = None
    cmdline: str | None = None

    @property
    def is_aidns(self) -> bool:
        return bool(self.cmdline) and "aidns" in str(self.cmdline) and " serve" in str(self.cmdline)

    def describe(self) -> str:
        if self.pid is None:
            who = user_name(self.uid) or f"uid {self.uid}"
            return f"a process of {who} (not visible to this user)"
        return f"{'aidns' if self.is_aidns else self.name} (pid {self.pid})"


def _covers(bound: str, wanted: str) -> bool:
    """Whether a socket bound to `bound` receives packets sent to `wanted`."""
    a, b = ipaddress.ip_address(bound), ipaddress.ip_address(wanted)
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    if a == b:
        return True
    if a.is_unspecified:
        return a.version == b.version or a.version == 6  # a dual-stack socket takes IPv4 too
    return False


def socket_holders(address: ListenAddress, proc_root: Path = Path("/proc")) -> list[Holder]:
    """Who has a UDP or listening TCP socket on `address` (Linux, from /proc/net)."""
    inodes: dict[int, tuple[str, int]] = {}
    for table in ("udp", "udp6", "tcp", "tcp6"):
        try:
            rows = (proc_root / "net" / table).read_text(errors="replace").splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            try:
                packed, port = proc_net_address(fields[1])
                host = str(ipaddress.ip_address(packed))
                state, uid, inode = int(fields[3], 16), int(fields[7]), int(fields[9])
            except (IndexError, ValueError):
                continue
            if port != address.port or not _covers(host, address.host):
                continue
            if table.startswith("tcp") and state != TCP_LISTEN:
                continue
            if table.startswith("udp") and proc_net_address(fields[2])[1] != 0:
                continue  # a connected client socket that happens to use the port
            inodes[inode] = (table.rstrip("6"), uid)
    owners = _owners(set(inodes), proc_root)
    holders: dict[tuple[int | None, int], Holder] = {}
    for inode, (transport, uid) in inodes.items():
        pid = owners.get(inode)
        key = (pid, uid) if pid is not None else (None, inode)
        if key in holders:
            continue
        name = cmdline = None
        if pid is not None:
            name = read_text(proc_root / str(pid) / "comm").strip() or None
            cmdline = read_text(proc_root / str(pid) / "cmdline").replace("\0", " ").strip() or None
        holders[key] = Holder(transport, uid, pid, name, cmdline)
    return sorted(holders.values(), key=lambda h: (not h.is_aidns, h.pid or 0))


def _owners(inodes: set[int], proc_root: Path) -> dict[int, int]:
    """inode -> pid, for those of `inodes` whose process we may read."""
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    found: dict[int, int] = {}
    if not wanted:
        return found
    try:
        pids = [int(name) for name in os.listdir(proc_root) if name.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = proc_root / str(pid) / "fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            try:
                link = os.readlink(fd_dir / name)
            except OSError:
                continue
            if link in wanted:
                found.setdefault(wanted[link], pid)
        if len(found) == len(wanted):
            break
    return found


def macos_holders(address: ListenAddress, machine: Machine) -> list[Holder]:
    """The same on macOS, from lsof's field output; `ps` gives each one's command line (lsof
    names aidns only as its interpreter)."""
    result = machine.runner(
        ("lsof", "-nP", "-w", f"-iUDP:{address.port}", f"-iTCP:{address.port}", "-FpcuLftPn")
    )
    holders: dict[int, Holder] = {}
    for sock in parse_lsof_fields(result.stdout):
        if sock.local is None or sock.remote is not None or sock.local[1] != address.port:
            continue
        host = "::" if sock.local[0] == "*" else sock.local[0]
        if sock.pid in holders or not _covers(host, address.host):
            continue
        ps = machine.runner(("ps", "-o", "command=", "-p", str(sock.pid)))
        cmdline = ps.stdout.strip() if ps.ok else None
        transport = (sock.protocol or "").lower()
        holders[sock.pid] = Holder(transport, sock.uid or 0, sock.pid, sock.command, cmdline)
    return list(holders.values())


def holders_of(address: ListenAddress, machine: Machine, proc_root: Path) -> list[Holder] | None:
    """Who holds `address` on this platform; None where we cannot tell."""
    if machine.platform.startswith("linux"):
        return socket_holders(address, proc_root)
    if machine.platform == "darwin":
        return macos_holders(address, machine)
    return None
