"""Kept TCP and TLS connections to one upstream, reused query after query (RFC 7766)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dns._asyncbackend import StreamSocket  # where dnspython's own signatures take it from

log = logging.getLogger(__name__)

STREAMS_KEPT = 4  # idle TCP or TLS connections kept open per upstream
STREAM_IDLE_S = 10.0  # not reused after this long idle: servers close them (RFC 7766 6.2.3)


class StreamConnections:
    """Connections to one upstream over TCP or TLS, each reused for query after query.

    A connection carries one query at a time (RFC 7766 6.2.1); queries asked at once take
    further connections, and up to `kept` stay open between queries. A reused connection
    that the server has closed meanwhile costs one retry on a new one.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[StreamSocket]],
        kept: int = STREAMS_KEPT,
        idle_s: float = STREAM_IDLE_S,
    ) -> None:
        self._connect = connect
        self.kept = kept
        self.idle_s = idle_s
        self._idle: list[tuple[float, StreamSocket]] = []  # (last used, connection), newest last
        self.opened = 0

    async def exchange(self, ask: Callable[[StreamSocket], Awaitable[bytes]]) -> bytes:
        reused = await self._take_idle()
        if reused is not None:
            try:
                return await self._use(reused, ask)
            except TimeoutError:
                raise
            except (OSError, EOFError) as exc:
                log.debug("a kept connection failed (%s); asking on a new one", exc)
        self.opened += 1
        return await self._use(await self._connect(), ask)

    async def _take_idle(self) -> StreamSocket | None:
        while self._idle:
            used_at, connection = self._idle.pop()
            if time.monotonic() - used_at < self.idle_s:
                return connection
            await connection.close()
        return None

    async def _use(
        self, connection: StreamSocket, ask: Callable[[StreamSocket], Awaitable[bytes]]
    ) -> bytes:
        try:
            response = await ask(connection)
        except BaseException:  # cancelled mid-answer too: what is left on it is unreadable
            await connection.close()
            raise
        if len(self._idle) < self.kept:
            self._idle.append((time.monotonic(), connection))
        else:
            await connection.close()
        return response

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _, connection in idle:
            await connection.close()


async def read_exactly(connection: StreamSocket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await connection.recv(size - len(data), None)
        if not chunk:
            raise EOFError("the server closed the connection")
        data += chunk
    return data
