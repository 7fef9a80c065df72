"""Doctor checks on what aidns needs to do its work: upstreams that answer, lists that load,
a query log it may write, and the rights to name programs."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import dns.message

from aidns.resolver.config import Settings
from aidns.resolver.datafiles import process_alive, read_status
from aidns.resolver.endpoints import UpstreamSpec
from aidns.resolver.errors import AidnsError, UpstreamError
from aidns.resolver.procinfo.common import user_name
from aidns.resolver.query import rcode_name
from aidns.resolver.querylog.schema import DB_NAME
from aidns.resolver.resolvconf import RESOLVED_STUBS, read_text
from aidns.resolver.rules.ruleset import build_rule_set
from aidns.resolver.system.checks import Check, Status
from aidns.resolver.system.holders import Holder
from aidns.resolver.system.nameserver import aidns_nameservers
from aidns.resolver.system.routing import resolved_asks_aidns
from aidns.resolver.system.sysfiles import Machine
from aidns.resolver.upstream.bootstrap import AddressFinder
from aidns.resolver.upstream.pool import Upstream, UpstreamPool

CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
CAP_SYS_PTRACE = 19


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
    loops = resolved_asks_aidns(machine, aidns_nameservers(settings.listen))
    for index, spec in enumerate(settings.upstreams):
        if spec.host in RESOLVED_STUBS and loops:
            checks[index] = Check(
                Status.FAIL,
                f"upstream {spec}",
                "is systemd-resolved, which asks aidns: queries loop",
                "give aidns the real upstream with --upstream or in its config",
            )
    return checks


def check_lists(settings: Settings) -> list[Check]:
    try:
        rules = build_rule_set(settings)
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


def check_server_errors(settings: Settings) -> list[Check]:
    """What the running aidns says is wrong in its status file, if it runs."""
    found = read_status(settings.data_dir)
    if not found or not process_alive(int(found.get("pid", 0))):
        return []
    return [
        Check(Status.FAIL, "server", f"the running aidns says: {error}", "see aidns's log")
        for error in found.get("errors", [])
    ]


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
    for line in read_text(proc_root / str(pid) / "status").splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _hidepid(pid: int | str, proc_root: Path) -> str | None:
    for line in read_text(proc_root / str(pid) / "mountinfo").splitlines():
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
