"""`aidns setup-dns`: point the system's resolver at aidns, record each change, and revert it.

`setup_dns` goes in steps: plan what to write and run, preview it for a person, record it
(before anything changes, so that a failure half-way can be reverted), then apply it."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aidns.resolver.config import Settings, load_settings, resolve_data_dir
from aidns.resolver.discovery import REMEMBERED_UPSTREAMS
from aidns.resolver.endpoints import parse_upstream
from aidns.resolver.errors import AidnsError, ConfigError
from aidns.resolver.resolvconf import RESOLVED_STUBS
from aidns.resolver.system.dnsmodes import (
    Mode,
    ModeChanges,
    detect_mode,
    mode_changes,
    system_nameservers,
)
from aidns.resolver.system.nameserver import Nameserver, aidns_nameservers, probe
from aidns.resolver.system.sysfiles import (
    FileState,
    Machine,
    Runner,
    digest,
    replace_file,
    shell_line,
)

RECORD_NAME = "setup-dns.json"


@dataclass(slots=True)
class Report:
    """What setup-dns or --revert did, or would do, in lines for a person."""

    lines: list[str] = field(default_factory=list)
    mode: Mode | None = None

    def say(self, line: str) -> None:
        self.lines.append(line)


@dataclass(frozen=True, slots=True)
class SetupPlan:
    """Everything setup-dns is to change, decided before anything is: the mode's changes plus
    the upstreams to remember, each file's state before, and what was decided, in lines."""

    mode: Mode
    direct: bool
    decisions: list[str]
    files: list[tuple[Path, bytes | None]]  # None: a directory to create
    befores: list[FileState]
    changes: ModeChanges


def record_path(data_dir: Path) -> Path:
    return data_dir / RECORD_NAME


def read_record(data_dir: Path) -> dict[str, Any] | None:
    path = record_path(data_dir)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AidnsError(f"cannot read {path}: {exc}") from None
    if not isinstance(record, dict):
        raise AidnsError(f"{path} is not a setup-dns record")
    return record


