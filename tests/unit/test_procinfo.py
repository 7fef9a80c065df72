from __future__ import annotations

import ctypes
import os
import re
import shutil
import socket
import struct
import sys
from pathlib import Path

import pytest
import yaml

from aidns.resolver.procinfo import macos as macos
from aidns.resolver.procinfo.lookup import (
    NullProcessLookup,
    ProcessLookup,
    Tool,
    ToolCatalogue,
    ToolKind,
    default_catalogue,
    default_lookup,
    load_catalogue,
    parse_tool,
    shipped_catalogue_path,
    trim_cmdline,
)
from aidns.resolver.query import ProcessInfo, Transport

FIXTURES = Path(__file__).parent.parent / "fixtures"


# --- the API --------------------------------------------------------------------------------


def test_default_lookup_fits_the_platform() -> None:
    lookup: ProcessLookup = default_lookup()
    if sys.platform.startswith("linux"):
        from aidns.resolver.procinfo.linux import LinuxProcessLookup

        assert isinstance(lookup, LinuxProcessLookup)
    elif sys.platform == "darwin":
        assert isinstance(lookup, macos.MacProcessLookup)
    else:
        assert isinstance(lookup, NullProcessLookup)


def test_the_null_lookup_knows_nothing() -> None:
    lookup = NullProcessLookup()
    assert lookup.find(Transport.UDP, ("127.0.0.1", 53), ("127.0.0.1", 4000)) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/usr/bin/python3\0-m\0vllm.entrypoints\0", "/usr/bin/python3 -m vllm.entrypoints"),
        (b"ollama serve", "ollama serve"),  # a process that rewrote its argv with spaces
        (b"a\0\0b\0", "a b"),
        (b"tab\tand\nnewline\0", "tab and newline"),
        (b"", None),
        (b"\0\0", None),
        (b"caf\xc3\xa9\0\xff", "café �"),
        (b"x" * 300, "x" * 199 + "…"),
    ],
)
def test_trim_cmdline(raw: bytes, expected: str | None) -> None:
    assert trim_cmdline(raw) == expected


# --- the tool catalogue -----------------------------------------------------------------------

