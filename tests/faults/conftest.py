"""Fixtures for the fault tests: a real dnsmasq upstream on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Dnsmasq, start_dnsmasq


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    upstream = start_dnsmasq(tmp_path)
    yield upstream
    upstream.stop()
