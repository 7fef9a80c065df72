"""Options and settings that many commands share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from aidns.resolver.config import Settings, load_settings

ConfigOption = Annotated[
    Path | None, typer.Option("--config", envvar="AIDNS_CONFIG", help="Config file (YAML).")
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="AIDNS_DATA_DIR", help="Where aidns keeps its state."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def command_settings(ctx: typer.Context, config: Path | None, data_dir: Path | None) -> Settings:
    """Settings for a command that needs no upstream: never reads the system's resolv.conf.
    `--config`/`--data-dir` given before the subcommand (`aidns lists --data-dir D enable x`)
    count too; a flag beats the environment wherever it stands."""

    parent: Any = ctx.parent  # the `lists` group's context (typer's vendored click type)

    def on_command_line(of: Any, name: str) -> bool:
        source = of.get_parameter_source(name) if of is not None else None
        return source is not None and source.name == "COMMANDLINE"

    def pick(name: str, value: Path | None) -> Path | None:
        if not on_command_line(ctx, name) and on_command_line(parent, name):
            given: Path | None = parent.params[name]
            return given
        return value

    return load_settings(
        config_path=pick("config", config), data_dir=pick("data_dir", data_dir), resolv_conf=()
    )