# (name, exe, cmdline) -> tool, or None for programs that must stay untagged
TAGS = [
    ("ollama", "/usr/local/bin/ollama", "/usr/local/bin/ollama serve", "ollama"),
    ("ollama", "/usr/bin/ollama", "ollama runner --model /x", "ollama"),
    ("Ollama", "/Applications/Ollama.app/Contents/MacOS/Ollama", None, "ollama"),
    (
        "LM Studio Helper",
        "/Applications/LM Studio.app/Contents/Frameworks/LM Studio Helper.app/Contents/MacOS/"
        "LM Studio Helper",
        None,
        "lmstudio",
    ),
    ("lm-studio", "/tmp/.mount_LM-StuAbc123/lm-studio", None, "lmstudio"),
    ("lms", "/home/u/.lmstudio/bin/lms", "lms server start", "lmstudio"),
    ("Jan", "/Applications/Jan.app/Contents/MacOS/Jan", None, "jan"),
    ("chat", "/home/u/gpt4all/bin/chat", "/home/u/gpt4all/bin/chat", "gpt4all"),
    ("anythingllm-des", "/tmp/.mount_Anythi1/anythingllm-desktop", None, "anythingllm"),
    (
        "llama-server",
        "/opt/llama.cpp/build/bin/llama-server",
        "llama-server -m m.gguf",
        "llama.cpp",
    ),
    ("python3", "/usr/bin/python3.11", "python3 -m llama_cpp.server --model m.gguf", "llama.cpp"),
    ("local-ai", "/usr/local/bin/local-ai", "local-ai run", "localai"),
    (
        "cursor",
        "/tmp/.mount_cursorXyz/cursor",
        "/tmp/.mount_cursorXyz/cursor --type=utility",
        "cursor",
    ),
    ("Cursor Helper (", "/Applications/Cursor.app/Contents/Frameworks/x", None, "cursor"),
    ("windsurf", "/usr/share/windsurf/windsurf", None, "windsurf"),
    (
        "language_server",
        "/usr/share/windsurf/resources/app/extensions/windsurf/bin/language_server_linux_x64",
        None,
        "windsurf",
    ),
    (
        "code",
        "/usr/share/code/code",
        "/usr/share/code/code --type=utility --utility-sub-type=node",
        "vscode",
    ),
    (
        "Code Helper (Pl",
        "/Applications/Visual Studio Code.app/Contents/Frameworks/x",
        None,
        "vscode",
    ),
    (
        "node",
        "/usr/bin/node",
        "node /usr/lib/node_modules/@continuedev/cli/dist/index.js",
        "continue",
    ),
    ("continue-binary", "/home/u/.continue/index/continue-binary", None, "continue"),
    ("node", "/usr/bin/node", "node server.js", None),
    ("node", "/usr/bin/node", "node /usr/local/bin/claude", "claude-code"),
    ("python3", "/usr/bin/python3.11", "/usr/bin/python3 /home/u/.venv/bin/vllm serve m", "vllm"),
    (
        "pt_main_thread",
        "/usr/bin/python3.11",
        "python -m vllm.entrypoints.openai.api_server",
        "vllm",
    ),
    ("vllm", "/usr/bin/python3.11", "/usr/bin/python3 /usr/local/bin/vllm serve m", "vllm"),
    (
        "python3",
        "/usr/bin/python3.11",
        "/usr/bin/python3 -m ipykernel_launcher -f /root/.local/share/jupyter/runtime/k.json",
        "jupyter",
    ),
    (
        "jupyter-lab",
        "/usr/bin/python3.11",
        "/usr/bin/python3 /usr/local/bin/jupyter-lab",
        "jupyter",
    ),
    (
        "streamlit",
        "/usr/bin/python3.11",
        "/usr/bin/python3 /usr/local/bin/streamlit run app.py",
        "streamlit",
    ),
    ("python3", "/usr/bin/python3.11", "python3 -m streamlit run app.py", "streamlit"),
    ("gradio", "/usr/bin/python3.11", "/usr/bin/python3 /usr/local/bin/gradio app.py", "gradio"),
    (
        "open-webui",
        "/usr/bin/python3.11",
        "/usr/bin/python3 /usr/local/bin/open-webui serve",
        "open-webui",
    ),
    ("python3", "/usr/bin/python3.11", "python3 -m uvicorn open_webui.main:app", "open-webui"),
    (
        "chroma",
        "/usr/bin/python3.11",
        "/usr/bin/python3 /usr/local/bin/chroma run --path db",
        "chromadb",
    ),
    (
        "python3.11",
        "/home/u/text-generation-webui/installer_files/env/bin/python3.11",
        "python server.py --listen",
        "text-generation-webui",
    ),
    ("python3", "/usr/bin/python3.11", "python3 app.py", None),
    ("bash", "/home/jan/bin/tool", "/home/jan/bin/tool", None),  # a user called jan
    ("curl", "/usr/bin/curl", "curl https://example.com/vllm", None),
]


@pytest.fixture(scope="module")
def catalogue() -> ToolCatalogue:
    return default_catalogue()


@pytest.mark.parametrize(("name", "exe", "cmdline", "tool"), TAGS)
def test_tools_are_recognised(
    catalogue: ToolCatalogue,
    name: str,
    exe: str,
    cmdline: str | None,
    tool: str | None,
) -> None:
    info = ProcessInfo(4242, name, exe=exe, cmdline=cmdline, uid=1000, user="u")
    tagged = catalogue.tag(info)
    assert tagged.tool == tool
    assert not tagged.relay and tagged.note is None
    assert (tagged.pid, tagged.name, tagged.exe, tagged.uid, tagged.user) == (
        4242,
        name,
        exe,
        1000,
        "u",
    )


@pytest.mark.parametrize(
    ("name", "exe", "relay"),
    [
        ("systemd-resolve", "/usr/lib/systemd/systemd-resolved", "systemd-resolved"),
        ("systemd-resolve", None, "systemd-resolved"),  # comm keeps 15 of its 16 characters
        ("dnsmasq", "/usr/sbin/dnsmasq", "dnsmasq"),
        ("mDNSResponder", "/usr/sbin/mDNSResponder", "mdnsresponder"),
        ("nscd", "/usr/sbin/nscd", "nscd"),
        ("unbound", "/usr/sbin/unbound", "unbound"),
    ],
)
def test_system_resolvers_are_relays_with_a_note(
    catalogue: ToolCatalogue,
    name: str,
    exe: str | None,
    relay: str,
) -> None:
    tagged = catalogue.tag(ProcessInfo(101, name, exe=exe, uid=101))
    assert (tagged.tool, tagged.relay) == (relay, True)
    assert tagged.note is not None and "cannot be seen" in tagged.note


