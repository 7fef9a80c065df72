"""System integration end to end, in network namespaces of the test's own: setup-dns and its
revert on the namespace's bind-mounted resolv.conf, doctor, the hosts fallback, and the
service's capabilities. Nothing of the host is changed: the test checks that too."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import dnsmasq
from tests.helpers.dnsmasq import dnsmasq_command

from .conftest import DNSMASQ, aidns_command
from .netns import NETNS_ETC, in_netns, namespace, run_in

pytestmark = pytest.mark.netns

ORIGINAL = (
    "# the namespace's own resolv.conf\n"
    "search example.test\n"
    "nameserver 192.0.2.53\n"
    "options timeout:1 attempts:1\n"
)
UPSTREAM_PORT = 5300
HOST_FILES = (Path("/etc/resolv.conf"), Path("/etc/hosts"))
UNIT_CAPS = "+net_bind_service,+sys_ptrace,+dac_read_search"


@pytest.fixture(autouse=True)
def host_untouched() -> Iterator[None]:
    """The host's own resolver files are byte for byte the same after each test."""
    before = {path: path.read_bytes() for path in HOST_FILES if path.exists()}
    leftovers = set(Path("/etc").glob("*.aidns*"))
    yield
    assert {path: path.read_bytes() for path in before} == before
    assert set(Path("/etc").glob("*.aidns*")) == leftovers


