"""Faults: counted every time, logged when first seen and then at most once an interval."""

from __future__ import annotations

import asyncio
import logging

import pytest

from aidns.resolver.faults import Faults


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_kind_is_logged_once_an_interval_and_always_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    faults = Faults(every_s=60.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="aidns.resolver.faults"):
        for _ in range(1000):
            faults.note("no upstream", "no upstream answered (%s)", "timeout")
        faults.note("other", "another kind")
        clock.now += 61
        faults.note("no upstream", "no upstream answered (%s)", "refused")
    assert faults["no upstream"] == 1001 and faults.counts() == {"no upstream": 1001, "other": 1}
    assert [r.getMessage() for r in caplog.records] == [
        "no upstream answered (timeout)",
        "another kind",
        "no upstream answered (refused) (1000 times in the last 61 s)",
    ]


def test_an_unexpected_error_is_one_line_saying_where(caplog: pytest.LogCaptureFixture) -> None:
    faults = Faults()
    with caplog.at_level(logging.ERROR, logger="aidns.resolver.faults"):
        for key in range(500):
            try:
                {}[key]
            except KeyError as exc:
                faults.unexpected("answering a query", exc)
    (record,) = caplog.records
    assert record.exc_info is None  # no traceback
    assert record.getMessage().startswith("unexpected KeyError while answering a query (at ")
    assert "test_faults.py:" in record.getMessage()
    assert faults.counts() == {"KeyError while answering a query": 500}


def test_the_event_loop_reports_here_instead_of_printing_tracebacks() -> None:
    faults = Faults()

    async def fails() -> None:
        raise ValueError("lost")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(faults.loop_error)
        task = loop.create_task(fails())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        del task  # never awaited: asyncio reports "exception was never retrieved"

    asyncio.run(main())
    import gc

    gc.collect()
    assert faults.counts() == {"ValueError while running the event loop": 1}
