"""How every command reports an AidnsError: one line on stderr, exit code 2."""

from __future__ import annotations

import typer

from aidns.resolver.errors import AidnsError


def fail(exc: AidnsError) -> typer.Exit:
    """`raise fail(exc) from None` in a command's `except AidnsError`."""
    typer.echo(f"aidns: {exc}", err=True)
    return typer.Exit(2)