def aidns(name: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    command = aidns_command(*args)
    if name is not None:
        command = in_netns(name, command)
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@contextmanager
def upstream_in(name: str) -> Iterator[None]:
    if not os.path.exists(DNSMASQ):
        pytest.skip("dnsmasq is not installed (apt-get install dnsmasq-base)")
    command = dnsmasq_command(UPSTREAM_PORT, "--address=/up.test/192.0.2.10", "--local=/#/")
    process = subprocess.Popen(in_netns(name, command), stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def serve_in(
    name: str,
    data_dir: Path,
    config: Path,
    as_user: Sequence[str] = (),
    upstreams: Sequence[str] = (f"--upstream=127.0.0.1:{UPSTREAM_PORT}",),
) -> Iterator[subprocess.Popen[str]]:
    """aidns on the namespace's 127.0.0.1:53, asking the namespace's dnsmasq by default."""
    command = aidns_command(
        "serve",
        "--listen=127.0.0.1:53",
        *upstreams,
        f"--data-dir={data_dir}",
        f"--config={config}",
    )
    server = subprocess.Popen(
        in_netns(name, [*as_user, *command]), stderr=subprocess.PIPE, text=True
    )
    try:
        assert server.stderr is not None
        seen = []
        for line in server.stderr:
            seen.append(line)
            if "listening on tcp" in line:
                break
        else:
            pytest.fail(f"aidns did not start (exit {server.wait()}):\n{''.join(seen)}")
        yield server
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text("attribution_budget_ms: 50\n")  # a loaded CI machine is slow
    return path


def lines_of(result: subprocess.CompletedProcess[str]) -> list[str]:
    return result.stdout.splitlines()


def line_about(lines: list[str], topic: str) -> str:
    return next(line for line in lines if line[6:].startswith(topic))


def test_setup_dns_doctor_and_revert_in_a_namespace(tmp_path: Path, config: Path) -> None:
    data_dir = tmp_path / "data"
    common = [f"--config={config}", f"--data-dir={data_dir}"]
    with namespace(ORIGINAL) as name:
        resolv = NETNS_ETC / name / "resolv.conf"
        # the bind mount keeps the host's /etc/resolv.conf out of reach: make sure it is there
        assert run_in(name, ["cat", "/etc/resolv.conf"]).stdout == ORIGINAL
        with upstream_in(name), serve_in(name, data_dir, config) as server:
            doctor = ["doctor", "--listen=127.0.0.1:53", f"--upstream=127.0.0.1:{UPSTREAM_PORT}"]
            before = aidns(name, *doctor, *common)
            assert before.returncode == 1, before.stdout + before.stderr
            lines = lines_of(before)
            listening = line_about(lines, "listen 127.0.0.1:53")
            assert listening.startswith(f"ok    listen 127.0.0.1:53: aidns (pid {server.pid})")
            assert line_about(lines, "system DNS").startswith(
                "FAIL  system DNS: /etc/resolv.conf sends queries to 192.0.2.53, not to aidns"
            )
            assert line_about(lines, f"upstream 127.0.0.1:{UPSTREAM_PORT}").startswith("ok")
            assert line_about(lines, "attribution").startswith("ok")

            setup = aidns(name, "setup-dns", "--listen=127.0.0.1:53", *common)
            assert setup.returncode == 0, setup.stdout + setup.stderr
            assert lines_of(setup)[0] == "mode: resolv.conf (/etc/resolv.conf is a plain file)"
            written = resolv.read_text()
            assert "\nnameserver 127.0.0.1\n" in written
            assert "# (aidns) nameserver 192.0.2.53\n" in written
            assert (data_dir / "upstreams.remembered").read_text() == "192.0.2.53\n"

            # the system now resolves through aidns: a plain glibc lookup, attributed
            found = run_in(name, ["getent", "ahosts", "via-system.up.test"])
            assert "192.0.2.10" in found.stdout, found.stderr
            blocked = run_in(name, ["getent", "ahosts", "telemetry.lmstudio.ai"])
            assert "0.0.0.0" in blocked.stdout
            deadline = time.monotonic() + 10
            while True:
                who = aidns(None, "who", "via-system.up.test", "--json", f"--data-dir={data_dir}")
                rows = json.loads(who.stdout or "[]")
                if rows or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert rows and rows[0]["process"] == "getent", rows

            after = aidns(name, *doctor, *common)
            assert after.returncode == 0, after.stdout
            assert line_about(lines_of(after), "system DNS") == (
                "ok    system DNS: /etc/resolv.conf sends queries to aidns (127.0.0.1)"
            )

            again = aidns(name, "setup-dns", "--listen=127.0.0.1:53", *common)
            assert again.returncode == 2 and "run `aidns setup-dns --revert` first" in again.stderr

            reverted = aidns(name, "setup-dns", "--revert", *common)
            assert reverted.returncode == 0, reverted.stdout + reverted.stderr
            assert resolv.read_bytes() == ORIGINAL.encode()
            assert not (data_dir / "upstreams.remembered").exists()
            assert aidns(name, *doctor, *common).returncode == 1


def test_setup_dns_refuses_when_nothing_answers(tmp_path: Path, config: Path) -> None:
    with namespace(ORIGINAL) as name:
        result = aidns(
            name,
            "setup-dns",
            "--listen=127.0.0.1:53",
            f"--config={config}",
            f"--data-dir={tmp_path / 'data'}",
        )
        assert result.returncode == 2
        assert result.stderr.startswith("aidns: nothing answers DNS on 127.0.0.1:53")
        assert (NETNS_ETC / name / "resolv.conf").read_text() == ORIGINAL


def test_doctor_names_another_program_on_port_53(tmp_path: Path, config: Path) -> None:
    if not os.path.exists(DNSMASQ):
        pytest.skip("dnsmasq is not installed (apt-get install dnsmasq-base)")
    with namespace("nameserver 127.0.0.1\n") as name:
        squatter = subprocess.Popen(
            in_netns(
                name,
                dnsmasq_command(53, "--local=/#/"),
            ),
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 5
            while True:
                result = aidns(
                    name,
                    "doctor",
                    "--listen=127.0.0.1:53",
                    "--upstream=127.0.0.1:5399",
                    f"--config={config}",
                    f"--data-dir={tmp_path / 'data'}",
                )
                line = line_about(lines_of(result), "listen 127.0.0.1:53")
                if "dnsmasq" in line or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        finally:
            squatter.terminate()
            squatter.wait(10)
    assert result.returncode == 1
    assert line.startswith(f"FAIL  listen 127.0.0.1:53: dnsmasq (pid {squatter.pid}) holds")
    assert "bind-interfaces" in line


def as_nobody(caps: str) -> list[str]:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is needed to run aidns as an unprivileged user")
    return [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        f"--inh-caps={caps}",
        f"--ambient-caps={caps}",
    ]


@pytest.mark.parametrize(
    ("caps", "named"),
    [(UNIT_CAPS, True), ("+net_bind_service,+dac_read_search", False)],
    ids=["unit-capabilities", "without-CAP_SYS_PTRACE"],
)
def test_the_units_capabilities_are_what_attribution_needs(
    request: pytest.FixtureRequest, caps: str, named: bool
) -> None:
    """aidns as nobody with the unit's ambient capabilities answers on port 53 and names a
    root program that asks; without CAP_SYS_PTRACE it can tell only the uid, as doctor says.
    (The interpreter may live under /root: CAP_DAC_READ_SEARCH lets nobody reach it.)"""
    # click checks paths with access(2), which drops capabilities: so a directory nobody
    # can reach without them, as /var/lib/aidns is for the real service
    shared = Path(tempfile.mkdtemp(prefix="aidns-nobody-"))
    shared.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(shared))
    data_dir = shared / "data"
    data_dir.mkdir()
    os.chown(data_dir, 65534, 65534)
    config = shared / "config.yaml"
    config.write_text("attribution_budget_ms: 50\n")
    resolv = "nameserver 127.0.0.1\noptions timeout:2 attempts:1\n"
    with (
        namespace(resolv) as name,
        upstream_in(name),
        serve_in(name, data_dir, config, as_nobody(caps)) as server,
    ):
        found = run_in(name, ["getent", "ahosts", "asked-by-root.up.test"])
        assert "192.0.2.10" in found.stdout
        doctor = aidns(
            name,
            "doctor",
            "--listen=127.0.0.1:53",
            f"--upstream=127.0.0.1:{UPSTREAM_PORT}",
            f"--config={config}",
            f"--data-dir={data_dir}",
        )
        attribution = line_about(lines_of(doctor), "attribution")
        assert f"aidns (pid {server.pid}, user nobody)" in attribution
        deadline = time.monotonic() + 10
        while True:
            logged = aidns(None, "log", "--json", "--domain=up.test", f"--data-dir={data_dir}")
            rows = [json.loads(line) for line in logged.stdout.splitlines()]
            if rows or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    assert rows and all(row["name"] == "asked-by-root.up.test" for row in rows)
    for row in rows:
        assert row["uid"] == 0, row
        if named:
            assert row["process"] == "getent" and row["pid"], row
        else:
            assert row["pid"] is None and not row["process"], row
    if named:
        assert attribution.startswith("ok"), attribution
    else:
        assert attribution.startswith("warn") and "lacks CAP_SYS_PTRACE" in attribution


def test_hosts_file_sinkholes_without_a_server(tmp_path: Path, config: Path) -> None:
    """The namespace sees /etc/netns/NAME/hosts as its /etc/hosts (ip netns exec binds it)."""
    user_lines = b"127.0.0.1 localhost\r\n# my NAS\r\n10.9.9.9 nas.example.test\r\n"
    with namespace("nameserver 192.0.2.53\noptions timeout:1 attempts:1\n") as name:
        hosts = NETNS_ETC / name / "hosts"
        hosts.write_bytes(user_lines)
        common = [f"--config={config}", f"--data-dir={tmp_path / 'data'}"]
        applied = aidns(None, "hosts", "apply", f"--hosts-file={hosts}", *common)
        assert applied.returncode == 0, applied.stderr
        (NETNS_ETC / name / "hosts.aidns.bak").unlink()  # ip netns exec would try to bind it
        blocked = run_in(name, ["getent", "ahosts", "telemetry.lmstudio.ai"])
        assert blocked.stdout.split()[:1] in (["0.0.0.0"], ["::"]), blocked.stdout
        mine = run_in(name, ["getent", "hosts", "nas.example.test"])
        assert mine.stdout.split()[:1] == ["10.9.9.9"]
        removed = aidns(None, "hosts", "remove", f"--hosts-file={hosts}")
        assert removed.returncode == 0, removed.stderr
        assert hosts.read_bytes() == user_lines
        gone = run_in(name, ["getent", "ahosts", "telemetry.lmstudio.ai"])
        assert "0.0.0.0" not in gone.stdout


PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
MDWE_WRAPPER = f"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
    sys.exit(77)
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def _kernel_has_mdwe() -> bool:
    release = platform.release().split("-")[0].split(".")
    try:
        return sys.platform.startswith("linux") and (int(release[0]), int(release[1])) >= (6, 3)
    except (ValueError, IndexError):
        return False


@pytest.mark.skipif(not _kernel_has_mdwe(), reason="PR_SET_MDWE needs Linux 6.3")
@pytest.mark.skipif(not dnsmasq.available(), reason="dnsmasq is not installed")
def test_serve_works_without_writable_executable_memory(tmp_path: Path, config: Path) -> None:
    """The unit sets MemoryDenyWriteExecute=yes; the kernel's own PR_SET_MDWE enforces the
    same rule, so serve runs under it here and must still forward and sinkhole."""
    import dns.message
    import dns.query

    listen = dnsmasq.free_port()
    with dnsmasq.run_dnsmasq("--address=/up.test/192.0.2.10", "--local=/#/") as upstream:
        command = [sys.executable, "-c", MDWE_WRAPPER, "-c"]
        command += ["from aidns.cli.main import app; app()", "serve"]
        command += [f"--listen=127.0.0.1:{listen}", f"--upstream=127.0.0.1:{upstream}"]
        command += [f"--data-dir={tmp_path / 'data'}", f"--config={config}"]
        server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        try:
            assert server.stderr is not None
            for line in server.stderr:
                if "listening on tcp" in line:
                    break
            else:
                pytest.fail(f"serve did not start under MDWE (exit {server.wait()})")
            answers = {}
            for asked in ("a.up.test", "telemetry.lmstudio.ai"):
                query = dns.message.make_query(asked, "A")
                reply = dns.query.udp(query, "127.0.0.1", port=listen, timeout=5)
                answers[asked] = reply.answer[0][0].to_text()
            assert answers == {"a.up.test": "192.0.2.10", "telemetry.lmstudio.ai": "0.0.0.0"}
            assert server.poll() is None
        finally:
            server.terminate()
            server.wait(10)


def test_with_no_upstream_configured_aidns_follows_the_networks_the_machine_joins(
    tmp_path: Path, config: Path
) -> None:
    # Two "networks", each with its nameserver: addresses on the namespace's own loopback.
    # The only aidns here started without --upstream: everything it asks is in the namespace.
    if not os.path.exists(DNSMASQ):
        pytest.skip("dnsmasq is not installed (apt-get install dnsmasq-base)")
    data_dir = tmp_path / "data"
    with namespace("nameserver 10.99.0.1\n") as name:
        resolv = NETNS_ETC / name / "resolv.conf"

        def asked(qname: str) -> str:
            dig = ["dig", "+short", "+tries=1", "+time=2", "@127.0.0.1", qname]
            return str(run_in(name, dig).stdout.strip())

        def answered_within(qname: str, expected: str, timeout_s: float = 10.0) -> bool:
            deadline = time.monotonic() + timeout_s
            while asked(qname) != expected:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.3)
            return True

        nameservers = []
        try:
            for index in (1, 2):
                address = f"10.99.0.{index}"
                run_in(name, ["ip", "addr", "add", f"{address}/32", "dev", "lo"], check=True)
                command = dnsmasq_command(53, f"--address=/up.test/192.0.2.{index}", host=address)
                nameservers.append(subprocess.Popen(in_netns(name, command)))
            with serve_in(name, data_dir, config, upstreams=()) as server:
                assert answered_within("home.up.test", "192.0.2.1", timeout_s=2)
                assert (data_dir / "upstreams.remembered").read_text() == "10.99.0.1\n"
                resolv.write_text("nameserver 10.99.0.2\n")  # joined another network, in place
                assert answered_within("cafe-1.up.test", "192.0.2.2")
                assert (data_dir / "upstreams.remembered").read_text() == "10.99.0.2\n"
                resolv.write_text("nameserver 127.0.0.1\n")  # the system asks aidns itself now
                time.sleep(2.5)
                assert asked("cafe-2.up.test") == "192.0.2.2"  # the last network's, remembered
        finally:
            for process in nameservers:
                process.terminate()
                process.wait(10)
    log = server.stderr.read() if server.stderr else ""
    assert "upstreams now 10.99.0.2 (from /etc/resolv.conf)" in log, log