def _write_record(data_dir: Path, record: dict[str, Any]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    replace_file(record_path(data_dir), json.dumps(record, indent=1).encode(), mode=0o600)


def _load(
    machine: Machine,
    config_path: Path | None,
    data_dir: Path | None,
    listen: Sequence[str],
) -> Settings:
    config = config_path
    if config is None and not machine.live and machine.path("/etc/aidns/config.yaml").exists():
        config = machine.path("/etc/aidns/config.yaml")
    # aidns's upstreams as configured or remembered, never the system's: we are about to
    # change those, and pick them below ourselves.
    return load_settings(
        config_path=config,
        data_dir=resolve_data_dir(config, data_dir),
        listen=listen,
        resolv_conf=(),
    )


def _refuse_a_second_setup(data_dir: Path) -> None:
    existing = read_record(data_dir)
    if existing is not None:
        raise AidnsError(
            f"setup-dns already pointed this system at aidns ({existing.get('mode')}, "
            f"{existing.get('created')}; record in {record_path(data_dir)}): run "
            "`aidns setup-dns --revert` first"
        )


def _answering(
    servers: list[Nameserver],
    probe_server: Callable[[Nameserver], str | None],
    force: bool,
    decisions: list[str],
) -> list[Nameserver]:
    """Those of aidns's `servers` that answer DNS; all of them when none does but `force`."""
    answering = [server for server in servers if probe_server(server) is not None]
    if not answering and not force:
        raise AidnsError(
            f"nothing answers DNS on {', '.join(map(str, servers))}, so pointing the system "
            "there would stop all lookups: start aidns first (`sudo aidns install`, or "
            "`aidns serve`), or give --force"
        )
    for server in servers:
        if server not in answering and answering:
            decisions.append(f"left out {server}: nothing answers DNS there")
    return answering or servers


def _upstreams_to_keep(
    settings: Settings, machine: Machine, mode: Mode, given: Sequence[str]
) -> tuple[list[str] | None, str]:
    """(servers to remember, or None when aidns already has its own; what was decided)."""
    if given:
        try:
            return [str(parse_upstream(text)) for text in given], "given with --upstream"
        except ConfigError as exc:
            raise ConfigError(f"--upstream: {exc}") from None
    source = settings.upstream_source
    if not source.startswith("built-in default"):
        shown = ", ".join(map(str, settings.upstreams))
        if mode is Mode.RESOLVED and any(u.host in RESOLVED_STUBS for u in settings.upstreams):
            raise AidnsError(
                f"aidns's upstream {shown} is systemd-resolved, which is about to ask aidns: "
                "queries would loop; set the real upstream in aidns's config first"
            )
        return None, f"aidns keeps its own upstreams {shown} ({source})"
    found = system_nameservers(machine)
    if not found:
        raise AidnsError(
            "found no upstream nameserver to keep (the system's resolver settings name only "
            "loopback addresses): give the real one with --upstream, e.g. your router's "
            "address, or tls://9.9.9.9#dns.quad9.net"
        )
    specs = [str(parse_upstream(f"[{s}]" if ":" in s else s)) for s in found]
    return specs, "the system's nameservers"


def plan_setup(
    machine: Machine,
    settings: Settings,
    *,
    mode: Mode | None,
    direct: bool,
    upstream: Sequence[str],
    force: bool,
    probe_server: Callable[[Nameserver], str | None],
) -> SetupPlan:
    """Decide the mode, the servers the system is to ask, the upstreams aidns keeps, and the
    files and commands that do it. Changes nothing."""
    decisions: list[str] = []
    why = "given with --mode"
    if mode is None:
        mode, why = detect_mode(machine)
    decisions.append(f"mode: {mode} ({why})")
    if direct and mode is not Mode.RESOLVED:
        raise AidnsError("--direct is for systemd-resolved only: the other modes are direct")
    servers = _answering(aidns_nameservers(settings.listen), probe_server, force, decisions)
    keep, decided = _upstreams_to_keep(settings, machine, mode, upstream)
    changes = mode_changes(machine, mode, servers, direct)
    files = list(changes.files)
    if keep is not None:
        remembered = settings.data_dir / REMEMBERED_UPSTREAMS
        files.append((remembered, "".join(f"{server}\n" for server in keep).encode()))
        decisions.append(f"upstreams: {', '.join(keep)} ({decided}), kept in {remembered}")
    else:
        decisions.append(f"upstreams: {decided}")
    befores = [FileState.of(path) for path, _ in files]
    return SetupPlan(mode, direct, decisions, files, befores, changes)


def _check_writable(path: Path) -> None:
    """Refuse before changing anything when a file could not be written."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK):
        raise AidnsError(
            f"{path} cannot be changed by this user (uid {os.getuid()}), so nothing was: "
            "run `sudo aidns setup-dns`"
        )


def _verb(present: str, past: str, dry_run: bool) -> str:
    return f"would {present}" if dry_run else past


def _command_lines(
    commands: Sequence[Sequence[str]], runs: bool, root: object, dry_run: bool
) -> list[str]:
    """One line per command: run (or to be), or not run because the tree is not the live one."""
    if runs:
        return [f"{_verb('run', 'ran', dry_run)}: {shell_line(command)}" for command in commands]
    return [f"not run under --root {root}: {shell_line(command)}" for command in commands]


def _runs_commands(machine: Machine, mode: Mode) -> bool:
    return machine.live or mode is Mode.MACOS


def preview(plan: SetupPlan, machine: Machine, dry_run: bool) -> list[str]:
    """What applying `plan` does, or would do: each file with its new text, each command."""
    lines: list[str] = []
    for (path, data), before in zip(plan.files, plan.befores, strict=True):
        if data is None:
            if before.kind == "absent":
                lines.append(f"{_verb('create', 'created', dry_run)} directory {path}")
            continue
        lines.append(f"{_verb('write', 'wrote', dry_run)} {path} (was {before.describe()}):")
        lines += [f"    | {line}" for line in data.decode("utf-8", "replace").splitlines()]
    runs = _runs_commands(machine, plan.mode)
    return lines + _command_lines(plan.changes.commands, runs, machine.root, dry_run)


def new_record(plan: SetupPlan, machine: Machine) -> dict[str, Any]:
    """What `revert_dns` needs to undo `plan`: each file as it was, the commands that undo."""
    return {
        "version": 1,
        "mode": str(plan.mode),
        "direct": plan.direct,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "root": str(machine.root),
        "files": [{"before": before.to_json(), "written": None} for before in plan.befores],
        "undo": [list(command) for command in plan.changes.undo_commands],
        "macos": plan.changes.macos,
    }


def _make_directory(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AidnsError(f"cannot create {path}: {exc.strerror}") from None


def _run_all(runner: Runner, commands: Sequence[Sequence[str]]) -> None:
    for command in commands:
        result = runner(tuple(command))
        if not result.ok:
            raise AidnsError(f"`{shell_line(command)}` failed: {result.why()}")


def apply_plan(plan: SetupPlan, machine: Machine, record: dict[str, Any], data_dir: Path) -> None:
    """Write the files and run the commands, noting each file written in the record; on a
    failure, put everything back and drop the record."""
    try:
        for index, (path, data) in enumerate(plan.files):
            if data is None:
                _make_directory(path)
                continue
            replace_file(path, data, follow_symlinks=False)
            record["files"][index]["written"] = digest(data)
        _write_record(data_dir, record)
        if _runs_commands(machine, plan.mode):
            _run_all(machine.runner, plan.changes.commands)
    except AidnsError:
        _restore(record, machine, Report())
        record_path(data_dir).unlink(missing_ok=True)
        raise


def setup_dns(
    machine: Machine,
    *,
    config_path: Path | None = None,
    data_dir: Path | None = None,
    listen: Sequence[str] = (),
    upstream: Sequence[str] = (),
    mode: Mode | None = None,
    direct: bool = False,
    dry_run: bool = False,
    force: bool = False,
    probe_server: Callable[[Nameserver], str | None] = probe,
) -> Report:
    """Make the system resolve through aidns. The system's upstreams are kept for aidns
    first, and every change is recorded so that `revert_dns` undoes it exactly."""
    settings = _load(machine, config_path, data_dir, listen)
    directory = settings.data_dir
    _refuse_a_second_setup(directory)
    plan = plan_setup(
        machine,
        settings,
        mode=mode,
        direct=direct,
        upstream=upstream,
        force=force,
        probe_server=probe_server,
    )
    if not dry_run:
        for path in [directory, *(path for path, _ in plan.files)]:
            _check_writable(path)
    report = Report(list(plan.decisions), plan.mode)
    report.lines += preview(plan, machine, dry_run)
    if dry_run:
        return report
    record = new_record(plan, machine)
    _write_record(directory, record)  # first: a failure half-way can still be reverted
    apply_plan(plan, machine, record, directory)
    report.say(f"recorded in {record_path(directory)}; `aidns setup-dns --revert` undoes it")
    return report


def _restore(
    record: dict[str, Any], machine: Machine, report: Report, dry_run: bool = False
) -> list[str]:
    """Put back each service and file; one that fails does not stop the rest. Returns what
    failed."""
    failed: list[str] = []
    for service, servers in record.get("macos", {}).items():
        command = ("networksetup", "-setdnsservers", service, *(servers or ["Empty"]))
        report.say(f"{_verb('run', 'ran', dry_run)}: {shell_line(command)}")
        if not dry_run:
            try:
                _run_all(machine.runner, [command])
            except AidnsError as exc:
                failed.append(str(exc))
    for entry in reversed(record.get("files", [])):
        before = FileState.from_json(entry["before"])
        path = Path(before.path)
        written = entry.get("written")
        if written and path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError):
                if digest(path.read_bytes()) != written:
                    report.say(f"{path} changed since setup-dns; restoring it anyway")
        if before.kind == "dir":
            continue
        report.say(f"{_verb('restore', 'restored', dry_run)} {path} ({before.describe()})")
        if not dry_run:
            try:
                before.restore()
            except (AidnsError, OSError) as exc:
                failed.append(str(exc))
    return failed


def revert_dns(
    machine: Machine,
    *,
    config_path: Path | None = None,
    data_dir: Path | None = None,
    dry_run: bool = False,
) -> Report:
    """Undo what setup-dns recorded: files back byte for byte, services as they were."""
    directory = resolve_data_dir(config_path, data_dir)
    record = read_record(directory)
    if record is None:
        raise AidnsError(
            f"setup-dns has not changed this system: there is no record in {record_path(directory)}"
        )
    report = Report(mode=Mode(str(record.get("mode"))))
    failed = _restore(record, machine, report, dry_run)
    if failed:
        raise AidnsError(
            f"could not put everything back ({'; '.join(failed)}); the record stays in "
            f"{record_path(directory)}: fix that, then run --revert again"
        )
    live = Path(str(record.get("root", "/"))).resolve() == Path("/")
    runs = live or report.mode is Mode.MACOS
    undo = [tuple(command) for command in record.get("undo", [])]
    report.lines += _command_lines(undo, runs, record.get("root"), dry_run)
    if dry_run:
        return report
    if runs:
        _run_all(machine.runner, undo)
    record_path(directory).unlink(missing_ok=True)
    report.say("reverted: the system resolves as it did before setup-dns")
    return report
