"""How the command line shows things: one table helper, short times, the JSON envelope.

Every table goes through :func:`table`: each cell is made printable (control characters
from the stream become ``\\xNN``, so a hostile payload or model name cannot move the
cursor or recolour the terminal) and shown as plain text, never read as rich markup
(``[red]`` in a reason is shown, not interpreted). Tables fit the terminal, 80 columns when it is not one (see
:func:`layout`): times are short (``11-23 14:00``, seconds only when not zero); the
columns that tell rows apart (refs, models, times, counts, verdicts) keep their width;
long text wraps inside its cell; a list says how many more it holds (``age +3``); and
when even that is too wide, the least useful columns are left out and named under the
table. No cell is ever squeezed to a sliver that wraps letter by letter.

``--json`` prints one object, versioned so scripts can rely on it::

    {"version": 1, "kind": "windows", "items": [...]}     # lists
    {"version": 1, "kind": "window", "item": {...}}       # one thing

``version`` changes only when a field is removed or changes meaning; fields may be added.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from storage.finite import dumps_finite
from storage.text import printable

#: the version of every --json document
JSON_VERSION = 1


#: the narrowest a wrapping column gets unless its ``min_width`` says otherwise
WRAP_MIN = 12
#: the narrowest any column gets when nothing else makes the table fit
LAST_RESORT_MIN = 4


@dataclass(frozen=True)
class Col:
    """A table column: its header, how to get the value from a row, how to lay it out."""

    header: str
    key: str | Callable[[Mapping[str, Any]], Any]
    #: one line per cell, cut with "…" if the column is narrower (else the text wraps)
    no_wrap: bool = False
    justify: str = "left"
    #: when every row has the same value, show it once in the title instead of a column
    hoist: bool = False
    #: how narrow the column may get when the table is too wide for the terminal; None:
    #: a no_wrap column keeps its widest value (it tells rows apart), a wrapping one
    #: goes down to WRAP_MIN
    min_width: int | None = None
    #: when even the narrowest layout is too wide, columns with ``drop`` > 0 are left
    #: out, the highest first (and named under the table)
    drop: int = 0
    #: the cell's text at a given width, for a value that can say less in less room
    #: (see :func:`fit_list`); the widest text is the column's natural width
    fit: Callable[[Mapping[str, Any], int], str] | None = None
    #: False: never cut, even when nothing else makes the table fit (a ref that other
    #: commands take); the table is wider than the terminal then
    cut: bool = True

    def value(self, row: Mapping[str, Any]) -> Any:
        return self.key(row) if callable(self.key) else row.get(self.key)

    def text(self, row: Mapping[str, Any], width: int = 10**6) -> str:
        """The cell as plain text (printable, not markup), fitted to ``width`` if it can be:
        by ``fit``, or a one-line value cut in its middle (``fraud-…tor-eu``: both ends of
        an identifier tell more than its start alone)."""
        if self.fit is not None:
            return self.fit(row, width)
        text = plain(self.value(row))
        return ellipsize_middle(text, width) if self.no_wrap else text

    @property
    def one_line(self) -> bool:
        return self.no_wrap or self.fit is not None


def plain(value: Any) -> str:
    """A value as text: ``-`` for none, 4 significant digits, printable (not markup: a
    table shows it as :class:`rich.text.Text`); a list's items one per line."""
    if isinstance(value, list | tuple):
        return "\n".join(plain(v) for v in value) or "-"
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
    return printable(text)


def cell(value: Any) -> str:
    """:func:`plain`, markup escaped: for text printed as rich markup."""
    from rich.markup import escape  # noqa: PLC0415

    return escape(plain(value))


def width_of(text: str) -> int:
    """Terminal cells of the widest line of ``text``."""
    from rich.cells import cell_len  # noqa: PLC0415

    return max((cell_len(line) for line in text.split("\n")), default=0)


def ellipsize(text: str, width: int) -> str:
    """``text`` cut to ``width`` terminal cells, its end replaced by "…" when cut."""
    from rich.cells import set_cell_size  # noqa: PLC0415

    if width_of(text) <= width:
        return text
    return set_cell_size(text, max(width - 1, 0)) + "…" if width > 0 else ""


