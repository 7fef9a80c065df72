"""Known programs: the AI tools and system resolvers a process is tagged with, from tools.yaml,
and how each tool's telemetry is turned off at the source (its opt-outs)."""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from aidns.resolver import yamlio
from aidns.resolver.datafiles import read_limited
from aidns.resolver.errors import AidnsError
from aidns.resolver.query import ProcessInfo

TOOLS_MAX_BYTES = 1 << 20
COMM_MAX_CHARS = 15  # Linux keeps 15 characters of a process name in /proc/PID/comm
TOOLS_FILE = "tools.yaml"


class ToolKind(StrEnum):
    AI = "ai"
    RELAY = "relay"
    EMBEDDED = "embedded"  # runs inside other programs (a library, an editor extension)


RULE_KEYS = frozenset({"process", "exe", "cmdline"})
TOOL_KEYS = frozenset({"name", "description", "homepage", "kind", "note", "match", "optout"})
OPTOUT_KEYS = frozenset({"env", "setting", "alternative"})
_TOOL_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
OPTOUT_TEXT_MAX = 500


@dataclass(frozen=True, slots=True)
class OptOut:
    """One way to turn a tool's telemetry off at the source: an environment variable, or a
    setting in words. An alternative is another way to the same end, not needed with the rest."""

    variable: str = ""
    value: str = ""
    setting: str = ""
    alternative: bool = False

    def shell_line(self) -> str:
        """`export NAME=value` ready to paste; a setting, or an alternative, as a comment."""
        if not self.variable:
            return f"# {self.setting}"
        line = f"export {self.variable}={shlex.quote(self.value)}"
        return f"# or: {line}" if self.alternative else line

    def as_json(self) -> dict[str, Any]:
        if not self.variable:
            return {"setting": self.setting, "alternative": self.alternative}
        return {"env": self.variable, "value": self.value, "alternative": self.alternative}


@dataclass(frozen=True, slots=True)
class ToolRule:
    """Every given pattern must match: process and exe are globs, cmdline a regex; any case."""

    process: re.Pattern[str] | None = None
    exe: re.Pattern[str] | None = None
    cmdline: re.Pattern[str] | None = None

    def matches(self, name: str | None, exe: str | None, cmdline: str | None) -> bool:
        return (
            (self.process is None or (name is not None and self.process.match(name) is not None))
            and (self.exe is None or (exe is not None and self.exe.match(exe) is not None))
            and (
                self.cmdline is None
                or (cmdline is not None and self.cmdline.search(cmdline) is not None)
            )
        )


@dataclass(frozen=True, slots=True)
class Tool:
    """A known program: an AI tool, or a system resolver that relays other programs' queries."""

    name: str
    description: str
    rules: tuple[ToolRule, ...]
    kind: ToolKind = ToolKind.AI
    note: str | None = None
    homepage: str = ""
    optout: tuple[OptOut, ...] = ()

    def matches(self, info: ProcessInfo) -> bool:
        return any(rule.matches(info.name, info.exe, info.cmdline) for rule in self.rules)


class KnownTools:
    """Known tools in the order they are tried; the first whose rules match names the process."""

    def __init__(self, tools: Sequence[Tool], problems: Sequence[str] = (), memo_size: int = 1024):
        self.tools = tuple(tools)
        self.problems = tuple(problems)
        self._memo: OrderedDict[tuple[str | None, str | None, str | None], Tool | None] = (
            OrderedDict()
        )
        self._memo_size = memo_size

    def __len__(self) -> int:
        return len(self.tools)

    def get(self, name: str) -> Tool | None:
        return next((tool for tool in self.tools if tool.name == name), None)

    def match(self, info: ProcessInfo) -> Tool | None:
        key = (info.name, info.exe, info.cmdline)
        try:
            found = self._memo[key]
        except KeyError:
            found = next((tool for tool in self.tools if tool.matches(info)), None)
            self._memo[key] = found
            if len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)
        return found

    def tag(self, info: ProcessInfo) -> ProcessInfo:
        """`info` with `tool` set, and for a system resolver `relay` and its `note`."""
        if info.pid is None and info.name is None:
            return info
        tool = self.match(info)
        if tool is None:
            return info
        if tool.kind is ToolKind.RELAY:
            return replace(info, tool=tool.name, relay=True, note=tool.note)
        return replace(info, tool=tool.name)


