"""The upstream pool: each upstream's health, and asking the best ones within one time budget."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from aidns.resolver.endpoints import UpstreamSpec
from aidns.resolver.errors import ConfigError, UpstreamError
from aidns.resolver.query import Rcode
from aidns.resolver.upstream.bootstrap import AddressFinder, find_address_through
from aidns.resolver.upstream.exchange import UpstreamLink
from aidns.resolver.upstream.streams import StreamConnections

log = logging.getLogger(__name__)

EWMA_WEIGHT = 0.3  # weight of the newest RTT sample
RETRY_AFTER_S = (2.0, 4.0, 8.0, 16.0, 32.0, 60.0)  # after 1, 2, ... failures in a row
FIND_AGAIN_AFTER_FAILURES = 3  # an upstream given by name is looked up again after these


class Upstream:
    """One upstream server with its health: EWMA of RTT, consecutive failures, last failure time."""

    def __init__(
        self,
        spec: UpstreamSpec,
        verify: bool | str = True,
        find_address: AddressFinder | None = None,
    ) -> None:
        self.spec = spec
        self.link = UpstreamLink(spec, verify, find_address)
        self.rtt_s: float | None = None
        self.failures = 0
        self.last_failure_s: float | None = None  # time.monotonic()

    def __repr__(self) -> str:
        return f"Upstream({self.spec}, rtt_s={self.rtt_s}, failures={self.failures})"

    @property
    def streams(self) -> StreamConnections:
        """Its kept TCP or TLS connections."""
        return self.link.streams

    def record_success(self, rtt_s: float) -> None:
        self.failures = 0
        old = self.rtt_s
        self.rtt_s = rtt_s if old is None else old + EWMA_WEIGHT * (rtt_s - old)

    def record_failure(self, now_s: float) -> None:
        self.failures += 1
        self.last_failure_s = now_s
        if self.failures % FIND_AGAIN_AFTER_FAILURES == 0:
            self.link.address.forget()

    def cooling_down(self, now_s: float) -> bool:
        """Failed lately: asked only after the healthy ones until the back-off has passed."""
        if not self.failures or self.last_failure_s is None:
            return False
        return now_s - self.last_failure_s < RETRY_AFTER_S[min(self.failures, 6) - 1]

    async def exchange(self, query_wire: bytes, timeout_s: float) -> bytes:
        """Ask this upstream once; see UpstreamLink.exchange."""
        return await self.link.exchange(query_wire, timeout_s)

    async def aclose(self) -> None:
        await self.link.aclose()


class UpstreamPool:
    """The configured upstreams, asked best first, all within one time budget per query.

    Upstreams given by name are found through `bootstrap` (servers given by IP), or the
    operating system when there are none.
    """

    def __init__(
        self,
        specs: Sequence[UpstreamSpec],
        timeout_s: float = 2.0,
        verify: bool | str = True,
        bootstrap: Sequence[UpstreamSpec] = (),
    ) -> None:
        if not specs:
            raise ConfigError("no upstream servers")
        self.bootstrap = UpstreamPool(bootstrap, timeout_s, verify) if bootstrap else None
        self.verify = verify
        self.upstreams = [self._upstream(spec) for spec in specs]
        self.timeout_s = timeout_s

    def _upstream(self, spec: UpstreamSpec) -> Upstream:
        return Upstream(spec, self.verify, self.bootstrap.find_address if self.bootstrap else None)

    @property
    def specs(self) -> tuple[UpstreamSpec, ...]:
        return tuple(upstream.spec for upstream in self.upstreams)

    async def replace(
        self, specs: Sequence[UpstreamSpec], bootstrap: Sequence[UpstreamSpec] = ()
    ) -> None:
        """Ask `specs` from now on; an upstream in both lists keeps its health and connections."""
        if not specs:
            raise ConfigError("no upstream servers")
        if bootstrap and self.bootstrap is not None:
            await self.bootstrap.replace(bootstrap)
        elif bootstrap:
            self.bootstrap = UpstreamPool(bootstrap, self.timeout_s, self.verify)
        current = {upstream.spec: upstream for upstream in self.upstreams}
        self.upstreams = [
            current.pop(spec) if spec in current else self._upstream(spec) for spec in specs
        ]
        for gone in current.values():
            await gone.aclose()

    async def find_address(self, host: str) -> str:
        """An IPv4 address of `host`, else an IPv6 one, as these upstreams answer."""
        return await find_address_through(self.resolve, host)

    def ranked(self, now_s: float) -> list[Upstream]:
        """Healthy before cooling down, then lowest RTT. An untried upstream counts as fastest,
        so each gets measured once; ties keep the configured order (the sort is stable)."""
        if len(self.upstreams) == 1:
            return self.upstreams[:]
        return sorted(self.upstreams, key=lambda u: (u.cooling_down(now_s), u.rtt_s or 0.0))

    async def resolve(self, query_wire: bytes) -> tuple[bytes, Upstream]:
        """Ask upstreams in turn until one answers other than SERVFAIL or REFUSED; each try
        gets an equal share of what is left of the budget. An all-SERVFAIL round returns
        the last SERVFAIL; UpstreamError when none answered."""
        deadline_s = time.monotonic() + self.timeout_s
        ranked = self.ranked(time.monotonic())
        servfail: tuple[bytes, Upstream] | None = None
        problems: list[str] = []
        for left, upstream in zip(range(len(ranked), 0, -1), ranked, strict=True):
            sent_s = time.monotonic()
            budget_s = (deadline_s - sent_s) / left
            if budget_s <= 0:
                break
            try:
                response = await upstream.exchange(query_wire, budget_s)
            except UpstreamError as exc:
                upstream.record_failure(time.monotonic())
                problems.append(str(exc))
                log.debug("%s", exc)
                continue
            rcode = response[3] & 0x0F
            if rcode not in (Rcode.SERVFAIL, Rcode.REFUSED):
                upstream.record_success(time.monotonic() - sent_s)
                return response, upstream
            upstream.record_failure(time.monotonic())
            problems.append(f"{upstream.spec}: {Rcode(rcode).name}")
            log.debug("%s", problems[-1])
            if rcode == Rcode.SERVFAIL:
                servfail = response, upstream
        if servfail is not None:
            return servfail
        raise UpstreamError("; ".join(problems) or f"no time left in {self.timeout_s:g} s")

    async def aclose(self) -> None:
        for upstream in self.upstreams:
            await upstream.aclose()
        if self.bootstrap is not None:
            await self.bootstrap.aclose()