def ellipsize_middle(text: str, width: int) -> str:
    """``text`` cut to ``width`` terminal cells by replacing its middle with "…"."""
    from rich.cells import set_cell_size  # noqa: PLC0415

    if width_of(text) <= width or "\n" in text:
        return text
    if width < 3:
        return ellipsize(text, width)
    tail = (width - 1) // 2
    head = width - 1 - tail
    end = text[::-1]
    return set_cell_size(text, head) + "…" + set_cell_size(end, tail)[::-1]


def fit_list(items: Sequence[str], width: int, *, short: Sequence[str] | None = None) -> str:
    """A list in one line of at most ``width`` cells: every item (``age (wasserstein 0.83), plan (chisquare p=0.01)``),
    else every ``short`` item (the same, shorter: ``age, plan``), else as many short
    items as fit and how many more (``age +4``), at worst the first one cut ("-": none)."""
    if not items:
        return "-"
    items = [printable(i) for i in items]
    names = [printable(i) for i in short] if short is not None else items
    for candidate in (", ".join(items), ", ".join(names)):
        if width_of(candidate) <= width:
            return candidate
    for k in range(len(names) - 1, 0, -1):
        text = ", ".join(names[:k]) + f" +{len(names) - k}"
        if width_of(text) <= width:
            return text
    more = f" +{len(names) - 1}" if len(names) > 1 else ""
    return ellipsize(names[0], width - len(more)) + more


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


#: cells between two columns (SIMPLE_HEAD box without its edges, padding collapsed)
COLUMN_GAP = 2


