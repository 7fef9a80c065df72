from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aidns.cli.main import app
from aidns.resolver.config import Settings, load_settings
from aidns.resolver.endpoints import ListenAddress
from aidns.resolver.system.checks import Check, Status, healthy
from aidns.resolver.system.doctor import run_doctor
from aidns.resolver.system.holders import Holder, macos_holders, socket_holders
from aidns.resolver.system.routing import check_relay, check_system_dns, resolved_servers
from aidns.resolver.system.serving import check_attribution, check_query_log, check_upstreams
from aidns.resolver.system.sysfiles import CommandResult, Machine
from tests.helpers import dnsmasq
from tests.helpers.certs import make_cert
from tests.helpers.dnsserver import FakeTlsNameserver

runner = CliRunner()
FIXTURES = Path(__file__).parent.parent / "fixtures"


SettingsFor = Callable[..., Settings]


@pytest.fixture
def settings_for(tmp_path: Path) -> SettingsFor:
    config = tmp_path / "config.yaml"
    config.write_text("")

    def make(
        listen: Sequence[str] = ("127.0.0.1:53",), upstream: Sequence[str] = ("192.0.2.1",)
    ) -> Settings:
        return load_settings(
            config_path=config, data_dir=tmp_path / "data", listen=listen, upstream=upstream
        )

    return make


def bound(kind: int, host: str, port: int = 0) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    sock.bind((host, port))
    if kind == socket.SOCK_STREAM:
        sock.listen()
    return sock


def test_socket_holders_name_this_process_for_exact_and_wildcard_binds() -> None:
    with bound(socket.SOCK_DGRAM, "127.0.0.1") as udp:
        port = udp.getsockname()[1]
        (holder,) = socket_holders(ListenAddress("127.0.0.1", port))
        assert holder.pid == os.getpid() and holder.transport == "udp"
        assert holder.name and holder.describe().startswith(f"{holder.name} (pid {os.getpid()})")
        assert socket_holders(ListenAddress("127.0.0.2", port)) == []
    with bound(socket.SOCK_DGRAM, "0.0.0.0") as wildcard:
        port = wildcard.getsockname()[1]
        assert [h.pid for h in socket_holders(ListenAddress("127.0.0.1", port))] == [os.getpid()]
        assert socket_holders(ListenAddress("::1", port)) == []
    with bound(socket.SOCK_STREAM, "::") as dual_stack:
        port = dual_stack.getsockname()[1]
        assert [h.transport for h in socket_holders(ListenAddress("127.0.0.1", port))] == ["tcp"]
        assert [h.pid for h in socket_holders(ListenAddress("::1", port))] == [os.getpid()]


def test_a_tcp_socket_that_does_not_listen_holds_nothing() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", 0))
        assert socket_holders(ListenAddress("127.0.0.1", tcp.getsockname()[1])) == []


def test_aidns_is_recognised_by_its_command_line() -> None:
    ours = Holder("udp", 0, 42, "python3", "python3 -c from aidns.cli.main import app; app() serve")
    assert ours.is_aidns and ours.describe() == "aidns (pid 42)"
    assert not Holder("udp", 0, 7, "dnsmasq", "/usr/sbin/dnsmasq -k").is_aidns
    assert Holder("udp", 65534, None).describe() == "a process of nobody (not visible to this user)"


def lsof_fixture(name: str) -> str:
    text = (FIXTURES / "lsof" / name).read_text()
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))


