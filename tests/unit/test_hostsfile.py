from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aidns.cli.main import app
from aidns.resolver.config import QueryLogConfig, load_settings
from aidns.resolver.errors import AidnsError
from aidns.resolver.query import Action, Decision, ProcessInfo
from aidns.resolver.querylog.schema import DB_NAME
from aidns.resolver.querylog.writer import QueryLog
from aidns.resolver.replies import BlockResponse
from aidns.resolver.system.hostsfile import (
    BEGIN,
    BEGIN_ADDED_BREAK,
    END,
    HostsEntries,
    apply_hosts,
    backup_path,
    flush_cache,
    remove_hosts,
    sinkhole_entries,
    with_block,
    without_block,
)
from aidns.resolver.system.sysfiles import CommandResult

from .helpers import make_query

runner = CliRunner()
ENTRIES = HostsEntries(names=["telemetry.lmstudio.ai", "o1.ingest.sentry.io"], sources=["x"])
OTHER = HostsEntries(names=["stats.vllm.ai"], sources=["y"])

HOSTS_FILES = {
    "empty": b"",
    "lf": b"127.0.0.1\tlocalhost\n::1 localhost ip6-localhost\n# my printer\n192.168.1.9 printer\n",
    "crlf": b"127.0.0.1 localhost\r\n# comment\r\n10.0.0.2 nas.lan nas\r\n",
    "no-final-break": b"127.0.0.1 localhost\n10.0.0.2 nas",
    "crlf-no-final-break": b"127.0.0.1 localhost\r\n10.0.0.2 nas",
    "blank-lines-at-end": b"127.0.0.1 localhost\n\n\n",
    "cr-only": b"127.0.0.1 localhost\r10.0.0.2 nas\r",
    "one-line-no-break": b"127.0.0.1 localhost",
    "latin-1-comment": b"# Rechner f\xfcr Drucker\n10.0.0.3 drucker\n",
}


@pytest.mark.parametrize("name", HOSTS_FILES)
def test_apply_then_remove_gives_back_every_byte(name: str) -> None:
    original = HOSTS_FILES[name]
    applied = with_block(original, ENTRIES)
    assert without_block(applied) == original
    assert with_block(applied, ENTRIES) == applied  # idempotent
    replaced = with_block(applied, OTHER)
    assert b"stats.vllm.ai" in replaced and b"lmstudio" not in replaced
    assert without_block(replaced) == original


@pytest.mark.parametrize("name", HOSTS_FILES)
def test_the_block_follows_the_file_and_touches_nothing_else(name: str) -> None:
    original = HOSTS_FILES[name]
    applied = with_block(original, ENTRIES)
    assert applied.startswith(original)
    block = applied[len(original) :]
    eol = b"\r\n" if b"\r\n" in original else b"\r" if b"\r" in original else b"\n"
    lines = block.split(eol)
    assert lines[-1] == b""  # the block ends its last line
    if original and not original.endswith((b"\n", b"\r")):
        assert lines[0] == b"" and lines[1] == BEGIN_ADDED_BREAK
    else:
        assert lines[0] == BEGIN
    assert lines[-2] == END
    assert b"0.0.0.0 telemetry.lmstudio.ai" in lines and b":: telemetry.lmstudio.ai" in lines
    other_eols = {b"\r\n", b"\n", b"\r"} - {eol}
    stripped = block.replace(eol, b"")
    assert not any(e in stripped for e in other_eols)


def test_a_block_the_user_moved_is_replaced_where_it_is() -> None:
    original = b"127.0.0.1 localhost\n"
    applied = with_block(original, ENTRIES) + b"10.0.0.5 added.later\n"
    replaced = with_block(applied, OTHER)
    assert replaced.endswith(b"# <<< aidns end <<<\n10.0.0.5 added.later\n")
    assert without_block(replaced) == original + b"10.0.0.5 added.later\n"


def test_an_added_break_stays_when_lines_follow_the_block() -> None:
    applied = with_block(b"10.0.0.2 nas", ENTRIES) + b"10.0.0.5 later\n"
    assert without_block(applied) == b"10.0.0.2 nas\n10.0.0.5 later\n"


@pytest.mark.parametrize(
    "broken",
    [
        BEGIN + b"\n0.0.0.0 x\n",
        b"0.0.0.0 x\n" + END + b"\n",
        END + b"\n" + BEGIN + b"\n",
        BEGIN + b"\n" + END + b"\n" + BEGIN + b"\n" + END + b"\n",
    ],
)
def test_broken_markers_are_refused_not_guessed(broken: bytes) -> None:
    with pytest.raises(AidnsError, match="do not make one block"):
        with_block(broken, ENTRIES, Path("/etc/hosts"))
    with pytest.raises(AidnsError, match="/etc/hosts"):
        without_block(broken, Path("/etc/hosts"))


