from __future__ import annotations

import pytest

from aidns.resolver.rules.lists import normalize_domain


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("Sentry.IO.", b"sentry.io"),
        ("  a-b_c.example ", b"a-b_c.example"),
        ("bücher.example", b"xn--bcher-kva.example"),
    ],
)
def test_normalize_domain(text: str, wire: bytes) -> None:
    assert normalize_domain(text) == wire


@pytest.mark.parametrize(
    "text", ["", "a..b", "-a.example", "a-.example", "a b", "x" * 64 + ".example", "a/b"]
)
def test_normalize_domain_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        normalize_domain(text)
