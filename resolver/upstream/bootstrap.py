"""Finding upstreams given by name: through the bootstrap servers, else the system's lookup."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Protocol

from aidns.resolver.endpoints import UpstreamSpec, is_ip
from aidns.resolver.errors import UpstreamError

AddressFinder = Callable[[str], Awaitable[str]]


class Asked(Protocol):
    """Whoever answered a bootstrap query, as far as a failure message needs it."""

    @property
    def spec(self) -> UpstreamSpec: ...


Resolve = Callable[[bytes], Awaitable[tuple[bytes, Asked]]]


async def system_address(host: str) -> str:
    """The operating system's lookup: loops when the system resolves through aidns itself."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return str(infos[0][4][0])


async def find_address_through(resolve: Resolve, host: str) -> str:
    """An IPv4 address of `host`, else an IPv6 one, as the servers behind `resolve` answer."""
    import dns.message  # only upstreams given by name need it: not imported at start-up
    import dns.rdatatype

    problems = []
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        query = dns.message.make_query(host, rdtype)
        try:
            response, asked = await resolve(query.to_wire())
        except UpstreamError as exc:
            problems.append(str(exc))
            continue
        for rrset in dns.message.from_wire(response).answer:
            if rrset.rdtype == rdtype:
                return str(next(iter(rrset)).address)
        problems.append(f"{asked.spec} has no {dns.rdatatype.to_text(rdtype)} record")
    raise UpstreamError(f"cannot find the address of {host}: {'; '.join(problems)}")


class HostAddress:
    """The IP address of one upstream's host: the IP it was given by, or its name looked up
    once through `find` (the bootstrap servers, else the system) and again after `forget`."""

    def __init__(self, host: str, find: AddressFinder | None = None) -> None:
        self.host = host
        self.find = find or system_address
        self.by_name = not is_ip(host)
        self._address = None if self.by_name else host
        self._looking_up = asyncio.Lock()

    async def get(self) -> str:
        if self._address is None:
            async with self._looking_up:
                if self._address is None:
                    self._address = await self.find(self.host)
        return self._address

    def forget(self) -> None:
        """The name may point elsewhere now: look it up again before the next query."""
        if self.by_name:
            self._address = None
