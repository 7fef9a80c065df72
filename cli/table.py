"""Plain aligned tables for the terminal, and the time format the commands share."""

from __future__ import annotations

import io
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import typer


def when(ts: float | None) -> str:
    """Local time: HH:MM:SS today, otherwise the date too."""
    if ts is None:
        return ""
    moment = time.localtime(ts)
    if time.strftime("%Y-%m-%d", moment) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", moment)
    return time.strftime("%Y-%m-%d %H:%M:%S", moment)


def moments(timestamps: Sequence[float | None]) -> list[str]:
    """Local times for one table: HH:MM:SS when every one is today, else all with the date."""
    today = time.strftime("%Y-%m-%d")
    days = {time.strftime("%Y-%m-%d", time.localtime(ts)) for ts in timestamps if ts is not None}
    shape = "%H:%M:%S" if days <= {today} else "%Y-%m-%d %H:%M:%S"
    return [time.strftime(shape, time.localtime(ts)) if ts is not None else "" for ts in timestamps]


def render(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    *,
    highlight: Callable[[dict[str, Any]], str | None] | None = None,
    max_width: int = 60,
    widths: Sequence[int] | None = None,
) -> str:
    """`columns` are (key, heading); `highlight` may name a colour for a row (on a terminal).
    On a terminal, a rich table as wide as the terminal; piped, plain columns. With
    `widths`, plain columns of those widths, cut short if need be: rows rendered apart (as
    `log --follow` prints them) still line up."""
    if widths is None and sys.stdout.isatty():
        return _rich_table(rows, columns, highlight, max_width)
    if widths is not None:
        cells = [
            [_text(row.get(key), w) for (key, _), w in zip(columns, widths, strict=True)]
            for row in rows
        ]
    else:
        cells = [[_text(row.get(key), max_width) for key, _ in columns] for row in rows]
    headings = [heading for _, heading in columns]
    if widths is None:
        widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headings)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headings, widths, strict=True)).rstrip()]
    for row, texts in zip(rows, cells, strict=True):
        line = "  ".join(t.ljust(w) for t, w in zip(texts, widths, strict=True)).rstrip()
        colour = highlight(row) if highlight else None
        lines.append(typer.style(line, fg=colour) if colour else line)
    return "\n".join(lines)


def _rich_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    highlight: Callable[[dict[str, Any]], str | None] | None,
    max_width: int,
) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for _, heading in columns:
        table.add_column(heading, overflow="fold", max_width=max_width)  # wraps: cuts nothing
    for row in rows:
        colour = highlight(row) if highlight else None
        table.add_row(*(_text(row.get(key), max_width) for key, _ in columns), style=colour)
    out = io.StringIO()
    width = shutil.get_terminal_size().columns
    Console(file=out, force_terminal=True, width=width).print(table)
    return out.getvalue().rstrip("\n")


def _text(value: Any, max_width: int) -> str:
    if value is None:
        return "-"
    text = str(value)
    return text if len(text) <= max_width else text[: max_width - 1] + "…"