@pytest.mark.parametrize(
    ("fixture", "port", "host", "pids"),
    [
        ("listen-bound.txt", 5391, "127.0.0.1", [32578]),
        ("listen-bound.txt", 5391, "127.0.0.2", []),
        ("listen-wildcard.txt", 5393, "127.0.0.1", [32620, 32669]),
        ("listen-wildcard.txt", 5393, "::1", [32620, 32669]),
    ],
)
def test_macos_holders_from_recorded_lsof(
    fixture: str, port: int, host: str, pids: list[int]
) -> None:
    """lsof output recorded on Linux, in the same -F format macOS's lsof prints; ps is faked
    with a fixed command line, as the recorded processes are gone."""

    def fake(argv: Sequence[str]) -> CommandResult:
        if argv[0] == "ps":
            assert argv[1:4] == ("-o", "command=", "-p")
            return CommandResult(tuple(argv), 0, "/usr/sbin/dnsmasq --keep-in-foreground\n")
        assert argv[0] == "lsof" and f"-iUDP:{port}" in argv
        return CommandResult(tuple(argv), 0, lsof_fixture(fixture))

    holders = macos_holders(ListenAddress(host, port), Machine(Path("/"), "darwin", fake))
    assert sorted(h.pid for h in holders if h.pid) == pids
    assert all(h.name == "dnsmasq" and not h.is_aidns for h in holders)  # not the python3 client


def test_macos_knows_aidns_by_its_command_line_from_ps() -> None:
    def fake(argv: Sequence[str]) -> CommandResult:
        if argv[0] == "ps":
            line = "/opt/homebrew/opt/python@3.12/bin/python3.12 /opt/homebrew/bin/aidns serve\n"
            return CommandResult(tuple(argv), 0, line)
        return CommandResult(tuple(argv), 0, lsof_fixture("listen-bound.txt"))

    (holder,) = macos_holders(ListenAddress("127.0.0.1", 5391), Machine(Path("/"), "darwin", fake))
    assert holder.is_aidns and holder.describe() == "aidns (pid 32578)"


def write_root(tmp_path: Path, resolv: str, files: dict[str, str] | None = None) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "resolv.conf").write_text(resolv)
    for relative, text in (files or {}).items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    ("resolv", "files", "status", "words"),
    [
        ("nameserver 127.0.0.1\n", {}, Status.OK, "sends queries to aidns"),
        ("nameserver 127.0.0.1\nnameserver 10.0.0.1\n", {}, Status.WARN, "also 10.0.0.1"),
        ("nameserver 10.0.0.1\n", {}, Status.FAIL, "sends queries to 10.0.0.1, not to aidns"),
        ("# nothing\n", {}, Status.FAIL, "names no nameserver"),
        (
            "nameserver 127.0.0.53\n",
            {"etc/systemd/resolved.conf.d/aidns.conf": "[Resolve]\nDNS=127.0.0.1\n"},
            Status.OK,
            "systemd-resolved, which asks aidns",
        ),
        (
            "nameserver 127.0.0.53\n",
            {"etc/systemd/resolved.conf": "[Resolve]\nDNS=1.1.1.1\n"},
            Status.FAIL,
            "which does not ask aidns",
        ),
    ],
)
def test_system_dns(
    tmp_path: Path,
    settings_for: SettingsFor,
    resolv: str,
    files: dict[str, str],
    status: Status,
    words: str,
) -> None:
    root = write_root(tmp_path, resolv, files)
    check = check_system_dns(settings_for(), Machine(root, "linux"))
    assert check.status is status and words in check.message, check
    if status is Status.FAIL:
        assert "sudo aidns setup-dns" in check.fix


def test_resolved_servers_follow_drop_in_order(tmp_path: Path) -> None:
    files = {
        "etc/systemd/resolved.conf": "[Resolve]\nDNS=1.1.1.1\n",
        "etc/systemd/resolved.conf.d/a.conf": "[Resolve]\nDNS=\n",
        "etc/systemd/resolved.conf.d/b.conf": "[Resolve]\nDNS=127.0.0.1:5353 [::1]:53\n",
    }
    root = write_root(tmp_path, "", files)
    assert resolved_servers(Machine(root, "linux")) == ["127.0.0.1:5353", "[::1]:53"]


