from __future__ import annotations

import pytest

from aidns.resolver.procinfo.common import NullProcessLookup, trim_cmdline
from aidns.resolver.query import Transport


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
