"""The `aidns` typer app before any command is added: --version and --help."""

from __future__ import annotations

import typer

HELP = "A DNS sinkhole for one machine that knows which AI tool phones home."


def new_app() -> typer.Typer:
    """The `aidns` app with no commands yet: --version and --help."""
    app = typer.Typer(
        name="aidns",
        help=HELP,
        no_args_is_help=True,
        add_completion=True,
        rich_markup_mode=None,  # plain help: no <bool> on flags
        pretty_exceptions_enable=False,
    )

    def _version(value: bool) -> None:
        if value:
            import importlib.metadata

            typer.echo(f"aidns {importlib.metadata.version('aidns')}")
            raise typer.Exit()

    @app.callback()
    def main(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version."
        ),
    ) -> None:
        """A DNS sinkhole for one machine that knows which AI tool phones home."""

    return app
