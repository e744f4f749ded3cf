"""Reading the rows of a CSV file in bounded memory, for the replay.

Python's :mod:`csv` reader takes each physical line of its input whole before it looks
at it, so its ``field_size_limit`` comes too late: a 1 GB line without a line end was
read (and decoded) whole. Here the text is first cut into *records* (a row's physical
lines: one, or several when a quoted cell holds line ends), each read with
``readline(limit)`` so that no more than about ``limit`` characters are held. A record
over ``limit`` bytes is not parsed: it is a :class:`CsvRow` with ``too_large`` set, its
first ``limit + 1`` bytes as ``head``, and the rest read in pieces of :data:`PIECE`
characters and dropped. A record within the limit is parsed by the :mod:`csv` reader
(default dialect, as the replay always used), so the cells are the module's own.

To know where a record ends, the lines are followed through the reader's states (see
:func:`scan`, the default dialect's rules, quotes only count at the start of a cell and
``""`` inside quotes is a quote): a record ends on a line that does not end inside a
quoted cell. An unterminated quote runs to the end of the file, as in the reader.

Sizes are the record's UTF-8 bytes as in the file (the text is read with
``errors="surrogateescape"``), its final line end excluded, as for a JSON line.
Line numbers count physical lines from 1 (``\\n``, ``\\r\\n`` or a lone ``\\r`` ends one).
"""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

#: characters read at a time while the rest of a too-large record is skipped
PIECE = 1 << 20

# the csv reader's states that matter for where a record ends (default dialect)
START, UNQUOTED, QUOTED, QUOTE_IN_QUOTED = range(4)

_LINE_ENDS = ("\n", "\r")


@dataclass(frozen=True, slots=True)
class CsvRow:
    """One record of the file (the header is the first).

    ``cells``: the row as the csv reader reads it (``[]`` for a blank line), ``None`` when
    it was not read: ``too_large`` (``head`` then holds its first ``limit + 1`` bytes) or
    ``error`` (what the csv reader said). ``line``: the physical line it ends on, from 1;
    ``size``: its bytes without the final line end.
    """

    cells: list[str] | None
    line: int
    size: int
    too_large: bool = False
    error: str | None = None
    head: bytes = b""


def scan(text: str, state: int) -> int:
    """The reader's state after ``text`` read from ``state``.

    ``text`` may be any piece of a line (pieces of one line scanned in turn give the state
    of the whole line); after a whole line, the record goes on to the next line only if
    the state is :data:`QUOTED`. Outside quotes a ``"`` opens a quoted cell only at the
    start of a cell (elsewhere it is text); inside, ``""`` is a quote and a single ``"``
    closes the quotes (text after it up to the next comma is still the cell's).
    """
    i, n = 0, len(text)
    while i < n:
        if state == QUOTED:
            j = text.find('"', i)
            if j < 0:
                return QUOTED
            state, i = QUOTE_IN_QUOTED, j + 1
        elif state == QUOTE_IN_QUOTED:
            c = text[i]
            state = QUOTED if c == '"' else START if c == "," else UNQUOTED
            i += 1
        else:  # START or UNQUOTED: only a quote at the start of a cell matters
            j = text.find('"', i)
            if j < 0:
                return START if text[n - 1] == "," else UNQUOTED
            at_start = text[j - 1] == "," if j > i else state == START
            state, i = (QUOTED if at_start else UNQUOTED), j + 1
    return state


def _nbytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogateescape"))


def _line_end(text: str) -> int:
    """Characters of ``text``'s line end (0, 1 or 2)."""
    return 2 if text.endswith("\r\n") else 1 if text.endswith(_LINE_ENDS) else 0


def _head(text: str, limit: int) -> bytes:
    return text.encode("utf-8", "surrogateescape")[: limit + 1]


class _Lines:
    """``readline`` of a text file, with the number of the line the last piece read is
    part of. ``continued``: the piece is the ``\n`` of a ``\r\n`` that a size limit
    cut after the ``\r`` (it ends the line already counted)."""

    def __init__(self, fh: IO[str]) -> None:
        self.fh = fh
        self.number = 0
        self.continued = False
        self._ended = True  # the last piece ended its line
        self._cr = False

    def read(self, size: int) -> str:
        piece = self.fh.readline(size)
        self.continued = self._cr and piece.startswith("\n")
        if piece:
            self.number += self._ended and not self.continued
            self._ended = piece.endswith(_LINE_ENDS)
            self._cr = piece.endswith("\r")
        return piece


class _Feed:
    """The lines of one record at a time, for a :func:`csv.reader` that outlives them."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque()

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        if not self.lines:
            raise StopIteration
        return self.lines.popleft()


@dataclass(slots=True)
class _Record:
    lines: list[str] | None  # None: over the limit, not kept
    size: int
    head: bytes = b""


def csv_rows(fh: IO[str], limit: int, *, piece: int = PIECE) -> Iterator[CsvRow]:
    """The records of ``fh`` (opened with ``newline=""``) as :class:`CsvRow` s, the header
    first; no record over ``limit`` bytes is held (memory ``O(limit)`` characters), the
    rest of one is read ``piece`` characters at a time."""
    lines = _Lines(fh)
    feed = _Feed()
    reader = csv.reader(feed)
    while (rec := _read_record(lines, limit, piece)) is not None:
        if rec.lines is None:
            yield CsvRow(None, lines.number, rec.size, too_large=True, head=rec.head)
            continue
        if len(rec.lines) == 1 and '"' not in (line := rec.lines[0]):
            # no quote: the reader's cells are the line's text between commas
            text = line.rstrip("\r\n")
            yield CsvRow(text.split(",") if text else [], lines.number, rec.size)
            continue
        feed.lines.extend(rec.lines)
        try:
            cells = next(reader, [])
        except csv.Error as exc:
            yield CsvRow(None, lines.number, rec.size, error=str(exc))
        else:
            yield CsvRow(cells, lines.number, rec.size)
        feed.lines.clear()


def _read_record(lines: _Lines, limit: int, piece: int) -> _Record | None:
    """The next record (``None`` at the end of the file); one over ``limit`` bytes is
    read to its end without being kept."""
    record: list[str] = []
    size, state = 0, START
    while True:
        want = max(0, limit - size) + 3  # room for a line end and one character over
        line = lines.read(want)
        if lines.continued and not record:  # the end of the last record's line end
            line = lines.read(want)
        if not line:
            return _Record(record, size) if record else None
        if len(line) >= want and not line.endswith(_LINE_ENDS):  # this line alone is over
            return _skip(lines, piece, _head("".join(record) + line, limit), line, state, size)
        state = scan(line, state)
        record.append(line)
        size += _nbytes(line)
        if state != QUOTED:
            size -= _line_end(line)
            return _Record(record, size) if size <= limit else _Record(None, size, _head("".join(record), limit))
        if size > limit:  # a quoted cell goes on past the limit
            return _skip(lines, piece, _head("".join(record), limit), "", state, size)


def _skip(lines: _Lines, chars: int, head: bytes, piece: str, state: int, size: int) -> _Record:
    """The rest of a too-large record, from ``piece`` (not yet counted in ``size`` nor
    scanned from ``state``) on, read ``chars`` characters at a time and dropped."""
    while True:
        if piece:
            size += _nbytes(piece)
            state = scan(piece, state)
            if state != QUOTED and piece.endswith(_LINE_ENDS):
                return _Record(None, size - _line_end(piece), head)
        piece = lines.read(chars)
        if not piece:
            return _Record(None, size, head)