def test_uid_only_information_is_left_alone(catalogue: ToolCatalogue) -> None:
    info = ProcessInfo(None, None, uid=1000, note="process not found within 2 ms")
    assert catalogue.tag(info) is info


def test_tools_yaml_schema() -> None:
    """Every entry is well formed, names are unique, relays explain themselves."""
    document = yaml.safe_load(shipped_catalogue_path().read_text(encoding="utf-8"))
    assert set(document) == {"tools"}
    names = [entry["name"] for entry in document["tools"]]
    assert len(names) == len(set(names))
    for entry in document["tools"]:
        assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*", entry["name"])
        assert set(entry) <= {"name", "description", "homepage", "kind", "note", "match"}
        assert entry["description"].strip()
        assert entry.get("kind", "ai") in ("ai", "relay")
        if entry.get("kind") == "relay":
            assert entry["note"].strip()
        assert entry["match"], entry["name"]
        for rule in entry["match"]:
            assert rule and set(rule) <= {"process", "exe", "cmdline"}, entry["name"]
            for patterns in rule.values():
                assert isinstance(patterns, list) and all(isinstance(p, str) for p in patterns)
            for pattern in rule.get("cmdline", []):
                re.compile(pattern)
        tool = parse_tool(entry)
        assert isinstance(tool, Tool)
    catalogue = default_catalogue()
    assert catalogue.problems == ()
    assert len(catalogue) == len(names)
    wanted_tools = {
        "ollama", "lmstudio", "jan", "gpt4all", "anythingllm", "cursor", "windsurf", "vscode",
        "continue", "vllm", "gradio", "streamlit", "jupyter", "open-webui", "chromadb",
        "text-generation-webui", "llama.cpp", "localai",
    }  # fmt: skip
    assert wanted_tools <= set(names)
    relays = {t.name for t in catalogue.tools if t.kind is ToolKind.RELAY}
    assert {"systemd-resolved", "dnsmasq", "mdnsresponder", "nscd", "unbound"} <= relays


def test_relays_come_before_tools(catalogue: ToolCatalogue) -> None:
    kinds = [tool.kind for tool in catalogue.tools]
    assert kinds == sorted(kinds, key=lambda kind: kind is not ToolKind.RELAY)


def test_own_catalogue_overrides_and_extends(tmp_path: Path) -> None:
    own = tmp_path / "tools.yaml"
    own.write_text(
        "tools:\n"
        "  - name: ollama\n"
        "    description: only my build\n"
        "    match: [{exe: ['/opt/mine/ollama']}]\n"
        "  - name: my-agent\n"
        "    description: an in-house agent\n"
        "    match: [{process: [python3], cmdline: ['agent\\.py']}]\n"
    )
    catalogue = load_catalogue([shipped_catalogue_path(), own])
    assert catalogue.problems == ()
    assert catalogue.tools[0].name == "my-agent"
    ollama = catalogue.get("ollama")
    assert ollama is not None and ollama.description == "only my build"
    assert catalogue.tag(ProcessInfo(1, "ollama", exe="/usr/bin/ollama")).tool is None
    assert catalogue.tag(ProcessInfo(1, "ollama", exe="/opt/mine/ollama")).tool == "ollama"
    assert catalogue.tag(ProcessInfo(1, "python3", cmdline="python3 agent.py")).tool == "my-agent"