def test_apply_keeps_mode_and_a_backup_and_is_idempotent(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    original = HOSTS_FILES["crlf-no-final-break"]
    hosts.write_bytes(original)
    hosts.chmod(0o640)

    change = apply_hosts(hosts, ENTRIES)
    assert change.changed and change.backup == tmp_path / "hosts.aidns.bak"
    assert backup_path(hosts).read_bytes() == original
    assert stat.S_IMODE(hosts.stat().st_mode) == 0o640
    assert stat.S_IMODE(backup_path(hosts).stat().st_mode) == 0o640
    applied = hosts.read_bytes()
    inode = hosts.stat().st_ino

    again = apply_hosts(hosts, ENTRIES)
    assert not again.changed
    assert hosts.read_bytes() == applied and hosts.stat().st_ino == inode
    assert backup_path(hosts).read_bytes() == original  # not overwritten by the no-op

    assert remove_hosts(hosts).changed
    assert hosts.read_bytes() == original
    assert not remove_hosts(hosts).changed
    assert not list(tmp_path.glob(".hosts.*"))  # no temporary files left behind


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_bytes(b"127.0.0.1 localhost\n")
    change = apply_hosts(hosts, ENTRIES, dry_run=True)
    assert change.changed
    assert hosts.read_bytes() == b"127.0.0.1 localhost\n"
    assert not backup_path(hosts).exists()


def test_a_symlinked_hosts_file_stays_a_link(tmp_path: Path) -> None:
    real = tmp_path / "static" / "hosts"
    real.parent.mkdir()
    real.write_bytes(b"127.0.0.1 localhost\n")
    link = tmp_path / "hosts"
    link.symlink_to(real)
    apply_hosts(link, ENTRIES)
    assert link.is_symlink() and b"telemetry.lmstudio.ai" in real.read_bytes()
    assert (real.parent / "hosts.aidns.bak").read_bytes() == b"127.0.0.1 localhost\n"
    remove_hosts(link)
    assert link.is_symlink() and real.read_bytes() == b"127.0.0.1 localhost\n"


def test_a_missing_hosts_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AidnsError, match="no hosts file at"):
        apply_hosts(tmp_path / "nope", ENTRIES)


def _run_as_nobody(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from aidns.cli.main import app; app()", *args]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv is needed to drop root for this test")
        # the interpreter may live under /root: let nobody traverse directories, nothing more
        caps = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *caps, *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_apply_refuses_a_file_it_may_not_write() -> None:
    directory = Path(tempfile.mkdtemp(prefix="aidns-hosts-"))
    try:
        directory.chmod(0o755)
        hosts = directory / "hosts"
        hosts.write_bytes(b"127.0.0.1 localhost\n")
        hosts.chmod(0o644)
        if os.geteuid() != 0:
            hosts.chmod(0o444)
        data = directory / "data"
        data.mkdir()
        data.chmod(0o777)
        (directory / "config.yaml").write_text("")
        result = _run_as_nobody(
            [
                "hosts",
                "apply",
                f"--hosts-file={hosts}",
                f"--data-dir={data}",
                f"--config={directory / 'config.yaml'}",
            ]
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"aidns: {hosts} is not writable by this user")
        assert "sudo aidns hosts apply" in result.stderr and "Traceback" not in result.stderr
        assert hosts.read_bytes() == b"127.0.0.1 localhost\n"
        assert not backup_path(hosts).exists()
    finally:
        shutil.rmtree(directory)


def _record(querylog: QueryLog, name: str) -> None:
    query = make_query(name)
    query.process = ProcessInfo(pid=100, name="ollama", uid=1000)
    query.decision = Decision(Action.FORWARDED, "", "")
    query.response = BlockResponse().reply_to(query)
    querylog(query)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    lists = data / "lists"
    lists.mkdir(parents=True)
    (lists / "mine.yaml").write_text(
        "name: mine\naction: block\ndomains:\n"
        "  - ingest.example\n"
        "  - domain: exact.example\n    match: exact\n"
        "  - domain: ok.ingest.example\n    action: allow\n"
        "  - =bare.example\n"
    )
    (lists / "watch.yaml").write_text("name: cloud\naction: watch\ndomains: [api.cloud.example]\n")
    big = "".join(f"0.0.0.0 t{i}.big.example\n" for i in range(2500))
    (lists / "big.txt").write_text("# a big hosts-format list\n" + big + "||ad.big2.example^\n")
    (data / "rules.yaml").write_text(
        "rules:\n"
        "- {name: stats.vllm.ai, kind: block, match: subtree}\n"
        "- {name: t7.big.example, kind: allow, match: exact}\n"
        "- {name: o1.sentry.example, kind: block, match: exact, processes: [ollama]}\n"
    )
    querylog = QueryLog(data / DB_NAME, QueryLogConfig(batch_interval_s=60))
    querylog.start()
    for name in ("o5.ingest.example", "ok.ingest.example", "x.ok.ingest.example", "example.org"):
        _record(querylog, name)
    querylog.stop()
    return data


