"""`aidns install`/`uninstall`: the systemd unit or launchd daemon running `aidns serve`."""

from __future__ import annotations

import os
import plistlib
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aidns.resolver.config import resolve_data_dir
from aidns.resolver.configkeys import starter_config
from aidns.resolver.errors import AidnsError
from aidns.resolver.system.setupdns import read_record
from aidns.resolver.system.sysfiles import Runner, replace_file, run_command, shell_line, under

UNIT_NAME = "aidns.service"
UNIT_PATH = "/etc/systemd/system/aidns.service"
LAUNCHD_LABEL = "org.aidns.aidns"
PLIST_PATH = f"/Library/LaunchDaemons/{LAUNCHD_LABEL}.plist"
CONFIG_PATH = "/etc/aidns/config.yaml"
DATA_DIR = "/var/lib/aidns"
LOG_PATH = "/var/log/aidns.log"
SHIPPED_EXECUTABLE = "/usr/local/bin/aidns"  # the path in the unit and plist in the repository
OPEN_FILES_LINUX = 65536
OPEN_FILES_MACOS = 10240  # OPEN_MAX, within any Mac's kern.maxfilesperproc
STARTER_CONFIG = starter_config(
    """\
# aidns config: every key below is at its default; remove the "# " to change one. The
# README's table says the same. Without `upstream:`, aidns keeps the system's nameservers
# from its first start in /var/lib/aidns/upstreams.remembered (`aidns setup-dns` saves them
# there too).
"""
)

UNIT_TEMPLATE = """\
# aidns: a forwarding DNS sinkhole for this machine, focused on AI tools' telemetry.
# `aidns install` writes this file to /etc/systemd/system/aidns.service with ExecStart set to
# where aidns is installed, and enables it; `aidns uninstall` disables and removes it.

[Unit]
Description=aidns DNS sinkhole for AI tools' telemetry
Wants=nss-lookup.target
Before=nss-lookup.target
After=network.target

[Service]
# Ready once it listens; pings the watchdog while every listener is alive, or is restarted.
Type=notify
NotifyAccess=main
WatchdogSec=30s
ExecStart={executable} serve
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2s
Environment=AIDNS_CONFIG=/etc/aidns/config.yaml AIDNS_DATA_DIR=/var/lib/aidns
# Open files: TCP clients (tcp_max_clients) may use all but 64, which are kept for upstream
# sockets and files, so that forwarding never runs out. aidns also raises its soft limit to
# the hard one itself.
LimitNOFILE={open_files}

# An unprivileged user made up at each start; /var/lib/aidns (the rules, the query log)
# belongs to it. /etc/aidns is the config, read-only to the service.
DynamicUser=yes
StateDirectory=aidns
ConfigurationDirectory=aidns
UMask=0077

# Port 53 needs CAP_NET_BIND_SERVICE. Naming the program behind each query means reading
# other users' /proc/PID/fd: listing that directory needs CAP_DAC_READ_SEARCH, reading its
# links needs CAP_SYS_PTRACE. Remove those two from both lines to run without attribution
# (queries are then logged with their uid only).
AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_SYS_PTRACE CAP_DAC_READ_SEARCH
CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_SYS_PTRACE CAP_DAC_READ_SEARCH

NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
# Netlink is sock_diag, which finds a query's socket; AF_UNIX is the journal.
RestrictAddressFamilies=AF_INET AF_INET6 AF_NETLINK AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
# CAP_SYS_PTRACE is for /proc only: no ptrace(2), no reading other processes' memory.
SystemCallFilter=~@debug
SystemCallErrorNumber=EPERM

# Left out on purpose, because each would stop attribution:
#   ProtectProc=invisible (or noaccess, ptraceable): hides other users' processes in /proc.
#   ProcSubset=pid: hides /proc/net, the socket table used where sock_diag is missing.
#   PrivateUsers=yes: the capabilities would hold only inside a user namespace of the
#     service's own, not over the host's processes.
#   PrivateNetwork=yes, IPAddressDeny=: aidns answers on loopback and asks the upstreams.
#   PrivatePIDs=yes: a PID namespace of its own would show no other process at all.

[Install]
WantedBy=multi-user.target
"""