def test_bad_entries_are_skipped_and_reported_with_their_line(tmp_path: Path) -> None:
    own = tmp_path / "tools.yaml"
    own.write_text(
        "tools:\n"
        "  - name: good\n"
        "    description: fine\n"
        "    match: [{process: [good]}]\n"
        "  - name: Bad Name\n"
        "    match: [{process: [x]}]\n"
        "  - name: no-rules\n"
        "    match: []\n"
        "  - name: bad-regex\n"
        "    match: [{cmdline: ['(']}]\n"
        "  - name: bad-key\n"
        "    match: [{path: ['/x']}]\n"
        "  - name: silent-relay\n"
        "    kind: relay\n"
        "    match: [{process: [r]}]\n"
        "  - name: good\n"
        "    match: [{process: [again]}]\n"
    )
    catalogue = load_catalogue([own])
    assert [tool.name for tool in catalogue.tools] == ["good"]
    lines = [int(problem.split(":")[1]) for problem in catalogue.problems]
    assert lines == [5, 7, 9, 11, 13, 16]
    assert all(problem.startswith(f"{own}:") for problem in catalogue.problems)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tools: [unclosed\n", "not valid YAML"),
        ("- just a list\n", "a mapping with a `tools:` list"),
    ],
)
def test_a_broken_catalogue_file_is_reported_not_raised(
    tmp_path: Path, text: str, problem: str
) -> None:
    own = tmp_path / "tools.yaml"
    own.write_text(text)
    catalogue = load_catalogue([shipped_catalogue_path(), own])
    assert len(catalogue) > 0 and len(catalogue.problems) == 1
    assert problem in catalogue.problems[0]


def test_a_missing_catalogue_file_is_fine(tmp_path: Path) -> None:
    assert load_catalogue([tmp_path / "tools.yaml"]).problems == ()


# --- macOS, without a Mac: struct layouts, decoding, lsof output, the search -----------------


def test_libproc_struct_layouts_match_sys_proc_info_h() -> None:
    """Sizes and offsets of <sys/proc_info.h> (xnu) on 64-bit macOS, Intel and Apple silicon."""
    assert ctypes.sizeof(macos.ProcFdInfo) == 8
    assert ctypes.sizeof(macos.ProcFileInfo) == 24
    assert ctypes.sizeof(macos.VinfoStat) == 136
    assert ctypes.sizeof(macos.SockbufInfo) == 24
    assert ctypes.sizeof(macos.InSockInfo) == 80
    assert ctypes.sizeof(macos.TcpSockInfo) == 120
    assert ctypes.sizeof(macos.SocketProto) == 528
    assert ctypes.sizeof(macos.SocketInfo) == 768
    assert ctypes.sizeof(macos.SocketFdInfo) == 792
    assert ctypes.sizeof(macos.ProcBsdInfo) == 136
    psi = macos.SocketFdInfo.psi.offset
    assert psi + macos.SocketInfo.soi_family.offset == 184
    assert psi + macos.SocketInfo.soi_kind.offset == 256
    proto = psi + macos.SocketInfo.soi_proto.offset
    assert proto == 264
    assert proto + macos.InSockInfo.insi_lport.offset == 268
    assert macos.InSockInfo.insi_laddr.offset == 48
    assert macos.ProcBsdInfo.pbi_uid.offset == 20
    assert macos.ProcBsdInfo.pbi_comm.offset == 48


def fdinfo(
    kind: int, family: int, protocol: int, local: tuple[str, int], remote: tuple[str, int], uid: int
) -> macos.SocketFdInfo:
    """A socket_fdinfo as the kernel fills it: ports in network order, v4 in the last 4 bytes."""
    info = macos.SocketFdInfo()
    info.psi.soi_kind = kind
    info.psi.soi_family = family
    info.psi.soi_protocol = protocol
    info.psi.soi_stat.vst_uid = uid
    ini = (
        info.psi.soi_proto.pri_tcp.tcpsi_ini
        if kind == macos.SOCKINFO_TCP
        else info.psi.soi_proto.pri_in
    )
    ini.insi_lport = struct.unpack("=H", struct.pack("!H", local[1]))[0]
    ini.insi_fport = struct.unpack("=H", struct.pack("!H", remote[1]))[0]
    for field, (ip, _) in (("insi_laddr", local), ("insi_faddr", remote)):
        packed = socket.inet_pton(family, ip)
        address = getattr(ini, field)
        if family == socket.AF_INET:
            address.ina_46.i46a_addr4[:] = list(packed)
        else:
            address.ina_6[:] = list(packed)
    return info


