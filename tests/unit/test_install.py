from __future__ import annotations

import plistlib
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aidns.cli.main import app
from aidns.resolver.config import TcpConfig
from aidns.resolver.errors import AidnsError
from aidns.resolver.system.install import (
    LAUNCHD_LABEL,
    find_executable,
    plan_install,
    plan_uninstall,
    render_plist,
    render_unit,
)
from aidns.resolver.system.setupdns import RECORD_NAME
from aidns.resolver.tcpclients import FD_RESERVE

runner = CliRunner()
REPO = Path(__file__).parent.parent.parent
UNIT_FILE = REPO / "systemd" / "aidns.service"
PLIST_FILE = REPO / "launchd" / f"{LAUNCHD_LABEL}.plist"
CAPS = {"CAP_NET_BIND_SERVICE", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"}


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's unit syntax: sections of keys, a key may repeat; `#` lines are comments."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_the_shipped_files_are_what_install_writes() -> None:
    assert UNIT_FILE.read_text() == render_unit()
    assert PLIST_FILE.read_bytes() == render_plist()


def test_unit_runs_serve_unprivileged_with_only_the_capabilities_it_needs() -> None:
    unit = parse_unit(UNIT_FILE.read_text())
    service = {key: values[-1] for key, values in unit["Service"].items()}
    assert service["ExecStart"] == "/usr/local/bin/aidns serve"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["DynamicUser"] == "yes" and service["StateDirectory"] == "aidns"
    assert "AIDNS_DATA_DIR=/var/lib/aidns" in service["Environment"].split()
    assert set(service["AmbientCapabilities"].split()) == CAPS
    assert set(service["CapabilityBoundingSet"].split()) == CAPS
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_NETLINK AF_UNIX",
    }.items():
        assert service[key] == value, key
    # these would blind attribution: named in comments only
    for blinding in ("ProtectProc", "ProcSubset", "PrivateUsers", "PrivateNetwork", "User"):
        assert blinding not in unit["Service"], blinding
        if blinding != "User":
            assert f"#   {blinding}=" in UNIT_FILE.read_text()
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_the_service_may_open_enough_files_for_every_tcp_client_and_the_reserve() -> None:
    service = parse_unit(UNIT_FILE.read_text())["Service"]
    assert service["LimitNOFILE"] == ["65536"]  # one value: soft and hard alike
    assert int(service["LimitNOFILE"][0]) - FD_RESERVE >= TcpConfig().max_clients
    plist = plistlib.loads(PLIST_FILE.read_bytes())
    open_files = plist["SoftResourceLimits"]["NumberOfFiles"]
    assert open_files - FD_RESERVE >= TcpConfig().max_clients


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    unit = tmp_path / "aidns.service"
    unit.write_text(render_unit(find_executable()))  # verify checks that ExecStart exists
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "aidns.service" not in result.stderr, result.stderr


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_security_rates_the_unit(tmp_path: Path) -> None:
    unit = tmp_path / "aidns.service"
    unit.write_text(render_unit(find_executable()))
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in result.stderr:
        pytest.skip("this systemd-analyze cannot rate a unit file offline (needs systemd 250)")
    last = result.stdout.strip().splitlines()[-1]
    assert "Overall exposure level for aidns.service" in last, result.stdout
    exposure = float(last.split(":")[1].split()[0])
    assert exposure <= 3.0, last  # "OK" on systemd's scale; attribution keeps it above 2


def test_launchd_plist_parses_and_runs_serve_at_boot() -> None:
    plist = plistlib.loads(PLIST_FILE.read_bytes())
    assert plist["Label"] == LAUNCHD_LABEL
    assert plist["ProgramArguments"] == ["/usr/local/bin/aidns", "serve"]
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] is True
    assert plist["StandardErrorPath"] == "/var/log/aidns.log"
    assert plist["EnvironmentVariables"]["AIDNS_CONFIG"] == "/etc/aidns/config.yaml"
    if shutil.which("plutil"):
        lint = subprocess.run(["plutil", "-lint", str(PLIST_FILE)], capture_output=True)
        assert lint.returncode == 0, lint.stdout


def test_install_and_uninstall_under_a_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    executable = find_executable()
    common = [f"--root={root}"]
    dry = runner.invoke(app, ["install", *common, f"--executable={executable}", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"would write {root}/etc/systemd/system/aidns.service" in dry.output
    assert not any(root.iterdir())

    done = runner.invoke(app, ["install", *common, f"--executable={executable}"])
    assert done.exit_code == 0, done.output
    unit = root / "etc" / "systemd" / "system" / "aidns.service"
    assert unit.read_text() == render_unit(executable)
    config = root / "etc" / "aidns" / "config.yaml"
    assert config.read_text().startswith("# aidns config")
    assert "daemon-reload" not in done.output  # nothing runs against the live system
    if shutil.which("systemctl"):
        assert f"ran: systemctl --root={root} enable aidns.service" in done.output
        wants = root / "etc" / "systemd" / "system" / "multi-user.target.wants" / "aidns.service"
        assert wants.is_symlink()

    config.write_text("upstream: [192.0.2.1]\n")
    again = runner.invoke(app, ["install", *common, f"--executable={executable}"])
    assert again.exit_code == 0 and f"kept {config}: it exists" in again.output
    assert config.read_text() == "upstream: [192.0.2.1]\n"

    data = tmp_path / "data"
    data.mkdir()
    (data / RECORD_NAME).write_text('{"mode": "resolv.conf"}')
    refused = runner.invoke(app, ["uninstall", *common, f"--data-dir={data}"])
    assert refused.exit_code == 2
    assert "setup-dns --revert" in refused.output
    (data / RECORD_NAME).unlink()

    removed = runner.invoke(app, ["uninstall", *common, f"--data-dir={data}"])
    assert removed.exit_code == 0, removed.output
    assert not unit.exists() and config.exists()
    assert not (root / "etc" / "systemd" / "system" / "multi-user.target.wants").exists()
    assert f"kept {root}/etc/aidns" in removed.output


def test_plans_for_the_live_system_are_not_run_here(tmp_path: Path) -> None:
    live = Path("/")
    darwin = plan_install(live, "darwin", "/opt/homebrew/bin/aidns")
    commands = [step.argv for step in darwin.steps if step.kind == "run"]
    assert commands == [
        ("launchctl", "bootstrap", "system", f"/Library/LaunchDaemons/{LAUNCHD_LABEL}.plist")
    ]
    assert plistlib.loads(darwin.steps[0].data)["ProgramArguments"][0] == "/opt/homebrew/bin/aidns"
    undo = [step.argv for step in plan_uninstall(live, "darwin").steps if step.kind == "run"]
    assert undo == [("launchctl", "bootout", f"system/{LAUNCHD_LABEL}")]
    if Path("/run/systemd/system").is_dir():
        linux = plan_install(live, "linux", "/usr/bin/aidns")
        commands = [step.argv for step in linux.steps if step.kind == "run"]
        assert ("systemctl", "enable", "--now", "aidns.service") in commands
    else:
        with pytest.raises(AidnsError, match="systemd is not running"):
            plan_install(live, "linux", "/usr/bin/aidns")
    with pytest.raises(AidnsError, match="knows systemd"):
        plan_install(tmp_path, "win32", "aidns.exe")


def test_a_home_install_is_warned_about(tmp_path: Path) -> None:
    plan = plan_install(tmp_path, "linux", "/home/me/.venv/bin/aidns")
    assert any("under /home" in note for note in plan.notes)
