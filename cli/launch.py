"""`aidns serve` without typer: its options read by argparse, so a start imports no more than
serving needs (typer's parse brings pydantic: a fifth of the start-up and several MiB).

Anything this parser does not take as it is (--help, --check, an unknown option, a value
of the wrong type) is left to the typer command in cli/serve.py, which says what is wrong.
The options are the same; tests/unit/test_launch.py keeps the two lists equal.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aidns.resolver.config import Settings

LISTS = ("listen", "upstream", "bootstrap", "allow_net")
TYPED: dict[str, Any] = {
    "block_response": str,
    "cache_size": int,
    "upstream_timeout": float,
    "upstream_ca": Path,
    "log_level": str,
    "query_log_jsonl": str,
    "config": Path,
    "data_dir": Path,
}
ENVIRONMENT = {"config": "AIDNS_CONFIG", "data_dir": "AIDNS_DATA_DIR"}


class _Refused(Exception):
    """The arguments are for typer to read."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # instead of printing usage and exiting
        raise _Refused(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(add_help=False, allow_abbrev=False, exit_on_error=False)
    for name in LISTS:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, action="append")
    for name, kind in TYPED.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind)
    parser.add_argument("--query-log", dest="query_log", action="store_const", const=True)
    parser.add_argument("--no-query-log", dest="query_log", action="store_const", const=False)
    return parser


def serve_options(args: list[str]) -> dict[str, Any] | None:
    """The serve command's keyword arguments for `args`, or None to leave them to typer."""
    try:
        parsed, extra = _parser().parse_known_args(args)
    except (_Refused, argparse.ArgumentError):
        return None
    if extra:
        return None
    options = vars(parsed)
    for name, variable in ENVIRONMENT.items():
        if options[name] is None and os.environ.get(variable):
            options[name] = Path(os.environ[variable])
    return options


def settings_loader(options: dict[str, Any]) -> Callable[[], Settings]:
    """Reads the settings the options and the config file give, each time it is called."""
    from aidns.resolver.config import load_settings

    return functools.partial(
        load_settings,
        config_path=options["config"],
        data_dir=options["data_dir"],
        listen=options["listen"] or (),
        upstream=options["upstream"] or (),
        bootstrap=options["bootstrap"] or (),
        allow_net=options["allow_net"] or (),
        block_response=options["block_response"],
        cache_size=options["cache_size"],
        upstream_timeout_s=options["upstream_timeout"],
        upstream_ca=options["upstream_ca"],
        log_level=options["log_level"],
        query_log=options["query_log"],
        query_log_jsonl=options["query_log_jsonl"],
    )


def serve(options: dict[str, Any]) -> None:
    """What `aidns serve` does once its options are read: serve until stopped."""
    from aidns.resolver.config import LOG_FORMAT
    from aidns.resolver.errors import AidnsError
    from aidns.resolver.start import serve_until_stopped

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=LOG_FORMAT)
    try:
        serve_until_stopped(settings_loader(options))
    except KeyboardInterrupt:
        pass
    except AidnsError as exc:
        print(f"aidns: {exc}", file=sys.stderr)  # as cli/errors.py says it
        raise SystemExit(2) from None
