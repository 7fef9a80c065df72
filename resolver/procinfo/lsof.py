"""macOS without libproc: the process behind a socket from lsof's field output."""

from __future__ import annotations

from dataclasses import dataclass

from aidns.resolver.query import Transport


@dataclass(frozen=True, slots=True)
class LsofSocket:
    pid: int
    command: str | None
    uid: int | None
    login: str | None
    fd: str
    protocol: str | None  # "UDP", "TCP"
    local: tuple[str, int] | None
    remote: tuple[str, int] | None


def lsof_command(transport: Transport, client: tuple[str, int]) -> list[str]:
    """Sockets on the client's port, in lsof's field output (-F) for programs."""
    selector = f"-i{transport.value.upper()}:{client[1]}"
    return ["lsof", "-nP", "-w", selector, "-FpcuLftPn"]


def parse_lsof_fields(text: str) -> list[LsofSocket]:
    """lsof -F output: a `p` line opens a process set (c, u, L follow), an `f` line a file
    set (t, P, n follow) within it."""
    found: list[LsofSocket] = []
    process: dict[str, str] = {}
    current: dict[str, str] | None = None

    def flush() -> None:
        if current is not None and "p" in process:
            found.append(_lsof_socket(process, current))

    for line in text.splitlines():
        if not line:
            continue
        key, value = line[0], line[1:]
        if key == "p":
            flush()
            process, current = {"p": value}, None
        elif key == "f":
            flush()
            current = {"f": value}
        elif current is not None:
            current[key] = value
        else:
            process[key] = value
    flush()
    return found


def _lsof_socket(process: dict[str, str], file: dict[str, str]) -> LsofSocket:
    local = remote = None
    name = file.get("n", "")
    if name:
        ends = name.split(" ", 1)[0].split("->")
        local = _lsof_endpoint(ends[0])
        remote = _lsof_endpoint(ends[1]) if len(ends) > 1 else None
    uid = process.get("u")
    return LsofSocket(
        pid=int(process["p"]),
        command=process.get("c"),
        uid=int(uid) if uid and uid.isdigit() else None,
        login=process.get("L"),
        fd=file.get("f", ""),
        protocol=file.get("P"),
        local=local,
        remote=remote,
    )


def _lsof_endpoint(text: str) -> tuple[str, int] | None:
    host, _, port = text.rpartition(":")
    if not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def pick_lsof_socket(
    sockets: list[LsofSocket],
    transport: Transport,
    server: tuple[str, int],
    client: tuple[str, int],
) -> LsofSocket | None:
    """The client's own end: lsof -i:PORT lists both ends of a local connection."""
    unconnected = None
    for sock in sockets:
        if sock.protocol != transport.value.upper() or sock.local is None:
            continue
        if sock.local[1] != client[1]:
            continue
        if sock.remote is not None and sock.remote[1] == server[1]:
            return sock
        if sock.remote is None and transport is Transport.UDP and unconnected is None:
            unconnected = sock
    return unconnected