def test_socket_fdinfo_is_decoded() -> None:
    udp = fdinfo(
        macos.SOCKINFO_IN, socket.AF_INET, 17, ("127.0.0.1", 53124), ("127.0.0.1", 53), 501
    )
    assert macos.decode_socket_fdinfo(udp) == macos.InetSocket(
        17, socket.AF_INET, bytes([127, 0, 0, 1]), 53124, bytes([127, 0, 0, 1]), 53, 501
    )
    tcp = fdinfo(macos.SOCKINFO_TCP, socket.AF_INET6, 6, ("::1", 60000), ("::1", 53), 0)
    decoded = macos.decode_socket_fdinfo(tcp)
    assert decoded is not None
    assert (decoded.protocol, decoded.local_port, decoded.remote_port) == (6, 60000, 53)
    assert decoded.local_ip == socket.inet_pton(socket.AF_INET6, "::1")
    unix = macos.SocketFdInfo()
    unix.psi.soi_kind = 3  # SOCKINFO_UN
    assert macos.decode_socket_fdinfo(unix) is None


def test_procargs2_is_parsed() -> None:
    raw = (
        struct.pack("<i", 3)
        + b"/usr/local/bin/ollama\0\0\0\0"
        + b"ollama\0serve\0--verbose\0"
        + b"HOME=/Users/u\0PATH=/usr/bin\0"
    )
    assert macos.parse_procargs2(raw) == "ollama serve --verbose"
    assert macos.parse_procargs2(b"\0\0") is None


LSOF_CASES = [
    # fixture, transport, server, client, pid, command
    ("udp-sendto", Transport.UDP, ("127.0.0.1", 45125), ("127.0.0.1", 35030), 30521, "python3"),
    (
        "udp-connect",
        Transport.UDP,
        ("127.0.0.1", 45843),
        ("127.0.0.1", 34679),
        30523,
        "LM Studio Helpe",
    ),
    ("udp6-connect", Transport.UDP, ("::1", 42272), ("::1", 51066), 30525, "python3"),
    ("tcp-connect", Transport.TCP, ("127.0.0.1", 55785), ("127.0.0.1", 49528), 30527, "python3"),
]


def lsof_fixture(name: str) -> str:
    text = (FIXTURES / "lsof" / f"{name}.txt").read_text()
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))


@pytest.mark.parametrize(("fixture", "transport", "server", "client", "pid", "command"), LSOF_CASES)
def test_recorded_lsof_output_names_the_client(
    fixture: str,
    transport: Transport,
    server: tuple[str, int],
    client: tuple[str, int],
    pid: int,
    command: str,
) -> None:
    sockets = macos.parse_lsof_fields(lsof_fixture(fixture))
    found = macos.pick_lsof_socket(sockets, transport, server, client)
    assert found is not None
    assert (found.pid, found.command, found.uid, found.login) == (pid, command, 0, "root")
    assert found.local is not None and found.local[1] == client[1]


def test_lsof_lists_both_ends_of_a_tcp_connection() -> None:
    sockets = macos.parse_lsof_fields(lsof_fixture("tcp-connect"))
    assert [(s.pid, s.fd, s.local, s.remote) for s in sockets] == [
        (30480, "4", ("127.0.0.1", 55785), ("127.0.0.1", 49528)),
        (30527, "3", ("127.0.0.1", 49528), ("127.0.0.1", 55785)),
    ]


def test_lsof_unconnected_udp_has_no_remote_end() -> None:
    (sock,) = macos.parse_lsof_fields(lsof_fixture("udp-sendto"))
    assert (sock.protocol, sock.local, sock.remote) == ("UDP", ("*", 35030), None)
    assert macos.pick_lsof_socket([sock], Transport.TCP, ("127.0.0.1", 53), ("*", 35030)) is None


def test_lsof_command() -> None:
    assert macos.lsof_command(Transport.UDP, ("127.0.0.1", 5353)) == [
        "lsof", "-nP", "-w", "-iUDP:5353", "-FpcuLftPn",
    ]  # fmt: skip


