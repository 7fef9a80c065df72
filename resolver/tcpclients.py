"""TCP clients within bounds: accepting them, the table of open ones, the descriptor budget.

The event loop owns all of it: accepting, admitting, marking clients idle and closing them
happen on the loop's thread only, so the table needs no lock; `status` is the one reader
from another thread.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aidns.resolver.config import TcpConfig

log = logging.getLogger(__name__)

# Descriptors kept for upstream sockets, the query log, list files and the keeper's pipes.
FD_RESERVE = 64
ACCEPT_BATCH = 16  # clients accepted per wake-up: a bound on descriptors briefly over the limit
ACCEPT_PAUSE_S = 0.5  # after EMFILE and the like the listener stays readable: wait, not spin
SAY_AGAIN_S = 60.0  # a repeated complaint of one kind is logged at most this often
OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def raise_open_files_limit() -> int | None:
    """Raises this process's soft limit on open files as far as the hard limit allows; the
    soft limit now, None when there is none (or no `resource` module)."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    log.debug("open files limit: soft %s, hard %s", _limit_text(soft), _limit_text(hard))
    unlimited = resource.RLIM_INFINITY
    # An unlimited hard limit still has a ceiling (nr_open, kern.maxfilesperproc): try less.
    for target in (hard, 1 << 20, 65536, 10240):
        if target == unlimited or (soft != unlimited and target <= soft):
            continue
        if hard != unlimited and target > hard:
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        log.debug("open files limit raised: soft %s, hard %s", target, _limit_text(hard))
        return target
    return None if soft == unlimited else soft


def open_files_limit() -> int | None:
    """The soft limit on open files now; None when there is none."""
    try:
        import resource
    except ImportError:
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def _limit_text(value: int) -> str:
    try:
        import resource
    except ImportError:
        return str(value)
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def client_limit(max_clients: int, open_files: int | None) -> int:
    """How many TCP clients may be open at once: `tcp_max_clients`, or fewer when the open
    files limit less the reserve is lower, so forwarding always has descriptors left."""
    if open_files is None:
        return max_clients
    return max(1, min(max_clients, open_files - FD_RESERVE))


@dataclass(eq=False, slots=True)
class TcpClient:
    """One accepted connection, as the table sees it; the server's loop sets `waiting` while
    it waits for the next query and keeps the queries in progress in `pending`."""

    sock: socket.socket
    pending: set[asyncio.Task[Any]] = field(default_factory=set)
    waiting: bool = False
    transport: asyncio.WriteTransport | None = None

    def idle(self) -> bool:
        return self.waiting and not self.pending and self.transport is not None

    def close_now(self) -> None:
        """Closes at once, unsent answers and all: the descriptor is what is wanted back."""
        if self.transport is not None:
            self.transport.abort()
        else:
            self.sock.close()


