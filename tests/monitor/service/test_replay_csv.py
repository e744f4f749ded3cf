"""Cutting CSV text into records in bounded memory: the rows are the csv module's own,
and a record over the limit (one long line, or a quoted cell running over many lines) is
``too_large`` without shifting the rows after it."""

from __future__ import annotations

import csv
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.service.replay_csv import csv_rows

#: text made of what changes the csv reader's state: quotes, commas, every line end
csv_text = st.lists(st.sampled_from(["a", "b", ",", '"', '""', "\n", "\r", "\r\n", "é", " "]), max_size=40).map("".join)


def _reader(text: str) -> list[tuple[list[str], int]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    return [(row, reader.line_num) for row in reader]


@settings(max_examples=500)
@given(csv_text)
def test_rows_and_line_numbers_are_the_csv_readers(text: str) -> None:
    try:
        want = _reader(text)
    except csv.Error:
        return  # a text the reader refuses (a line end after a closing quote's text): not compared
    got = [(r.cells, r.line) for r in csv_rows(io.StringIO(text, newline=""), 10_000)]
    assert got == want


@settings(max_examples=300)
@given(csv_text, st.integers(1, 8), st.integers(1, 4))
def test_a_record_over_the_limit_is_skipped_and_the_next_ones_are_intact(text: str, limit: int, piece: int) -> None:
    """Any limit, the rest read in pieces of any size (a piece may end between the
    ``\\r`` and ``\\n`` of a line end, or inside ``""``): the same records, each either
    the reader's row or too large by its true size."""
    try:
        want = _reader(text)
    except csv.Error:
        return
    full = list(csv_rows(io.StringIO(text, newline=""), 10_000))
    capped = list(csv_rows(io.StringIO(text, newline=""), limit, piece=piece))
    assert [(r.line, r.size) for r in capped] == [(r.line, r.size) for r in full]
    for row, (cells, _), whole in zip(capped, want, full, strict=True):
        assert row.too_large == (whole.size > limit)
        assert row.cells == (None if row.too_large else cells)


def test_a_quoted_cell_over_many_lines_is_one_too_large_record() -> None:
    """A quoted cell of 100 short lines is one record: over the limit, it is one
    ``too_large`` row (its first limit + 1 bytes kept), and the row after it is read."""
    cell = "x\n" * 100
    text = f'id,note\r\n1,ok\r\n2,"{cell}"\r\n3,"a ""quoted"" word"\r\n'
    rows = list(csv_rows(io.StringIO(text, newline=""), 50))
    assert [(r.cells, r.line, r.too_large) for r in rows] == [
        (["id", "note"], 1, False), (["1", "ok"], 2, False), (None, 103, True), (["3", 'a "quoted" word'], 104, False)
    ]
    assert (rows[2].size, rows[2].head) == (len(f'2,"{cell}"'), f'2,"{cell}"'.encode()[:51])


def test_a_quote_inside_an_unquoted_cell_is_text_not_the_start_of_a_record() -> None:
    """``5"`` is text (the reader's reading): the record ends on its own line, the rows
    after it are not swallowed into a quoted cell."""
    text = 'size,n\n5",1\n6,2\n'
    assert [r.cells for r in csv_rows(io.StringIO(text, newline=""), 20)] == [["size", "n"], ['5"', "1"], ["6", "2"]]


def test_sizes_are_utf8_bytes_as_in_the_file() -> None:
    rows = list(csv_rows(io.StringIO("é,ü\nab,c\n", newline=""), 4))
    assert [(r.size, r.too_large) for r in rows] == [(5, True), (4, False)]