def test_the_lsof_fallback_runs_lsof(tmp_path: Path) -> None:
    fake_lsof = tmp_path / "lsof"
    fake_lsof.write_text(f"#!/bin/sh\ncat '{FIXTURES / 'lsof' / 'tcp-connect.txt'}'\n")
    fake_lsof.chmod(0o755)
    lookup = macos.MacProcessLookup(use_libproc=False, lsof=str(fake_lsof))
    info = lookup.find(Transport.TCP, ("127.0.0.1", 55785), ("127.0.0.1", 49528), budget_s=5)
    assert info == ProcessInfo(30527, "python3", uid=0, user="root")


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("lsof") is None,
    reason="runs the real lsof, whose -F output is the same on Linux",
)
def test_the_lsof_fallback_with_the_real_lsof() -> None:
    lookup = macos.MacProcessLookup(use_libproc=False)
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        server.bind(("127.0.0.1", 0))
        client.connect(server.getsockname())
        client.send(b"q")
        _, peer = server.recvfrom(16)
        info = lookup.find(Transport.UDP, server.getsockname(), peer, budget_s=10)
    comm = Path("/proc/self/comm").read_text().strip()
    assert info is not None and (info.pid, info.name, info.uid) == (os.getpid(), comm, os.getuid())


class FakeLibProc:
    """Processes, their socket fds, and each socket's ends."""

    def __init__(self) -> None:
        self.sockets: dict[int, dict[int, macos.InetSocket]] = {}
        self.asked: list[int] = []

    def add(self, pid: int, fds: dict[int, macos.InetSocket] | None = None) -> None:
        self.sockets[pid] = dict(fds or {})

    def list_pids(self) -> list[int]:
        return list(self.sockets)

    def socket_fds(self, pid: int) -> list[int] | None:
        self.asked.append(pid)
        fds = self.sockets.get(pid)
        return None if fds is None else list(fds)

    def socket(self, pid: int, fd: int) -> macos.InetSocket | None:
        return self.sockets.get(pid, {}).get(fd)

    def describe(self, pid: int) -> ProcessInfo | None:
        return ProcessInfo(pid, f"proc{pid}", uid=501) if pid in self.sockets else None


LOOPBACK = bytes([127, 0, 0, 1])


def inet(protocol: int, local_port: int, remote_port: int) -> macos.InetSocket:
    remote = LOOPBACK if remote_port else bytes(4)
    return macos.InetSocket(
        protocol, socket.AF_INET, LOOPBACK, local_port, remote, remote_port, 501
    )


def test_mac_search_finds_new_processes_first_then_remembers() -> None:
    libproc = FakeLibProc()
    for pid in (100, 200, 300):
        libproc.add(pid)
    lookup = macos.MacProcessLookup(libproc=libproc)
    libproc.add(400, {3: inet(17, 40000, 0)})  # an unconnected UDP client, started just now
    libproc.add(350)
    info = lookup.find(Transport.UDP, ("127.0.0.1", 53), ("127.0.0.1", 40000), budget_s=1)
    assert info == ProcessInfo(400, "proc400", uid=501)
    assert libproc.asked == [400]
    libproc.asked.clear()
    libproc.sockets[400][3] = inet(17, 40001, 53)  # the same fd again: no listing at all
    info = lookup.find(Transport.UDP, ("127.0.0.1", 53), ("127.0.0.1", 40001), budget_s=1)
    assert info is not None and info.pid == 400 and libproc.asked == []


def test_mac_search_takes_the_clients_end_of_a_tcp_connection() -> None:
    libproc = FakeLibProc()
    libproc.add(100, {4: inet(6, 53, 50000)})  # aidns's accepted socket
    libproc.add(200, {3: inet(6, 50000, 53)})  # the client
    lookup = macos.MacProcessLookup(libproc=libproc)
    info = lookup.find(Transport.TCP, ("127.0.0.1", 53), ("127.0.0.1", 50000), budget_s=1)
    assert info is not None and info.pid == 200
    assert lookup.find(Transport.UDP, ("127.0.0.1", 53), ("127.0.0.1", 50000), 1) is None


def test_mac_search_skips_processes_it_may_not_read() -> None:
    libproc = FakeLibProc()
    libproc.add(100, {3: inet(17, 40000, 53)})
    lookup = macos.MacProcessLookup(libproc=libproc)
    libproc.sockets[300] = None  # type: ignore[assignment]  # another user's process
    info = lookup.find(Transport.UDP, ("127.0.0.1", 53), ("127.0.0.1", 40000), budget_s=1)
    assert info is not None and info.pid == 100