def shipped_tools_path() -> Path:
    return Path(str(resources.files("aidns.blocklists"))) / TOOLS_FILE


def default_tools(extra: Iterable[Path] = ()) -> KnownTools:
    """The shipped tools, extended by `extra` files (e.g. `<data-dir>/lists/tools.yaml`)."""
    return load_tools([shipped_tools_path(), *extra])


def load_tools(paths: Iterable[Path]) -> KnownTools:
    """Later files win: a tool with a known name replaces it, a new one is tried first.

    A file that cannot be read or parsed, or a bad entry, is skipped and reported in
    `problems`; the rest still loads. A missing file is skipped silently.
    """
    by_name: dict[str, Tool] = {}
    order: list[str] = []
    problems: list[str] = []
    for path in paths:
        tools, file_problems = _load_file(path)
        problems.extend(file_problems)
        added = [tool.name for tool in tools if tool.name not in by_name]
        for tool in tools:
            by_name[tool.name] = tool
        order = added + order
    return KnownTools([by_name[name] for name in order], problems)


def _load_file(path: Path) -> tuple[list[Tool], list[str]]:
    try:
        text = read_limited(path, TOOLS_MAX_BYTES, "a tool catalogue").decode("utf-8")
    except FileNotFoundError:
        return [], []
    except AidnsError as exc:
        return [], [str(exc)]
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"{path}: cannot read: {exc}"]
    try:
        document = yamlio.load(text)
    except yaml.YAMLError as exc:
        return [], [str(yamlio.error(exc, path))]
    if not isinstance(document, dict) or not isinstance(document.get("tools"), list):
        return [], [f"{path}: a tool catalogue is a mapping with a `tools:` list"]
    tools: list[Tool] = []
    problems: list[str] = []
    seen: set[str] = set()
    lines: list[int] | None = None
    for index, entry in enumerate(document["tools"]):
        try:
            tool = parse_tool(entry)
            if tool.name in seen:
                raise ValueError(f"{tool.name}: listed twice")
        except ValueError as exc:
            if lines is None:
                lines = _entry_lines(text)
            where = f"{path}:{lines[index]}" if index < len(lines) else str(path)
            problems.append(f"{where}: {exc}")
            continue
        seen.add(tool.name)
        tools.append(tool)
    return tools, problems


def _entry_lines(text: str) -> list[int]:
    node = yaml.compose(text)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "tools" and isinstance(value, yaml.SequenceNode):
                return [item.start_mark.line + 1 for item in value.value]
    return []


def parse_tool(entry: Any) -> Tool:
    """One entry of a tools file; raises ValueError saying what is wrong with it."""
    if not isinstance(entry, dict):
        raise ValueError("an entry must be a mapping with `name` and `match`")
    name = entry.get("name")
    if not isinstance(name, str) or not _TOOL_NAME.match(name):
        raise ValueError(f"name: {name!r} is not a lower-case name like `lm-studio`")
    unknown = sorted(set(map(str, entry)) - TOOL_KEYS)
    if unknown:
        raise ValueError(f"{name}: unknown key(s) {', '.join(unknown)}")
    try:
        kind = ToolKind(str(entry.get("kind", "ai")))
    except ValueError:
        raise ValueError(f"{name}: kind: {entry.get('kind')!r} is not ai or relay") from None
    note = entry.get("note")
    if note is not None and not isinstance(note, str):
        raise ValueError(f"{name}: note must be text")
    if kind is ToolKind.RELAY and not note:
        raise ValueError(f"{name}: a relay needs a `note` saying what it hides")
    rules = entry.get("match")
    if kind is ToolKind.EMBEDDED and rules is None:
        rules = []  # it runs inside other programs: it never names a process itself
    elif not isinstance(rules, list) or not rules:
        raise ValueError(f"{name}: match must be a non-empty list of rules")
    optout = entry.get("optout") or []
    if not isinstance(optout, list):
        raise ValueError(f"{name}: optout must be a list of `env:` and `setting:` items")
    return Tool(
        name=name,
        description=str(entry.get("description") or ""),
        homepage=str(entry.get("homepage") or ""),
        kind=kind,
        note=note.strip() if note else None,
        rules=tuple(_parse_rule(name, rule) for rule in rules),
        optout=tuple(_parse_optout(name, item) for item in optout),
    )


