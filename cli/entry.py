"""The `aidns` console script: `serve` imports only what serving needs, under the install's
hash seed from its first line, so a restart that maps the last rule snapshot answers soon."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        _under_kept_seed(sys.argv[2:])
        from aidns.cli import launch

        options = launch.serve_options(sys.argv[2:])
        if options is not None:
            launch.serve(options)
            return
        from aidns.cli.errors import reports_errors
        from aidns.cli.root import new_app
        from aidns.cli.serve import serve

        app = new_app()
        app.command()(reports_errors(serve))
    else:
        from aidns.cli.main import app
    app()


def _under_kept_seed(args: list[str]) -> None:
    """Start again at once under the seed the data dir keeps, before the heavy imports; the
    first start, which makes the seed, starts again later (see hashseed.run_under_seed)."""
    from aidns.resolver.system.hashseed import exec_under_kept_seed

    data_dir = _option(args, "--data-dir") or os.environ.get("AIDNS_DATA_DIR")
    if data_dir is None:
        from aidns.resolver.config import resolve_data_dir
        from aidns.resolver.errors import AidnsError

        config = _option(args, "--config") or os.environ.get("AIDNS_CONFIG")
        try:
            data_dir = str(resolve_data_dir(Path(config) if config else None, None))
        except AidnsError:
            return  # said properly once the options are parsed
    exec_under_kept_seed(Path(data_dir))


def _option(args: list[str], name: str) -> str | None:
    """The value of `name` as given last on the command line, either `NAME VALUE` or
    `NAME=VALUE`; None if absent."""
    found = None
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            found = args[index + 1]
        elif arg.startswith(name + "="):
            found = arg.removeprefix(name + "=")
    return found