def layout(cols: Sequence[Col], rows: Sequence[Mapping[str, Any]], width: int) -> list[int | None]:
    """The width of each column of ``cols`` in a table at most ``width`` cells wide
    (None: the column is left out).

    Each column starts at its floor: for a ``no_wrap`` column without ``min_width``, its
    widest value (it tells rows apart: never cut while anything else can give); else
    ``min_width`` (a wrapping column: :data:`WRAP_MIN`); never below the longest word of
    its header (a header wraps between words). If the floors do not fit, columns with
    ``drop`` > 0 are left out, the highest first; if they still do not fit, the columns
    with a ``min_width`` (or wrapping) give way below their floors, the widest first, then
    any column but those with ``cut=False``: first down to its widest value (its header
    folds), then down to :data:`LAST_RESORT_MIN`. What is
    left over goes to the columns short of their natural width (widest value or whole
    header): first to one-line columns, those missing the least first (as many as
    possible show whole values), then to wrapping ones in proportion to what they miss."""
    natural, floor, cuttable, widest = [], [], [], []
    for c in cols:
        header = printable(c.header)
        word = max((width_of(w) for w in header.split()), default=0)
        values = max((width_of(c.text(r)) for r in rows), default=0)
        widest.append(max(values, LAST_RESORT_MIN))
        natural.append(max(values, width_of(header)))
        least = c.min_width if c.min_width is not None else (None if c.no_wrap else WRAP_MIN)
        floor.append(max(values, word) if least is None else min(natural[-1], max(least, word)))
        cuttable.append(least is not None)
    kept = list(range(len(cols)))

    def room() -> int:
        return width - COLUMN_GAP * (len(kept) - 1)

    droppable = sorted((i for i, c in enumerate(cols) if c.drop > 0), key=lambda i: (-cols[i].drop, -i))
    while sum(floor[i] for i in kept) > room() and droppable:
        kept.remove(droppable.pop(0))
    widths = {i: floor[i] for i in kept}
    # the last resort: the widest give way; those declared cuttable first, then a header
    # word folds before a value is cut
    every = [i for i in kept if cols[i].cut]
    for pool, least in (([i for i in kept if cuttable[i]], lambda i: LAST_RESORT_MIN),
                        (every, lambda i: widest[i]), (every, lambda i: LAST_RESORT_MIN)):
        while sum(widths.values()) > room():
            wide = [i for i in pool if widths[i] > least(i)]
            if not wide:
                break
            widths[max(wide, key=lambda i: (widths[i], i))] -= 1
    spare = room() - sum(widths.values())
    # one-line values are worth showing whole: those missing the least first
    for i in sorted((k for k in kept if cols[k].one_line), key=lambda k: (natural[k] - widths[k], k)):
        give = max(0, min(natural[i] - widths[i], spare))
        widths[i] += give
        spare -= give
    # wrapping text shares the rest in proportion to what it misses
    wrapping = [k for k in kept if not cols[k].one_line and natural[k] > widths[k]]
    missing = sum(natural[k] - widths[k] for k in wrapping)
    if wrapping and spare > 0:
        shares = {k: min(natural[k] - widths[k], spare * (natural[k] - widths[k]) // missing) for k in wrapping}
        left = spare - sum(shares.values())
        for k in sorted(wrapping, key=lambda k: (widths[k] + shares[k] - natural[k], k)):
            extra = min(natural[k] - widths[k] - shares[k], left)
            shares[k] += extra
            left -= extra
        for k, give in shares.items():
            widths[k] += give
    return [widths.get(i) for i in range(len(cols))]


def table(title: str, cols: Sequence[Col], rows: Sequence[Mapping[str, Any]], *, console: Any = None,
          count: int | None = None) -> None:
    """Print ``rows`` as a table (the one place tables are drawn), as wide as the console
    at most (see :func:`layout`).

    Light borders (no vertical rules) leave the width to the data; a ``hoist`` column
    whose value is the same in every row moves into the title. Cells are
    :class:`rich.text.Text`: a value is never read as markup. The title's number is the
    rows', or ``count`` (a table of counts gives the total it adds up to)."""
    from rich import box  # noqa: PLC0415
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    shown, facts = [], []
    for c in cols:
        values = {str(c.value(r)) for r in rows}
        if c.hoist and len(rows) > 1 and len(values) == 1:
            facts.append(f"{c.header} {values.pop()}")
        else:
            shown.append(c)
    head = f"{title} ({len(rows) if count is None else count})" + (": " + ", ".join(facts) if facts else "")
    con = console or Console(highlight=False)
    widths = layout(shown, rows, con.width)
    placed = [(c, w) for c, w in zip(shown, widths, strict=True) if w is not None]
    left_out = [c.header for c, w in zip(shown, widths, strict=True) if w is None]
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False, collapse_padding=True)
    for c, w in placed:
        # a header wraps between its words; a one-line cell is cut with "…", never wrapped
        t.add_column(Text(printable(c.header), no_wrap=False, overflow="fold"), width=w,
                     justify=c.justify)  # type: ignore[arg-type]
    for r in rows:
        t.add_row(*[Text(c.text(r, w), no_wrap=c.one_line, overflow="ellipsis" if c.one_line else "fold")
                    for c, w in placed])
    con.print(cell(head))  # the console's width, not the table's: a title is not squeezed
    con.print(t)
    if left_out:
        con.print(cell(f"hidden at {con.width} columns: {', '.join(left_out)} (see --json)"))


def details(title: str, fields: Sequence[tuple[str, Any]], *, console: Any = None) -> None:
    """``name  value`` lines under a title (one thing, e.g. a window's header). Printed as
    :class:`rich.text.Text`, never as markup: an escaped value ending in a backslash (a
    segment value ``x\\``) was shown with the second backslash ``escape`` adds for markup."""
    from rich.console import Console  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    con = console or Console(highlight=False)
    con.print(Text(plain(title), style="bold"))
    width = max(len(plain(k)) for k, _ in fields)
    for k, v in fields:
        con.print(Text(f"  {plain(k).ljust(width)}  {plain(v)}"))


def emit_json(kind: str, *, items: Sequence[Any] | None = None, item: Any = None, echo: Callable[[str], Any] = print) -> None:
    """The versioned ``--json`` document (bytes become text, times stay ISO 8601 strings)."""
    doc: dict[str, Any] = {"version": JSON_VERSION, "kind": kind}
    if items is not None:
        doc["items"] = list(items)
    else:
        doc["item"] = item
    echo(dumps_finite(doc, indent=2, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")
