"""The opt-out advisor: how to turn each tool's telemetry off at the source, and which of the
tools the query log shows on this machine (`aidns optout`, `aidns check`). Nothing here prints."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aidns.resolver.config import Settings
from aidns.resolver.errors import ConfigError
from aidns.resolver.procinfo.tools import TOOLS_FILE, KnownTools, OptOut, Tool, default_tools
from aidns.resolver.querylog.reader import tools_seen


@dataclass(frozen=True, slots=True)
class ToolOptOut:
    """One tool's opt-outs, and how often the query log saw it (0: never, or no log)."""

    name: str
    description: str
    optout: tuple[OptOut, ...]
    queries: int = 0
    last_seen: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "tool": self.name,
            "description": self.description,
            "optout": [item.as_json() for item in self.optout],
            "shell": [item.shell_line() for item in self.optout],
            "queries": self.queries,
            "last_seen": self.last_seen,
        }


@dataclass(frozen=True, slots=True)
class OptOutAdvice:
    """The tools asked about (those the log saw first), the tools the log saw at all, and why
    the log could not be read, if it could not."""

    tools: tuple[ToolOptOut, ...]
    seen: tuple[ToolOptOut, ...]
    log_problem: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "tools": [tool.as_json() for tool in self.tools],
            "seen": [
                {"tool": tool.name, "queries": tool.queries, "last": tool.last_seen}
                for tool in self.seen
            ],
            "log_problem": self.log_problem or None,
            "conflicts": conflicts(self.tools),
        }


def known_tools(settings: Settings) -> KnownTools:
    """The shipped tool catalogue with your own (`<data-dir>/lists/tools.yaml`) over it."""
    return default_tools([settings.data_dir / "lists" / TOOLS_FILE])


def _seen(settings: Settings) -> tuple[dict[str, tuple[int, float | None]], str]:
    try:
        rows = tools_seen(settings.data_dir)
    except ConfigError as exc:
        return {}, str(exc)
    return {str(row["tool"]): (int(row["count"] or 0), row["last"]) for row in rows}, ""


def _advice(tool: Tool, seen: dict[str, tuple[int, float | None]]) -> ToolOptOut:
    queries, last = seen.get(tool.name, (0, None))
    return ToolOptOut(tool.name, tool.description, tool.optout, queries, last)


def optout_advice(settings: Settings, tool: str | None = None) -> OptOutAdvice:
    """Every tool with an opt-out, the ones the query log saw first; or just `tool` (a
    ConfigError names the tools there are when it is not one)."""
    catalogue = known_tools(settings)
    seen, problem = _seen(settings)
    if tool is not None:
        found = catalogue.get(tool)
        if found is None:
            names = sorted(t.name for t in catalogue.tools if t.optout)
            raise ConfigError(f"no tool named {tool!r}; tools with opt-outs: {', '.join(names)}")
        chosen = [_advice(found, seen)]
    else:
        with_optout = [_advice(t, seen) for t in catalogue.tools if t.optout]
        chosen = sorted(with_optout, key=lambda advice: -advice.queries)  # stable: catalogue order
    seen_tools = tuple(
        _advice(catalogue.get(name) or Tool(name, "", ()), seen)
        for name in sorted(seen, key=lambda name: -seen[name][0])
    )
    return OptOutAdvice(tuple(chosen), seen_tools, problem)


def optouts_for(settings: Settings, names: Iterable[str]) -> list[ToolOptOut]:
    """The opt-outs of the named tools (a list entry's `tools:`), skipping unknown names."""
    catalogue = known_tools(settings)
    seen, _ = _seen(settings)
    found = (catalogue.get(name) for name in dict.fromkeys(names))
    return [_advice(tool, seen) for tool in found if tool is not None and tool.optout]


def conflicts(tools: Iterable[ToolOptOut]) -> list[str]:
    """Variables two tools want set to different values: only one export can win."""
    wanted: dict[str, dict[str, list[str]]] = {}
    for tool in tools:
        for item in tool.optout:
            if item.variable and not item.alternative:
                wanted.setdefault(item.variable, {}).setdefault(item.value, []).append(tool.name)
    found = []
    for variable, values in wanted.items():
        if len(values) > 1:
            each = [f"{value} for {', '.join(names)}" for value, names in values.items()]
            found.append(f"{variable} is {' but '.join(each)}")
    return found


def shell_script(tools: Iterable[ToolOptOut]) -> list[str]:
    """Lines ready to paste into a shell: one `export` per variable, the rest as comments. A
    variable already exported above is not exported again; a different value is a comment."""
    lines: list[str] = []
    exported: dict[str, tuple[str, str]] = {}
    for tool in tools:
        seen = f" (the query log saw it {tool.queries} times)" if tool.queries else ""
        lines += [""] if lines else []
        lines.append(f"# {tool.name}: {tool.description}{seen}")
        if not tool.optout:
            lines.append("# no way to turn its telemetry off at the source is known")
        for item in tool.optout:
            if not item.variable or item.alternative:
                lines.append(item.shell_line())
            elif item.variable not in exported:
                exported[item.variable] = (item.value, tool.name)
                lines.append(item.shell_line())
            elif exported[item.variable][0] == item.value:
                lines.append(f"# {item.variable}={item.value}: exported above")
            else:
                value, owner = exported[item.variable]
                lines.append(
                    f"# {item.shell_line()}  (exported above as {value} for {owner};"
                    " only one value can win)"
                )
    return lines