class Complaints:
    """Logs a warning of one kind at most once per interval, with the count in between."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self._said_at: dict[str, float] = {}
        self._said_count: Counter[str] = Counter()

    def say(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        now = self.clock()
        said_at = self._said_at.get(kind)
        if said_at is not None and now - said_at < SAY_AGAIN_S:
            return
        since = self.counts[kind] - self._said_count[kind] - 1
        more = f" ({since} more since last said)" if since else ""
        log.warning("%s%s", message, more)
        self._said_at[kind] = now
        self._said_count[kind] = self.counts[kind]


Serve = Callable[[TcpClient], Coroutine[Any, Any, None]]


class TcpClients:
    """Accepts TCP clients on the listening sockets and keeps them within the limit.

    At the limit a new client makes room by closing the client idle the longest, as unbound
    does; with none idle the new one is closed at once. A listener out of descriptors waits
    a moment, closes an idle client, and says so once per kind per interval.
    """

    def __init__(
        self,
        config: TcpConfig,
        serve: Serve,
        open_files: int | None,
        noticed: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.noticed = noticed  # told of every change to what `status` shows
        self.limit = client_limit(config.max_clients, open_files)
        self.serve = serve
        self.closed_idle = 0  # idle clients closed to make room for a new one
        self.refused = 0  # new clients closed at once: none idle to make room
        self.stalled = 0  # clients closed because their answers did not drain in time
        self.complaints = Complaints()
        self._clients: dict[TcpClient, None] = {}  # oldest activity first
        self._tasks: set[asyncio.Task[None]] = set()
        self._listening: list[socket.socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        if self.limit < config.max_clients:
            log.warning(
                "at most %d TCP clients, not tcp_max_clients %d: the open files limit is %s "
                "and %d are kept for upstreams and files; raise it (LimitNOFILE=)",
                self.limit,
                config.max_clients,
                open_files,
                FD_RESERVE,
            )

    def listen(self, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        sock.setblocking(False)
        self._listening.append(sock)
        self._loop.add_reader(sock.fileno(), self._accept, sock)

    def touch(self, client: TcpClient) -> None:
        """A query came: the client is now the most recently active."""
        if client in self._clients:
            del self._clients[client]
            self._clients[client] = None

    def forget(self, client: TcpClient) -> None:
        self._clients.pop(client, None)
        self.noticed()

    def stalled_client(self, client: TcpClient) -> None:
        self.stalled += 1
        self.complaints.say(
            "stalled",
            f"closed a TCP client whose answers waited unread for {self.config.idle_timeout_s:g} s",
        )
        self.forget(client)
        client.close_now()

    def status(self) -> dict[str, Any]:
        """Called from the status writer's thread: it reads numbers and copies the counts
        with one dict() call, which the interpreter lock makes whole; it never iterates the
        loop's live dicts."""
        counts = dict(self.complaints.counts)
        return {
            "clients": len(self._clients),
            "limit": self.limit,
            "closed_idle_for_new": self.closed_idle,
            "refused_at_limit": self.refused,
            "closed_stalled": self.stalled,
            "accept_errors": {
                kind.removeprefix("accept "): count
                for kind, count in counts.items()
                if kind.startswith("accept ")
            },
        }

    def stop_accepting(self) -> None:
        for sock in self._listening:
            if self._loop is not None and sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._listening.clear()

    async def aclose(self) -> None:
        self.stop_accepting()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _accept(self, listener: socket.socket) -> None:
        self.noticed()
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._accept_failed(listener, exc)
                return
            self._admit(sock)

    def _admit(self, sock: socket.socket) -> None:
        if len(self._clients) >= self.limit and not self._close_oldest_idle():
            self.refused += 1
            self.complaints.say(
                "refused",
                f"{self.limit} TCP clients, none idle: closing new ones at once",
            )
            sock.close()
            return
        sock.setblocking(False)
        client = TcpClient(sock)
        self._clients[client] = None
        assert self._loop is not None
        task = self._loop.create_task(self.serve(client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _close_oldest_idle(self, say: bool = True) -> bool:
        oldest = next((client for client in self._clients if client.idle()), None)
        if oldest is None:
            return False
        self.closed_idle += 1
        if say:
            self.complaints.say(
                "closed idle",
                f"{self.limit} TCP clients: closing the one idle the longest for each new one",
            )
        self.forget(oldest)
        oldest.close_now()
        return True

    def _accept_failed(self, listener: socket.socket, exc: OSError) -> None:
        kind = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        self.complaints.say(
            f"accept {kind}",
            f"cannot accept TCP clients: {exc.strerror} ({kind}), with {len(self._clients)} "
            f"open (limit {self.limit}); closing the one idle the longest, trying again shortly",
        )
        if exc.errno not in OUT_OF_RESOURCES or self._loop is None:
            return
        self._close_oldest_idle(say=False)
        self._loop.remove_reader(listener.fileno())
        self._loop.call_later(ACCEPT_PAUSE_S, self._resume, listener)

    def _resume(self, listener: socket.socket) -> None:
        if self._loop is not None and listener in self._listening:
            self._loop.add_reader(listener.fileno(), self._accept, listener)


async def open_streams(
    client: TcpClient, read_ahead_bytes: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Streams over an accepted client's socket; the reader stops the socket once it holds
    twice `read_ahead_bytes` unread."""
    reader, writer = await asyncio.open_connection(sock=client.sock, limit=read_ahead_bytes)
    client.transport = writer.transport
    return reader, writer
