"""The access stage: only loopback and the networks in `allow_net` are served.

Description:
    A client outside them gets REFUSED, so aidns is never an open resolver by accident.
Configuration:
    allow_net: CIDRs besides loopback that may query.
Example:
    allow_net: ["192.168.1.0/24"]
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import ClassVar

from aidns.resolver.query import Action, Decision, Query, Rcode
from aidns.resolver.replies import reply

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_REFUSED = Decision(Action.REFUSED, rule="not in allow_net")


class AccessStage:
    name: ClassVar[str] = "access"
    per_client: ClassVar[bool] = True

    def __init__(self, allow_nets: Sequence[Network] = ()) -> None:
        self.allow_nets = tuple(allow_nets)
        self._verdicts: dict[str, bool] = {}

    def allowed(self, host: str) -> bool:
        verdict = self._verdicts.get(host)
        if verdict is None:
            verdict = self._check(host)
            if len(self._verdicts) > 4096:
                self._verdicts.clear()
            self._verdicts[host] = verdict
        return verdict

    def _check(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if address.is_loopback:
            return True
        return any(address in net for net in self.allow_nets)

    def answer(self, query: Query) -> bool:
        if self.allowed(query.client[0]):
            return False
        query.decision = _REFUSED
        query.response = reply(query, Rcode.REFUSED)
        return True