def _parse_optout(tool: str, item: Any) -> OptOut:
    """`{env: NAME=value}` or `{setting: text}`, each maybe with `alternative: true`."""
    if not isinstance(item, dict) or len({"env", "setting"} & set(item)) != 1:
        raise ValueError(f"{tool}: an optout item has either `env: NAME=value` or `setting: text`")
    unknown = sorted(set(map(str, item)) - OPTOUT_KEYS)
    if unknown:
        raise ValueError(f"{tool}: unknown optout key(s) {', '.join(unknown)}")
    alternative = item.get("alternative", False)
    if not isinstance(alternative, bool):
        raise ValueError(f"{tool}: optout alternative must be true or false")
    text = item.get("env", item.get("setting"))
    if not isinstance(text, str) or not text.strip() or len(text) > OPTOUT_TEXT_MAX:
        raise ValueError(f"{tool}: an optout item's text must be 1 to {OPTOUT_TEXT_MAX} characters")
    if not text.isprintable():
        raise ValueError(f"{tool}: optout {text[:40]!r} holds control characters")
    if "setting" in item:
        return OptOut(setting=" ".join(text.split()), alternative=alternative)
    variable, equals, value = text.partition("=")
    if not equals or not _ENV_NAME.fullmatch(variable) or not value:
        raise ValueError(f"{tool}: optout env {text!r} is not NAME=value")
    return OptOut(variable=variable, value=value, alternative=alternative)


def _parse_rule(tool: str, rule: Any) -> ToolRule:
    if not isinstance(rule, dict) or not rule:
        raise ValueError(f"{tool}: a rule is a mapping of process, exe and/or cmdline patterns")
    unknown = sorted(set(map(str, rule)) - RULE_KEYS)
    if unknown:
        raise ValueError(f"{tool}: unknown rule key(s) {', '.join(unknown)}")
    patterns = {key: _strings(tool, key, value) for key, value in rule.items()}
    process = patterns.get("process")
    exe = patterns.get("exe")
    cmdline = patterns.get("cmdline")
    return ToolRule(
        process=_globs([*process, *_truncated(process)]) if process else None,
        exe=_globs(exe) if exe else None,
        cmdline=_regexes(tool, cmdline) if cmdline else None,
    )


def _strings(tool: str, key: str, value: Any) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if (
        not isinstance(values, list)
        or not values
        or not all(isinstance(v, str) and v for v in values)
    ):
        raise ValueError(f"{tool}: {key} must be a pattern or a list of patterns")
    return values


def _truncated(patterns: list[str]) -> list[str]:
    """A literal process name longer than /proc/PID/comm keeps also matches its first 15."""
    return [
        p[:COMM_MAX_CHARS]
        for p in patterns
        if len(p) > COMM_MAX_CHARS and not any(c in p for c in "*?[")
    ]


def _globs(patterns: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns), re.IGNORECASE)


def _regexes(tool: str, patterns: list[str]) -> re.Pattern[str]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{tool}: cmdline {pattern!r}: {exc}") from None
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