def test_sinkhole_entries_cover_lists_rules_and_logged_names(
    tmp_path: Path, data_dir: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("block: [=config.example]\nallow: [telemetry.lmstudio.ai]\n")
    settings = load_settings(config_path=config, data_dir=data_dir, upstream=["127.0.0.1:5399"])
    entries = sinkhole_entries(settings)
    names = set(entries.names)
    assert {"ingest.example", "o5.ingest.example", "exact.example", "bare.example"} <= names
    assert {"stats.vllm.ai", "config.example", "analytics.jan.ai"} <= names
    assert "t0.big.example" in names and "t2499.big.example" in names
    assert "t7.big.example" not in names  # allowed by a rule
    assert "ad.big2.example" in names  # read from the big list's own file
    assert "telemetry.lmstudio.ai" not in names  # allowed by the config
    assert not names & {"ok.ingest.example", "x.ok.ingest.example"}  # an allow rule covers them
    assert not names & {"api.cloud.example", "example.org", "o1.sentry.example", "localhost"}
    assert [r.name for r in entries.process_scoped] == ["o1.sentry.example"]
    assert entries.names.index("ingest.example") < entries.names.index("o5.ingest.example")
    lines = entries.lines()
    assert "0.0.0.0 o5.ingest.example" in lines and ":: o5.ingest.example" in lines
    assert any("o1.sentry.example (for ollama)" in line for line in lines)
    assert all(line.startswith("#") for line in lines if "o1.sentry" in line)


def test_cli_print_apply_remove(tmp_path: Path, data_dir: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("")
    hosts = tmp_path / "hosts"
    original = HOSTS_FILES["crlf"]
    hosts.write_bytes(original)
    common = [f"--data-dir={data_dir}", f"--config={config}"]

    printed = runner.invoke(app, ["hosts", "print", *common])
    assert printed.exit_code == 0, printed.output
    assert printed.output.splitlines()[0] == BEGIN.decode()
    assert "0.0.0.0 o5.ingest.example" in printed.output.splitlines()

    dry = runner.invoke(app, ["hosts", "apply", f"--hosts-file={hosts}", "--dry-run", *common])
    assert dry.exit_code == 0 and "would change" in dry.output
    assert hosts.read_bytes() == original

    applied = runner.invoke(app, ["hosts", "apply", f"--hosts-file={hosts}", *common])
    assert applied.exit_code == 0, applied.output
    assert f"{hosts}: changed: aidns block with" in applied.output
    assert "1 rule(s) for some programs only" in applied.output
    block = hosts.read_bytes()[len(original) :].decode().replace("\r\n", "\n")
    assert block == "\n".join(printed.output.splitlines()) + "\n"  # print shows what apply writes

    again = runner.invoke(app, ["hosts", "apply", f"--hosts-file={hosts}", *common])
    assert "nothing changed" in again.output

    removed = runner.invoke(app, ["hosts", "remove", f"--hosts-file={hosts}"])
    assert removed.exit_code == 0, removed.output
    assert hosts.read_bytes() == original


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_bytes(BEGIN + b"\n")
    result = runner.invoke(app, ["hosts", "remove", f"--hosts-file={hosts}"])
    assert result.exit_code == 2
    assert result.output.startswith(f"aidns: {hosts}: the aidns begin and end lines")
    assert len(result.output.splitlines()) == 1


def test_macos_flush_runs_both_commands() -> None:
    """A fake runner: dscacheutil and mDNSResponder exist only on macOS."""
    calls: list[tuple[str, ...]] = []

    def fake(argv: Sequence[str]) -> CommandResult:
        calls.append(tuple(argv))
        return CommandResult(tuple(argv), 0)

    assert all(r.ok for r in flush_cache("darwin", fake))
    assert calls == [("dscacheutil", "-flushcache"), ("killall", "-HUP", "mDNSResponder")]
    calls.clear()
    assert flush_cache("linux", fake) == [] and calls == []
