"""How every command reports an AidnsError: one line on stderr, exit code 2."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer

from aidns.resolver.errors import AidnsError

P = ParamSpec("P")
R = TypeVar("R")


def fail(exc: AidnsError) -> typer.Exit:
    """Print `exc` as aidns's one-line error and return the exit to raise."""
    typer.echo(f"aidns: {exc}", err=True)
    return typer.Exit(2)


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command so that an AidnsError it raises ends it with `fail`."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except AidnsError as exc:
            raise fail(exc) from None

    return run