def render_unit(executable: str = SHIPPED_EXECUTABLE) -> str:
    return UNIT_TEMPLATE.format(executable=executable, open_files=OPEN_FILES_LINUX)


def launchd_plist(executable: str = SHIPPED_EXECUTABLE) -> dict[str, object]:
    """A LaunchDaemon: runs as root at boot (attribution on macOS needs root), restarted if it
    exits, its log lines in /var/log/aidns.log."""
    return {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": [executable, "serve"],
        "EnvironmentVariables": {"AIDNS_CONFIG": CONFIG_PATH, "AIDNS_DATA_DIR": DATA_DIR},
        "RunAtLoad": True,
        "KeepAlive": True,
        "ThrottleInterval": 5,
        "SoftResourceLimits": {"NumberOfFiles": OPEN_FILES_MACOS},
        "StandardOutPath": LOG_PATH,
        "StandardErrorPath": LOG_PATH,
    }


def render_plist(executable: str = SHIPPED_EXECUTABLE) -> bytes:
    return plistlib.dumps(launchd_plist(executable), fmt=plistlib.FMT_XML, sort_keys=False)


def find_executable() -> str:
    """The `aidns` command this Python runs, for ExecStart; an absolute path."""
    beside = Path(sys.executable).parent / "aidns"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("aidns")
    if found is None:
        raise AidnsError(
            "cannot find the `aidns` command to run at boot; install aidns (pip install .) "
            "or give its path with --executable"
        )
    return str(Path(found).absolute())


@dataclass(frozen=True, slots=True)
class Step:
    """One thing install or uninstall does: write a file, remove one, or run a command."""

    kind: str  # "write", "remove", "run"
    path: Path | None = None
    data: bytes = b""
    mode: int = 0o644
    argv: tuple[str, ...] = ()
    only_if_missing: bool = False
    note: str = ""

    def describe(self, dry_run: bool = False) -> str:
        verb = {"run": "run", "write": "write", "remove": "remove"}[self.kind]
        if not dry_run:
            verb = {"run": "ran", "write": "wrote", "remove": "removed"}[self.kind]
        if self.kind == "run":
            return f"{'would ' if dry_run else ''}{verb}: {shell_line(self.argv)}"
        what = f"{'would ' if dry_run else ''}{verb} {self.path}"
        if self.kind == "write":
            what += f" ({len(self.data)} bytes, mode {self.mode:o})"
        return what + (f" ({self.note})" if self.note else "")


@dataclass(slots=True)
class Plan:
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _is_live(root: Path) -> bool:
    return root.resolve() == Path("/")


def _systemctl(root: Path, *args: str) -> tuple[str, ...]:
    """On the running system; under another root, systemctl's offline mode, which only
    creates or removes the enablement links inside that tree."""
    if _is_live(root):
        return ("systemctl", *args)
    return ("systemctl", f"--root={root}", *(a for a in args if a != "--now"))


def _home_warning(executable: str) -> list[str]:
    for home in ("/home/", "/root/", "/run/user/"):
        if str(Path(executable).resolve()).startswith(home):
            return [
                f"{executable} is under {home.rstrip('/')}: the service's own user may not "
                "reach it there. Install aidns system-wide (e.g. `sudo pip install .` into "
                "/usr/local) before relying on the service."
            ]
    return []


def plan_install(root: Path, platform: str, executable: str) -> Plan:
    live = _is_live(root)
    config = under(root, CONFIG_PATH)
    starter = Step("write", config, STARTER_CONFIG.encode(), only_if_missing=True, note="starter")
    if platform.startswith("linux"):
        if live and not Path("/run/systemd/system").is_dir():
            raise AidnsError(
                "systemd is not running on this machine (no /run/systemd/system): run "
                "`aidns serve` under your own init system instead"
            )
        unit = Step("write", under(root, UNIT_PATH), render_unit(executable).encode())
        plan = Plan([unit, starter], _home_warning(executable))
        if live:
            plan.steps.append(Step("run", argv=_systemctl(root, "daemon-reload")))
        if live or shutil.which("systemctl"):
            plan.steps.append(Step("run", argv=_systemctl(root, "enable", "--now", UNIT_NAME)))
        return plan
    if platform == "darwin":
        plist = under(root, PLIST_PATH)
        plan = Plan([Step("write", plist, render_plist(executable)), starter])
        if live:
            plan.steps.append(Step("run", argv=("launchctl", "bootstrap", "system", str(plist))))
        return plan
    raise AidnsError(
        f"aidns install knows systemd (Linux) and launchd (macOS), not {platform}: run "
        "`aidns serve` under this system's service manager"
    )