def test_system_dns_on_macos_reads_scutil(tmp_path: Path, settings_for: SettingsFor) -> None:
    """A fake scutil: it exists only on macOS; its reply is the recorded format."""
    text = (FIXTURES / "macos" / "scutil-dns.txt").read_text()
    reply = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("# "))

    def fake(argv: Sequence[str]) -> CommandResult:
        return CommandResult(tuple(argv), 0, reply)

    check = check_system_dns(settings_for(), Machine(tmp_path, "darwin", fake))
    assert check.status is Status.FAIL and "192.168.1.1" in check.message
    aidns_first = reply.replace("nameserver[0] : 192.168.1.1", "nameserver[0] : 127.0.0.1")

    def fake_set(argv: Sequence[str]) -> CommandResult:
        return CommandResult(tuple(argv), 0, aidns_first)

    check = check_system_dns(settings_for(), Machine(tmp_path, "darwin", fake_set))
    assert check.status is Status.OK


def test_relay_through_nss_resolve_is_explained(tmp_path: Path, settings_for: SettingsFor) -> None:
    root = write_root(
        tmp_path,
        "nameserver 127.0.0.1\n",
        {
            "etc/nsswitch.conf": "passwd: files\nhosts: files resolve [!UNAVAIL=return] dns\n",
            "run/systemd/resolve/io.systemd.Resolve": "",
        },
    )
    checks = check_relay(settings_for(), Machine(root, "linux"), Path("/proc"))
    assert [c.status for c in checks] == [Status.WARN]
    assert "nsswitch.conf" in checks[0].message and "resolve" in checks[0].fix
    plain = write_root(tmp_path / "plain", "nameserver 127.0.0.1\n")
    checks = check_relay(settings_for(), Machine(plain, "linux"), Path("/proc"))
    assert [c.status for c in checks] == [Status.OK]


@pytest.mark.skipif(not dnsmasq.available(), reason="dnsmasq is not installed")
def test_upstreams_are_asked_for_real(tmp_path: Path, settings_for: SettingsFor) -> None:
    closed = dnsmasq.free_port()
    with dnsmasq.run_dnsmasq("--local=/#/") as port:
        settings = settings_for(upstream=[f"127.0.0.1:{port}", f"127.0.0.1:{closed}"])
        good, bad = check_upstreams(settings, Machine(tmp_path, "linux"), Path("/proc"))
    assert good.status is Status.OK and good.message.startswith("answered NXDOMAIN in")
    assert bad.status is Status.FAIL and "no answer" in bad.message


def test_a_named_upstream_is_asked_where_the_bootstrap_server_says(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    cert = make_cert(tmp_path)
    with (
        dnsmasq.run_dnsmasq("--address=/upstream.test/127.0.0.1") as bootstrap_port,
        FakeTlsNameserver(cert.server_context()) as upstream,
    ):
        config = tmp_path / "config.yaml"
        config.write_text(
            f"upstream: ['tls://upstream.test:{upstream.port}#dns.test']\n"
            f"bootstrap: ['127.0.0.1:{bootstrap_port}']\nupstream_ca: {cert.cert}\n"
        )
        settings = load_settings(config_path=config, data_dir=tmp_path / "data")
        (check,) = check_upstreams(settings, Machine(tmp_path, "linux"), Path("/proc"))
    assert check.status is Status.OK, check
    assert upstream.queries == 1


def test_an_upstream_that_is_resolved_asking_aidns_loops(
    tmp_path: Path, settings_for: SettingsFor
) -> None:
    root = write_root(
        tmp_path,
        "nameserver 127.0.0.53\n",
        {"etc/systemd/resolved.conf.d/aidns.conf": "[Resolve]\nDNS=127.0.0.1\n"},
    )
    settings = settings_for(upstream=["127.0.0.53"])
    (check,) = check_upstreams(settings, Machine(root, "linux"), Path("/proc"))
    assert check.status is Status.FAIL and "queries loop" in check.message


def test_query_log_that_cannot_be_written(tmp_path: Path, settings_for: SettingsFor) -> None:
    settings = settings_for()
    assert check_query_log(settings).status is Status.OK
    (tmp_path / "data").write_text("a file where the data dir should be")
    check = check_query_log(settings)
    assert check.status is Status.FAIL and "not writable" in check.message


def fake_proc(tmp_path: Path, cap_eff: int, uid: int, mounts: str = "") -> Path:
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "status").write_text(
        f"Name:\tpython3\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nCapEff:\t{cap_eff:016x}\n"
    )
    (proc / "4242" / "mountinfo").write_text(mounts or "22 27 0:21 / /proc rw - proc proc rw\n")
    return proc


