"""How the command line shows things: one table helper, short times, the JSON envelope.

Every table goes through :func:`table`: each cell is made printable (control characters
from the stream become ``\\xNN``, so a hostile payload or model name cannot move the
cursor or recolour the terminal) and escaped for rich markup (``[red]`` in a reason is
shown, not interpreted). Tables fit 80 columns: times are short (``11-23 14:00``,
seconds only when not zero), long text wraps inside its cell instead of being cut.

``--json`` prints one object, versioned so scripts can rely on it::

    {"version": 1, "kind": "windows", "items": [...]}     # lists
    {"version": 1, "kind": "window", "item": {...}}       # one thing

``version`` changes only when a field is removed or changes meaning; fields may be added.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from storage.text import printable

#: the version of every --json document
JSON_VERSION = 1


@dataclass(frozen=True)
class Col:
    """A table column: its header, how to get the value from a row, how to lay it out."""

    header: str
    key: str | Callable[[Mapping[str, Any]], Any]
    no_wrap: bool = False
    justify: str = "left"
    #: when every row has the same value, show it once in the title instead of a column
    hoist: bool = False

    def value(self, row: Mapping[str, Any]) -> Any:
        return self.key(row) if callable(self.key) else row.get(self.key)


def cell(value: Any) -> str:
    """A value as table text: ``-`` for none, 4 significant digits, printable, markup escaped."""
    from rich.markup import escape  # noqa: PLC0415

    if isinstance(value, list | tuple):
        return "\n".join(cell(v) for v in value) or "-"  # one line per item
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
    else:
        text = str(value)
    return escape(printable(text))


def short_time(iso: str | None) -> str:
    """``2026-11-23T14:00:00.000Z`` as ``11-23 14:00`` (``14:00:30`` when seconds matter)."""
    if not iso:
        return "-"
    if iso.startswith("#"):  # count windows: row ordinals
        return "#" + (iso[1:].lstrip("0") or "0")
    date, _, clock = iso.partition("T")
    hms = clock[:8]
    hm = hms[:5] if hms[5:8] in (":00", "") else hms
    return f"{date[5:]} {hm}"


def time_range(start: str | None, end: str | None) -> str:
    """A window's range in one short cell: ``11-23 14:00–14:15`` (the end's date when it differs)."""
    a, b = short_time(start), short_time(end)
    if a[:5] == b[:5] and not a.startswith("#"):
        b = b[6:]
    return f"{a}–{b}"


def table(title: str, cols: Sequence[Col], rows: Sequence[Mapping[str, Any]], *, console: Any = None) -> None:
    """Print ``rows`` as a table (the one place tables are drawn).

    Light borders (no vertical rules) leave the width to the data; a ``hoist`` column
    whose value is the same in every row moves into the title."""
    from rich import box  # noqa: PLC0415
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    shown, facts = [], []
    for c in cols:
        values = {str(c.value(r)) for r in rows}
        if c.hoist and len(rows) > 1 and len(values) == 1:
            facts.append(f"{c.header} {values.pop()}")
        else:
            shown.append(c)
    head = f"{title} ({len(rows)})" + (": " + ", ".join(facts) if facts else "")
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, expand=False, collapse_padding=True)
    for c in shown:
        t.add_column(cell(c.header), no_wrap=c.no_wrap, justify=c.justify, overflow="fold")  # type: ignore[arg-type]
    for r in rows:
        t.add_row(*[cell(c.value(r)) for c in shown])
    con = console or Console(highlight=False)
    con.print(cell(head))  # the console's width, not the table's: a title is not squeezed
    con.print(t)


def details(title: str, fields: Sequence[tuple[str, Any]], *, console: Any = None) -> None:
    """``name  value`` lines under a title (one thing, e.g. a window's header)."""
    from rich.console import Console  # noqa: PLC0415

    con = console or Console(highlight=False)
    con.print(f"[bold]{cell(title)}[/bold]")
    width = max(len(k) for k, _ in fields)
    for k, v in fields:
        con.print(f"  {cell(k).ljust(width)}  {cell(v)}")


def emit_json(kind: str, *, items: Sequence[Any] | None = None, item: Any = None, echo: Callable[[str], Any] = print) -> None:
    """The versioned ``--json`` document (bytes become text, times stay ISO 8601 strings)."""
    doc: dict[str, Any] = {"version": JSON_VERSION, "kind": kind}
    if items is not None:
        doc["items"] = list(items)
    else:
        doc["item"] = item
    echo(json.dumps(doc, indent=2, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")
