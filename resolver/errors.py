"""The errors aidns raises on purpose; anything else is a bug."""

from __future__ import annotations


class AidnsError(Exception):
    """Base of every error aidns reports to a person instead of a traceback."""


class ConfigError(AidnsError):
    """A config value, flag or file that cannot be used; the message names where."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None):
        self.source = source
        self.line = line
        where = source or ""
        if source and line is not None:
            where = f"{source}:{line}"
        super().__init__(f"{where}: {message}" if where else message)


class ListError(ConfigError):
    """A list file that cannot be read or parsed."""


class UpstreamError(AidnsError):
    """No upstream gave a usable answer in time."""


EXCERPT_CHARS = 60


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """`value` quoted for a message (its repr), cut to about `limit` characters and then
    saying how long it was."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}… ({len(value):,} characters)"
    shown = repr(value)
    return shown if len(shown) <= limit else f"{shown[:limit]}… ({len(shown):,} characters)"
