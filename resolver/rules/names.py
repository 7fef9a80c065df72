"""The names a person types into the rules commands: one syntax, and the names refused.

    name      the name and every name below it (to remove: every rule for the name)
    =name     exactly the name
    *.name    the name and every name below it, as in list files

A top-level domain, any other public suffix (`co.uk`, `github.io`) and an IP address are
refused unless forced: a rule for one would reach every program's lookups of every name
under it. Public suffixes come from the Public Suffix List snapshot that the
`publicsuffixlist` package ships; it is never fetched at run time.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aidns.resolver.errors import ConfigError
from aidns.resolver.rules.lists import normalize_domain

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList


@dataclass(frozen=True, slots=True)
class RuleName:
    """A name as typed: `exact` is True for `=name`, False for `*.name`, None for a bare name."""

    name: str
    exact: bool | None

    @property
    def text(self) -> str:
        marks = {True: "=", False: "*.", None: ""}
        return marks[self.exact] + self.name


def parse_rule_name(text: str) -> RuleName:
    """`text` read as the rules commands read it; ConfigError says what is wrong."""
    typed = text.strip()
    exact: bool | None = None
    if typed.startswith("="):
        typed, exact = typed[1:], True
    elif typed.startswith("*."):
        typed, exact = typed[2:], False
    try:
        return RuleName(normalize_domain(typed).decode(), exact)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def refusal(name: str) -> str | None:
    """Why a rule for `name` reaches far more than one service, or None when it does not."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return (
            f"{name} is an IP address, not a name: aidns answers lookups of names, so a rule "
            "for it matches nothing a program looks up (block the address in a firewall)"
        )
    if "." not in name:
        return (
            f"{name} is a top-level domain: a rule for it reaches every name under .{name}, "
            "for every program"
        )
    if _suffixes().is_public(name):
        return (
            f"{name} is a public suffix (on the Public Suffix List): names under it belong to "
            "unrelated owners, so a rule for it reaches every one of them, for every program"
        )
    return None


def check_reach(name: str, force: bool) -> None:
    """Refuse a name with a far reach unless `force`; the error says why and how to insist."""
    why = refusal(name)
    if why is not None and not force:
        raise ConfigError(f"refused: {why}. Give --force if that is what you mean.")


@functools.cache
def _suffixes() -> PublicSuffixList:
    from publicsuffixlist import PublicSuffixList  # only the commands that need it pay for it

    return PublicSuffixList(only_icann=False)
