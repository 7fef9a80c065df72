"""YAML reading: no anchors or aliases, errors with file and line."""

from __future__ import annotations

import time

import pytest
import yaml

from aidns.resolver import yamlio
from aidns.resolver.errors import ListError, excerpt

BOMB = "\n".join(
    [
        'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]',
        *(f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 9)),
        "top: *l8",
    ]
)


def test_a_billion_laughs_is_refused_at_once_with_its_line() -> None:
    started = time.monotonic()
    with pytest.raises(yaml.YAMLError) as caught:
        yamlio.load(BOMB)
    assert time.monotonic() - started < 1
    error = yamlio.error(caught.value, "lists/bomb.yaml", ListError)
    assert str(error) == (
        "lists/bomb.yaml:1: not valid YAML: anchors and aliases (&name, *name) are not accepted"
    )


@pytest.mark.parametrize("text", ["a: &x 1\n", "a: 1\nb: *x\n", "- &anchor {k: v}\n"])
def test_any_anchor_or_alias_is_refused(text: str) -> None:
    with pytest.raises(yamlio.AliasRefused):
        yamlio.compose(text)


def test_ampersands_and_stars_in_values_are_fine() -> None:
    assert yamlio.load("note: 'a & b'\nname: '*.example'\n") == {
        "note": "a & b",
        "name": "*.example",
    }


def test_excerpts_are_short_and_say_how_long_the_value_was() -> None:
    assert excerpt("abc") == "'abc'"
    long = excerpt("x" * 10_000_000)
    assert len(long) < 100
    assert long.endswith("(10,000,000 characters)")
    assert excerpt(b"\xffname") == repr("\ufffdname")
