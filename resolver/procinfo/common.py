"""What every platform's process lookup shares: the ProcessLookup contract and its helpers."""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field
from typing import Protocol

from aidns.resolver.query import ProcessInfo, Transport

DEFAULT_BUDGET_S = 0.002
CMDLINE_MAX_CHARS = 200
CMDLINE_READ_BYTES = 4096
SOCKET_FALLBACK_S = 0.0005  # a search of the socket table when the exact lookup found nothing


@dataclass(frozen=True, slots=True)
class SocketOwner:
    """What the kernel's socket table says about a socket: whose it is, and its identity.

    The inode and the cookie (unique since boot; 0 where the table does not give it) together
    name one socket: another socket on the same address and port has others.
    """

    uid: int
    inode: int
    cookie: int = field(default=0, compare=False)

    @property
    def identity(self) -> tuple[int, int]:
        return self.inode, self.cookie


class ProcessLookup(Protocol):
    """Finds the process behind a client's socket. Where `identifies_sockets`, `client_socket`
    names the socket cheaply (about 5 µs on Linux), so what was found can be kept for it."""

    identifies_sockets: bool

    def client_socket(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        fallback_s: float = SOCKET_FALLBACK_S,
    ) -> SocketOwner | None:
        """The client's socket by its exact ends, else a search of at most `fallback_s`; None
        when it is gone, or this platform has no socket table to ask."""
        ...

    def holds(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        identity: tuple[int, int],
    ) -> bool:
        """True while the client's address and port belong to the socket `identity` (inode,
        cookie): the cheapest check there is, for every repeated query."""
        ...

    def find(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        budget_s: float = DEFAULT_BUDGET_S,
        owner: SocketOwner | None = None,
    ) -> ProcessInfo | None:
        """The process holding the client's socket (`owner`, when already known); uid only
        when the budget ran out first; None when not even the socket could be found."""
        ...

    def find_later(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        owner: SocketOwner,
        budget_s: float,
    ) -> ProcessInfo | None:
        """Goes on with a search for `owner` that ran out of budget, off the serving thread and
        never making it wait; None when not found within `budget_s`."""
        ...


class NoSocketIdentity:
    """For lookups that cannot name a client's socket (no socket table to ask): nothing is
    kept per socket, and every query's process is searched for anew."""

    identifies_sockets = False

    def client_socket(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        fallback_s: float = SOCKET_FALLBACK_S,
    ) -> SocketOwner | None:
        return None

    def holds(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        identity: tuple[int, int],
    ) -> bool:
        return False

    def find_later(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        owner: SocketOwner,
        budget_s: float,
    ) -> ProcessInfo | None:
        return None  # never asked: no socket is ever named here


class NullProcessLookup(NoSocketIdentity):
    """For platforms where we cannot see sockets: every query's process is unknown."""

    def find(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        budget_s: float = DEFAULT_BUDGET_S,
        owner: SocketOwner | None = None,
    ) -> ProcessInfo | None:
        return None


def out_of_time(budget_s: float) -> str:
    """The note of a search that found the socket but not its process within `budget_s`."""
    return f"process not found within {budget_s * 1000:g} ms"


def trim_cmdline(raw: bytes, limit: int = CMDLINE_MAX_CHARS) -> str | None:
    """A NUL-separated argv as one line of at most `limit` characters."""
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    text = " ".join(text.split())
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


@functools.lru_cache(maxsize=256)
def user_name(uid: int) -> str | None:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return None


def proc_net_address(text: str) -> tuple[bytes, int]:
    """Packed address and port of a /proc/net row's `ADDRESS:PORT`: the address is hex
    32-bit words in host order, the port hex."""
    address, port = text.split(":")
    words = [int(address[i : i + 8], 16) for i in range(0, len(address), 8)]
    return struct.pack(f"={len(words)}I", *words), int(port, 16)