def plan_uninstall(root: Path, platform: str) -> Plan:
    """Stop and remove the service; the config and the data dir stay."""
    live = _is_live(root)
    kept = [f"kept {under(root, CONFIG_PATH).parent} and {under(root, DATA_DIR)}: remove by hand"]
    if platform.startswith("linux"):
        plan = Plan(notes=kept)
        if live or shutil.which("systemctl"):
            plan.steps.append(Step("run", argv=_systemctl(root, "disable", "--now", UNIT_NAME)))
        plan.steps.append(Step("remove", under(root, UNIT_PATH)))
        if live:
            plan.steps.append(Step("run", argv=_systemctl(root, "daemon-reload")))
        return plan
    if platform == "darwin":
        plan = Plan(notes=kept)
        if live:
            plan.steps.append(Step("run", argv=("launchctl", "bootout", f"system/{LAUNCHD_LABEL}")))
        plan.steps.append(Step("remove", under(root, PLIST_PATH)))
        return plan
    raise AidnsError(f"aidns uninstall knows systemd (Linux) and launchd (macOS), not {platform}")


def carry_out(
    plan: Plan,
    *,
    dry_run: bool = False,
    runner: Runner = run_command,
    say: Callable[[str], None] = lambda line: None,
) -> None:
    """Do each step in order, saying what it did; stop at the first that fails."""
    for step in plan.steps:
        if step.kind == "write" and step.path is not None:
            if step.only_if_missing and step.path.exists():
                say(f"kept {step.path}: it exists")
                continue
            if not dry_run:
                _make_parent(step.path)
                replace_file(step.path, step.data, follow_symlinks=False, mode=step.mode)
        elif step.kind == "remove" and step.path is not None:
            if not step.path.exists():
                say(f"nothing at {step.path}")
                continue
            if not dry_run:
                try:
                    step.path.unlink()
                except OSError as exc:
                    raise AidnsError(f"cannot remove {step.path}: {exc.strerror}") from None
        elif step.kind == "run" and not dry_run:
            result = runner(step.argv)
            if not result.ok:
                raise AidnsError(f"`{shell_line(step.argv)}` failed: {result.why()}")
        say(step.describe(dry_run))
    for note in plan.notes:
        say(note)


def install_service(
    root: Path,
    platform: str,
    executable: str | None,
    *,
    dry_run: bool = False,
    say: Callable[[str], None] = lambda line: None,
) -> None:
    """Install and start the service that runs `executable` (this aidns by default) at boot,
    saying each step as it is done."""
    plan = plan_install(root, platform, executable or find_executable())
    carry_out(plan, dry_run=dry_run, say=say)


def uninstall_service(
    root: Path,
    platform: str,
    *,
    config_path: Path | None = None,
    data_dir: Path | None = None,
    force: bool = False,
    dry_run: bool = False,
    say: Callable[[str], None] = lambda line: None,
) -> None:
    """Stop and remove the service, saying each step as it is done; refused while setup-dns
    points the system at aidns, unless `force`."""
    record = read_record(resolve_data_dir(config_path, data_dir))
    if record is not None and not force:
        raise AidnsError(
            f"the system still resolves through aidns ({record.get('mode')}): without it "
            "every lookup would fail. Run `sudo aidns setup-dns --revert` first, or give "
            "--force"
        )
    carry_out(plan_uninstall(root, platform), dry_run=dry_run, say=say)


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AidnsError(f"cannot create {path.parent}: {exc.strerror}") from None
