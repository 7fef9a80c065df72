from __future__ import annotations

from aidns.resolver.system.nameserver import Nameserver, probe


def test_probe_answers_and_refusals() -> None:
    assert probe(Nameserver("127.0.0.1", 9)) is None  # nothing listens on discard
