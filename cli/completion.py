"""Shell completion of the names aidns knows: lists, tools, and the rules you made."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer

from aidns.resolver.config import load_settings
from aidns.resolver.errors import AidnsError


def _settings(ctx: typer.Context) -> Any:
    params = {**(ctx.parent.params if ctx.parent else {}), **ctx.params}
    config, data_dir = params.get("config"), params.get("data_dir")
    return load_settings(
        config_path=Path(config) if config else None,
        data_dir=Path(data_dir) if data_dir else None,
        resolv_conf=(),
    )


def list_names(ctx: typer.Context, incomplete: str) -> list[str]:
    from aidns.resolver.rules.catalogue import list_names as named

    with contextlib.suppress(AidnsError, OSError):
        return sorted(n for n in named(_settings(ctx).list_dirs) if n.startswith(incomplete))
    return []


def tool_names(ctx: typer.Context, incomplete: str) -> list[str]:
    from aidns.resolver.procinfo.tools import TOOLS_FILE, default_tools

    with contextlib.suppress(AidnsError, OSError):
        tools = default_tools([_settings(ctx).data_dir / "lists" / TOOLS_FILE])
        return sorted(t.name for t in tools.tools if t.name.startswith(incomplete))
    return []


def rule_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """The names of your rules of the kind the command removes, as `aidns rules` shows them
    (`=name` for exact ones)."""
    from aidns.resolver.rules.edit import user_rules

    kind = "allow" if ctx.info_name == "unallow" else "block"
    with contextlib.suppress(AidnsError, OSError):
        rules = user_rules(_settings(ctx).data_dir)
        typed = {rule.typed for rule in rules if rule.kind == kind}
        return sorted(name for name in typed if name.startswith(incomplete))
    return []