@pytest.mark.parametrize(
    ("caps", "mounts", "status", "words"),
    [
        ((1 << 19) | (1 << 2), "", Status.OK, "may read every process's sockets"),
        (1 << 19, "", Status.WARN, "lacks CAP_DAC_READ_SEARCH"),
        (0, "", Status.WARN, "lacks CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE"),
        (
            (1 << 19) | (1 << 2),
            "22 27 0:21 / /proc rw - proc proc rw,hidepid=invisible\n",
            Status.WARN,
            "hidepid=invisible",
        ),
    ],
)
def test_attribution_privileges_of_the_running_server(
    tmp_path: Path, settings_for: SettingsFor, caps: int, mounts: str, status: Status, words: str
) -> None:
    proc = fake_proc(tmp_path, caps, 65534, mounts)
    server = Holder("udp", 65534, 4242, "python3", "aidns serve")
    check = check_attribution(settings_for(), [server], Machine(tmp_path, "linux"), proc)
    assert check.status is status and words in check.message, check
    assert "pid 4242" in check.message


def test_doctor_exit_status_and_lines(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("")
    port = dnsmasq.free_port()
    args = ["doctor", f"--listen=127.0.0.1:{port}", f"--upstream=127.0.0.1:{port + 1}"]
    args += [f"--config={config}", f"--data-dir={tmp_path / 'data'}", f"--root={tmp_path}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith(f"ok    config: {config}")
    assert f"FAIL  listen 127.0.0.1:{port}: nothing listens on 127.0.0.1:{port}; fix:" in lines[1]
    assert all(line.split()[0] in ("ok", "warn", "FAIL") for line in lines)

    config.write_text("cache_size: lots\n")
    broken = runner.invoke(app, args)
    assert broken.exit_code == 1
    assert broken.output.startswith(f"FAIL  config: {config}:1: cache_size")


def test_healthy_means_no_failure() -> None:
    assert healthy([Check(Status.OK, "a", "b"), Check(Status.WARN, "c", "d")])
    assert not healthy([Check(Status.FAIL, "a", "b")])


def test_run_doctor_in_process(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("")
    checks = run_doctor(
        Machine(tmp_path, "linux"),
        config_path=config,
        data_dir=tmp_path / "data",
        listen=["127.0.0.1:9"],
        upstream=["127.0.0.1:10"],
    )
    topics = [check.topic for check in checks]
    assert topics[:3] == ["config", "listen 127.0.0.1:9", "system DNS"]
    assert topics[-3:] == ["lists", "query log", "attribution"]


@pytest.mark.skipif(not dnsmasq.available(), reason="dnsmasq is not installed")
def test_a_holder_this_user_cannot_see_is_not_called_a_squatter() -> None:
    """doctor as nobody, next to a DNS server of root's: it answers, so it may be aidns."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run doctor as nobody")
    shared = Path(tempfile.mkdtemp(prefix="aidns-doctor-"))
    try:
        shared.chmod(0o755)
        (shared / "config.yaml").write_text("")
        with dnsmasq.run_dnsmasq("--user=root", "--local=/#/") as port:
            caps = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *caps]
            command += [sys.executable, "-c", "from aidns.cli.main import app; app()", "doctor"]
            command += [f"--listen=127.0.0.1:{port}", "--upstream=127.0.0.1:9"]
            command += [f"--config={shared / 'config.yaml'}", f"--data-dir={shared / 'data'}"]
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        line = next(x for x in result.stdout.splitlines() if f"listen 127.0.0.1:{port}" in x)
        assert line.startswith(f"warn  listen 127.0.0.1:{port}: a process of root"), line
        assert "sudo aidns doctor" in line
    finally:
        shutil.rmtree(shared)
