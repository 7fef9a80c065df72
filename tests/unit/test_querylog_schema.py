from __future__ import annotations

from aidns.resolver.querylog.schema import reversed_name, subtree_range


def test_reversed_names_make_subtrees_ranges() -> None:
    exact, low, high = subtree_range("Sentry.IO.")
    assert exact == "io.sentry"
    for inside in ("o1.ingest.sentry.io", "a.sentry.io"):
        assert low <= reversed_name(inside) < high
    for outside in ("notsentry.io", "sentry.iot", "io"):
        assert not low <= reversed_name(outside) < high
