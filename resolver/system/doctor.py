"""`aidns doctor`: checks that the system resolves through aidns, one line each with a fix."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import dns.message

from aidns.resolver.app import build_rules
from aidns.resolver.config import Settings, load_settings
from aidns.resolver.errors import AidnsError, UpstreamError
from aidns.resolver.procinfo.common import proc_net_address, user_name
from aidns.resolver.procinfo.lsof import parse_lsof_fields
from aidns.resolver.procinfo.tools import ToolKind, default_tools
from aidns.resolver.query import ProcessInfo, rcode_name
from aidns.resolver.querylog.schema import DB_NAME
from aidns.resolver.server import ListenAddress
from aidns.resolver.system.setupdns import (
    RESOLV_CONF,
    RESOLVED_STUBS,
    RESOLVED_UPLINKS,
    Machine,
    Nameserver,
    aidns_nameservers,
    probe,
    scutil_default_servers,
)
from aidns.resolver.upstream.pool import AddressFinder, Upstream, UpstreamPool, UpstreamSpec

CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
CAP_SYS_PTRACE = 19
TCP_LISTEN = 0x0A
SETUP_FIX = "sudo aidns setup-dns (or, without a server, sudo aidns hosts apply)"
DIRECT_FIX = "sudo aidns setup-dns --mode systemd-resolved --direct (see the README)"


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Check:
    status: Status
    topic: str
    message: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4}  {self.topic}: {self.message}"
        return text + (f"; fix: {self.fix}" if self.fix else "")


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
            name = _read(proc_root / str(pid) / "comm").strip() or None
            cmdline = _read(proc_root / str(pid) / "cmdline").replace("\0", " ").strip() or None
        holders[key] = Holder(transport, uid, pid, name, cmdline)
    return sorted(holders.values(), key=lambda h: (not h.is_aidns, h.pid or 0))


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""


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


def _holders(address: ListenAddress, machine: Machine, proc_root: Path) -> list[Holder] | None:
    if machine.platform.startswith("linux"):
        return socket_holders(address, proc_root)
    if machine.platform == "darwin":
        return macos_holders(address, machine)
    return None


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
        holders = _holders(address, machine, proc_root)
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
        for raw in _read(path).splitlines():
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


def _is_aidns(host: str, servers: Sequence[Nameserver]) -> bool:
    try:
        wanted = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(ipaddress.ip_address(s.host) == wanted for s in servers)


def macos_default_servers(machine: Machine) -> list[str]:
    return scutil_default_servers(machine.runner(("scutil", "--dns")).stdout)


def _nameservers(path: Path) -> list[str]:
    found: list[str] = []
    for line in _read(path).splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            found.append(fields[1])
    return found


def check_system_dns(settings: Settings, machine: Machine) -> Check:
    servers = aidns_nameservers(settings.listen)
    if machine.platform == "darwin":
        found = macos_default_servers(machine)
        where = "macOS (scutil --dns)"
    else:
        found = _nameservers(machine.path(RESOLV_CONF))
        where = RESOLV_CONF
    if not found:
        return Check(Status.FAIL, "system DNS", f"{where} names no nameserver", SETUP_FIX)
    first = found[0]
    if _is_aidns(first, servers):
        others = [s for s in found[1:] if not _is_aidns(s, servers)]
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
        upstream = resolved_servers(machine)
        if any(_is_aidns(_server_host(s), servers) for s in upstream):
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
        comm = _read(proc_root / pid / "comm").strip()
        if comm in names and comm not in found:
            found.append(comm)
    return found


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
    checks: list[Check] = []
    servers = aidns_nameservers(settings.listen)
    found = _nameservers(machine.path(RESOLV_CONF))
    first = found[0] if found else ""
    if first and not _is_aidns(first, servers) and _is_loopback(first):
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
    hosts_line = next(
        (
            line.split(":", 1)[1].split()
            for line in _read(machine.path("/etc/nsswitch.conf")).splitlines()
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


def _is_loopback(text: str) -> bool:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


async def _ask(
    spec: UpstreamSpec, timeout_s: float, verify: bool | str, find_address: AddressFinder | None
) -> Check:
    topic = f"upstream {spec}"
    wire = dns.message.make_query(".", "NS").to_wire()
    try:
        upstream = Upstream(spec, verify, find_address)
    except AidnsError as exc:
        return Check(Status.FAIL, topic, str(exc), "fix upstream_ca")
    started = time.monotonic()
    try:
        response = await upstream.exchange(wire, timeout_s)
    except UpstreamError as exc:
        return Check(
            Status.FAIL,
            topic,
            f"no answer: {exc}",
            "check the address and that it is reachable, or give another --upstream",
        )
    finally:
        await upstream.aclose()
    elapsed_ms = (time.monotonic() - started) * 1000
    rcode = rcode_name(response[3] & 0x0F)
    if rcode in ("SERVFAIL", "REFUSED"):
        return Check(
            Status.WARN,
            topic,
            f"answered {rcode} in {elapsed_ms:.0f} ms: it refuses or cannot resolve",
            "make sure it serves this machine, or give another --upstream",
        )
    return Check(Status.OK, topic, f"answered {rcode} in {elapsed_ms:.0f} ms")


async def _ask_all(settings: Settings) -> list[Check]:
    verify: bool | str = str(settings.upstream_ca) if settings.upstream_ca else True
    timeout_s = settings.upstream_timeout_s
    bootstrap = UpstreamPool(settings.bootstrap, timeout_s) if settings.bootstrap else None
    find = bootstrap.find_address if bootstrap else None
    try:
        return list(
            await asyncio.gather(
                *(_ask(spec, timeout_s, verify, find) for spec in settings.upstreams)
            )
        )
    finally:
        if bootstrap is not None:
            await bootstrap.aclose()


def check_upstreams(settings: Settings, machine: Machine, proc_root: Path) -> list[Check]:
    checks = asyncio.run(_ask_all(settings))
    checks += [
        Check(Status.WARN, "bootstrap", warning, "aidns serve --bootstrap IP, or upstream by IP")
        for warning in settings.warnings()
    ]
    servers = aidns_nameservers(settings.listen)
    resolved_asks_aidns = any(
        _is_aidns(_server_host(s), servers) for s in resolved_servers(machine)
    )
    for index, spec in enumerate(settings.upstreams):
        if spec.host in RESOLVED_STUBS and resolved_asks_aidns:
            checks[index] = Check(
                Status.FAIL,
                f"upstream {spec}",
                "is systemd-resolved, which asks aidns: queries loop",
                "give aidns the real upstream with --upstream or in its config",
            )
    return checks


def check_lists(settings: Settings) -> list[Check]:
    try:
        rules = build_rules(settings)
    except AidnsError as exc:
        return [Check(Status.FAIL, "lists", str(exc), "fix that file")]
    enabled = [d for d in rules.lists if d.enabled and len(d)]
    checks = [
        Check(Status.WARN, "lists", problem, "fix or remove that entry")
        for problem in rules.problems
    ]
    if rules.matcher.rule_count == 0:
        checks.append(
            Check(
                Status.FAIL,
                "lists",
                "no list or rule is on: nothing would be blocked",
                "aidns lists enable NAME, or aidns block NAME",
            )
        )
    else:
        checks.append(
            Check(
                Status.OK,
                "lists",
                f"{len(enabled)} lists and rule sets on, {rules.matcher.rule_count} rules",
            )
        )
    return checks


def check_query_log(settings: Settings) -> Check:
    if not settings.query_log.enabled:
        return Check(Status.OK, "query log", "off (query_log: false)")
    directory = settings.data_dir
    database = directory / DB_NAME
    probe_dir = directory
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    who = user_name(os.geteuid()) or f"uid {os.geteuid()}"
    fix = f"make {directory} writable by the user aidns runs as, or give another --data-dir"
    try:
        with tempfile.NamedTemporaryFile(dir=probe_dir, prefix=".aidns-doctor-"):
            pass
    except OSError as exc:
        return Check(
            Status.FAIL, "query log", f"{probe_dir} is not writable by {who}: {exc.strerror}", fix
        )
    if database.exists() and not os.access(database, os.R_OK | os.W_OK):
        return Check(Status.FAIL, "query log", f"{database} is not writable by {who}", fix)
    state = "writable" if database.exists() else "not there yet; it can be created"
    return Check(Status.OK, "query log", f"{database} is {state} (checked as {who})")


def _status_fields(pid: int | str, proc_root: Path) -> dict[str, str]:
    fields = {}
    for line in _read(proc_root / str(pid) / "status").splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _hidepid(pid: int | str, proc_root: Path) -> str | None:
    for line in _read(proc_root / str(pid) / "mountinfo").splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == "/proc":
            for option in line.split(" - ", 1)[-1].split()[-1].split(","):
                if option.startswith("hidepid=") and option not in ("hidepid=0", "hidepid=off"):
                    return option
    return None


def check_attribution(
    settings: Settings, servers: Sequence[Holder], machine: Machine, proc_root: Path
) -> Check:
    if not settings.attribution:
        return Check(Status.WARN, "attribution", "off in the config (attribution: false)")
    if machine.platform == "darwin":
        if servers or os.geteuid() == 0:
            return Check(Status.OK, "attribution", "aidns runs as root and can name programs")
        return Check(
            Status.WARN,
            "attribution",
            "only root can see other users' sockets on macOS",
            "run aidns as root (sudo aidns install does)",
        )
    if not machine.platform.startswith("linux"):
        return Check(Status.WARN, "attribution", f"not available on {machine.platform}")
    subject: int | str = servers[0].pid if servers and servers[0].pid else "self"
    status = _status_fields(subject, proc_root)
    try:
        caps = int(status.get("CapEff", "0"), 16)
        uid = int(status.get("Uid", "0").split()[1])
    except (ValueError, IndexError):
        caps, uid = 0, os.geteuid()
    who = f"aidns (pid {subject}" if subject != "self" else "this doctor (aidns is not running"
    who += f", user {user_name(uid) or uid})"
    can_list = bool(caps & (1 << CAP_DAC_READ_SEARCH | 1 << CAP_DAC_OVERRIDE))
    can_read = bool(caps & (1 << CAP_SYS_PTRACE))
    hidden = _hidepid(subject, proc_root)
    grant = (
        "run it as root, or with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH "
        "(the unit `sudo aidns install` writes grants both)"
    )
    if hidden:
        return Check(
            Status.WARN,
            "attribution",
            f"/proc is mounted with {hidden}: {who} cannot see other users' processes",
            "remount /proc without hidepid, or add aidns's user to its gid= group",
        )
    if can_list and can_read:
        return Check(
            Status.OK,
            "attribution",
            f"{who} may read every process's sockets (CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH)",
        )
    missing = [
        name
        for name, ok in (("CAP_DAC_READ_SEARCH", can_list), ("CAP_SYS_PTRACE", can_read))
        if not ok
    ]
    return Check(
        Status.WARN,
        "attribution",
        f"{who} lacks {' and '.join(missing)}: programs of other users are logged with their "
        "uid only",
        grant,
    )


def run_doctor(
    machine: Machine,
    *,
    config_path: Path | None = None,
    data_dir: Path | None = None,
    listen: Sequence[str] = (),
    upstream: Sequence[str] = (),
    proc_root: Path = Path("/proc"),
) -> list[Check]:
    """Every check, in the order a query meets the things they check."""
    try:
        settings = load_settings(
            config_path=config_path,
            data_dir=data_dir,
            listen=listen,
            upstream=upstream,
            resolv_conf=(machine.path(RESOLV_CONF), machine.path(RESOLVED_UPLINKS)),
        )
    except AidnsError as exc:
        return [Check(Status.FAIL, "config", str(exc), "fix the file or flag it names")]
    checks = [
        Check(
            Status.OK,
            "config",
            f"{settings.config_path or 'no config file (defaults)'}; data dir {settings.data_dir}",
        )
    ]
    listening, servers = check_listen(settings, machine, proc_root)
    checks += listening
    checks.append(check_system_dns(settings, machine))
    checks += check_relay(settings, machine, proc_root)
    checks += check_upstreams(settings, machine, proc_root)
    checks += check_lists(settings)
    checks.append(check_query_log(settings))
    checks.append(check_attribution(settings, servers, machine, proc_root))
    return checks


def healthy(checks: Sequence[Check]) -> bool:
    return not any(check.status is Status.FAIL for check in checks)


def default_machine() -> Machine:
    return Machine(Path("/"), sys.platform)
