"""Reading a file of events (CSV, Parquet or JSON lines) as the Kafka records it stands for.

Each row becomes the bytes of one message, and the replay hands them to the live
decoder (:meth:`monitor.service.pipeline.Pipeline.process_records`), so a row is accepted,
refused (a dead letter with the live reason code) or counted exactly as the daemon would
count the same message: the limits (``kafka.max_message_bytes``, the event-time range and
``kafka.max_future_skew`` against the wall clock, the event-id length), the segment rules
and the NUL handling are the decoder's own.

- JSON lines: each line is the message payload as it is (read with a bounded line length:
  a line longer than ``kafka.max_message_bytes`` is a ``too_large`` dead letter, never
  read whole into memory; a line that is not JSON is the decoder's ``not_json``). Blank
  lines are skipped and not counted.
- Parquet: each row's values (read column by column; nested struct columns stay nested
  dicts), rebuilt by :class:`~monitor.service.replay_messages.MessageShaper`, then JSON.
- CSV: every cell read as text (an empty cell is absent) and typed as the config says
  (see :mod:`monitor.service.replay_messages`). A record (a row's text, quoted line ends
  included) over ``kafka.max_message_bytes`` is a ``too_large`` dead letter, read in
  bounded memory (:mod:`monitor.service.replay_csv`); a row the CSV reader cannot read or
  with a cell count unlike the header's is a dead letter ``bad_csv``, the one reason code
  a live run never gives. A header over the limit stops the replay before it starts.

Records carry topic ``replay:<file name>``, partition 0, and the row's number from 0 (JSON
lines: the non-blank line's) as offset; they have no Kafka timestamp, so event times are
bounded by the wall clock alone. Memory is bounded: a chunk holds at most ``chunk_rows``
rows and about ``chunk_bytes`` of messages.

Before anything is replayed, :class:`ReplaySource` checks the options against the file
(the header of a CSV, the schema of a Parquet file, the first
:data:`SCAN_LINES` lines of JSON lines): the event-time field (``--time-column`` or the
model's ``ts``), the prediction, and a model field when the config has several models.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson

from monitor.config import Config
from monitor.ingest.batch import BadMessage
from monitor.ingest.event_time import NO_TIME, parse_event_time
from monitor.service.replay_csv import CsvRow, csv_rows
from monitor.service.replay_messages import LabelShaper, MessageShaper, encode
from storage.dead_letters import DeadLetter

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".json": "jsonl"}
#: JSON lines read before the replay starts to check the options against the file
SCAN_LINES = 1000


class ReplaySourceError(ValueError):
    """The file cannot be replayed as it is; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Record:
    """A row as the Kafka record the decoder reads (no Kafka timestamp: ``None``)."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None
    value: bytes


@dataclass
class Chunk:
    """Rows of the file in order: ``records`` for the decoder, ``dead`` the rows the file
    itself refused (a line over the size limit, an unreadable CSV row)."""

    records: list[Record] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    nbytes: int = 0
    #: rows of the label file (``--labels``), not of the predictions file
    labels: bool = False

    @property
    def rows(self) -> int:
        return len(self.records) + len(self.dead)


def file_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ReplaySourceError(f"{path}: expected a .csv, .parquet or .jsonl file, got {path.suffix or 'no suffix'}")
    return fmt


def count_rows(path: Path) -> int | None:
    """Rows in the file (for the progress bar): Parquet's metadata, or the lines of text."""
    fmt = file_format(path)
    if fmt == "parquet":
        return int(_parquet(path).metadata.num_rows)
    with path.open("rb") as fh:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    return max(0, lines - (1 if fmt == "csv" else 0))


def _parquet(path: Path) -> Any:
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ReplaySourceError(f"{path}: not a readable Parquet file: {exc}") from None


#: the UTF-8 byte-order mark some editors start a text file with
_BOM = b"\xef\xbb\xbf"


def read_lines(fh: IO[bytes], limit: int) -> Iterator[tuple[bytes, int]]:
    """``(line, size)`` of each line without its line end; a line longer than ``limit``
    bytes is yielded as its first ``limit + 1`` bytes with its full size, the rest read in
    pieces and dropped (memory stays ``O(limit)``)."""
    while True:
        line = fh.readline(limit + 3)
        if not line:
            return
        if line.endswith(b"\n") or len(line) < limit + 3:
            body = line[:-1] if line.endswith(b"\n") else line
            if body.endswith(b"\r"):
                body = body[:-1]
            yield body, len(body)
            continue
        size = len(line)
        head = line[: limit + 1]
        while not line.endswith(b"\n"):
            line = fh.readline(1 << 20)
            if not line:
                break
            size += len(line)
        yield head, size - (1 if line.endswith(b"\n") else 0)


def _names(obj: Any, prefix: str = "", depth: int = 2) -> Iterator[str]:
    """A row's keys, and the dotted keys of nested objects (two levels)."""
    if not isinstance(obj, dict):
        return
    for k, v in obj.items():
        name = f"{prefix}{k}"
        yield name
        if depth > 1 and isinstance(v, dict):
            yield from _names(v, name + ".", depth - 1)


class ReplaySource:
    """The records of a replay file for the models of ``config`` (see the module doc).

    Raises :class:`ReplaySourceError` when the file or the options cannot work (an
    unknown ``--model``, a format not known, no event-time, prediction or model field),
    before any row is replayed.
    """

    def __init__(self, config: Config, path: Path, *, time_column: str | None = None, model: str | None = None,
                 chunk_rows: int = 10_000, chunk_bytes: int = 32 << 20, received_at: datetime,
                 labels: bool = False, topic: str | None = None) -> None:
        """``labels``: the file holds label messages (``--labels``; no ``time_column``),
        read as :class:`~monitor.service.replay_messages.LabelShaper` says. ``topic``: the
        records' topic (default ``replay:<file name>``)."""
        if labels and time_column is not None:
            raise ValueError("time_column is the predictions file's only")
        self.config = config
        model_field = config.model_field  # the live decoder's (fields.model)
        self.path = Path(path)
        self.labels = labels
        #: label rows (``labels``) stamped more than ``labels.ttl`` before the newest label
        #: above them in the file, counted by :func:`merged`: read in the file's order (as a
        #: topic is), such a label comes after its prediction left the join (not joined)
        self.behind_ttl = 0
        #: how the options name this file in a message
        self.what = f"--labels {self.path}" if labels else str(self.path)
        self.fmt = file_format(self.path)
        self.chunk_rows = chunk_rows
        self.chunk_bytes = chunk_bytes
        self.received_at = received_at
        self.max_bytes = config.kafka.max_message_bytes
        #: the latest event time the decoder accepts (epoch ms): the start plus max_future_skew
        self._future_limit_ms = int((received_at + config.kafka.max_future_skew).timestamp() * 1000)
        self.topic = topic or f"replay:{self.path.name}"
        if model is not None and model not in {m.name for m in config.models}:
            known = ", ".join(m.name for m in config.models)
            raise ReplaySourceError(f'--model: unknown model "{model}"; the config has: {known}')
        names = self._scan()
        default_model = None
        # names None: no JSON object in the first lines (an empty file, say): nothing to
        # check, every line a dead letter as live (a one-model config's default model still
        # stands for rows further on)
        if model is None and (names is None or model_field not in names):
            if len(config.models) == 1:
                default_model = config.models[0].name
            elif names is not None:
                raise ReplaySourceError(
                    f'{self.what}: no "{model_field}" field to tell the models apart; add one or give --model'
                )
        self.shaper: MessageShaper | LabelShaper
        if labels:
            self._check_labels(names, model)
            self.shaper = LabelShaper(config, model_field=model_field, force_model=model, default_model=default_model)
        else:
            self._check(names, time_column, model)
            self.shaper = MessageShaper(config, model_field=model_field, time_column=time_column, force_model=model,
                                        default_model=default_model)

    # -- checking the options against the file ------------------------------------------

    def _scan(self) -> set[str] | None:
        """The field names the file has (``None``: JSON lines with no object to tell)."""
        try:
            if self.fmt == "csv":
                with self._open_csv() as fh:
                    return set(self._csv_header(csv_rows(fh, self.max_bytes)))
            if self.fmt == "parquet":
                return set(_names(_struct_names(_parquet(self.path).schema_arrow)))
            names: set[str] = set()
            seen = 0
            with self._open_jsonl() as fh:
                for line, size in read_lines(fh, self.max_bytes):
                    if size > self.max_bytes or not line.strip():
                        continue
                    try:
                        obj = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(obj, dict):
                        names.update(_names(obj))
                        seen += 1
                        if seen >= SCAN_LINES:
                            break
            return names if seen else None
        except OSError as exc:
            raise ReplaySourceError(f"cannot read {self.what}: {exc.strerror or exc}") from None

    def _check(self, names: set[str] | None, time_column: str | None, model: str | None) -> None:
        if names is None:
            return  # no JSON object in the first lines: every line is a dead letter, as live
        where = f"the first {SCAN_LINES} events of {self.path}" if self.fmt == "jsonl" else str(self.path)
        models = [m for m in self.config.models if model is None or m.name == model]
        if time_column is not None:
            if time_column not in names:
                raise ReplaySourceError(f'--time-column: no "{time_column}" field in {where}')
        elif not any(m.fields.ts in names for m in models):
            ts = " or ".join(sorted({f'"{m.fields.ts}"' for m in models}))
            raise ReplaySourceError(f"no {ts} field for the event time in {where}; give --time-column")
        if not any(m.fields.prediction in names for m in models):
            pred = " or ".join(sorted({f'"{m.fields.prediction}"' for m in models}))
            raise ReplaySourceError(f"no {pred} field (the prediction) in {where}")

    def _check_labels(self, names: set[str] | None, model: str | None) -> None:
        """A label file names, for some model joining labels, its event-id, label and
        event-time fields (a row has no record timestamp to stand for a missing ``ts``)."""
        if names is None:
            return  # no JSON object in the first lines: every line is a dead letter, as live
        where = f"the first {SCAN_LINES} labels of {self.path}" if self.fmt == "jsonl" else str(self.path)
        models = [m for m in self.config.models if (model is None or m.name == model) and m.performance.enabled]
        if not models:
            which = f"model {model} has no" if model is not None else "no model has a"
            raise ReplaySourceError(f"--labels: {which} label join ([models.performance] enabled = true)")
        for what, of in (("the event id", lambda m: m.fields.event_id), ("the label", lambda m: m.fields.label),
                         ("the event time", lambda m: m.fields.ts)):
            if not any(of(m) in names for m in models):
                fields = " or ".join(sorted({f'"{of(m)}"' for m in models}))
                raise ReplaySourceError(f"--labels: no {fields} field ({what}) in {where}")

    # -- reading ----------------------------------------------------------------------

    def rows(self) -> Iterator[Record | DeadLetter]:
        """The file's rows in order: records for the decoder, and the rows the file itself
        refused (dead letters)."""
        return {"csv": self._csv_rows, "parquet": self._parquet_rows, "jsonl": self._jsonl_rows}[self.fmt]()

    def event_ms(self, item: Record | DeadLetter) -> int | None:
        """A row's event time (epoch ms) as its message gives it (the model's ``ts`` field);
        None for a row without a valid one (the decoder judges it) and a dead letter."""
        if isinstance(item, DeadLetter):
            return None
        try:
            obj = orjson.loads(item.value)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(obj, dict):
            return None
        m = self.shaper.models.get(obj.get(self.shaper.model_field))  # type: ignore[arg-type]
        if m is None:
            return None
        try:
            ms = parse_event_time(obj.get(m.fields.ts), m.fields.ts)
        except (BadMessage, TypeError, ValueError, OverflowError):
            return None
        # beyond kafka.max_future_skew of the replay's start: the decoder dead-letters it
        return ms if ms <= self._future_limit_ms else None

    def __iter__(self) -> Iterator[Chunk]:
        rows = self.rows()
        chunk = Chunk()
        for item in rows:
            if isinstance(item, DeadLetter):
                chunk.dead.append(item)
            else:
                chunk.records.append(item)
                chunk.nbytes += len(item.value)
            if chunk.rows >= self.chunk_rows or chunk.nbytes >= self.chunk_bytes:
                yield chunk
                chunk = Chunk()
        if chunk.rows:
            yield chunk

    def _record(self, offset: int, value: bytes) -> Record:
        return Record(self.topic, 0, offset, None, value)

    def _dead(self, offset: int, reason: str, payload: bytes) -> DeadLetter:
        return DeadLetter(self.topic, 0, offset, reason, payload, self.received_at)

    def _jsonl_rows(self) -> Iterator[Record | DeadLetter]:
        offset = 0
        rewrite = self.shaper.rewrites_lines
        with self._open_jsonl() as fh:
            for line, size in read_lines(fh, self.max_bytes):
                if size <= self.max_bytes and not line.strip():
                    continue
                if size > self.max_bytes:
                    # the decoder's own wording (parse_envelope), with the line's full size
                    yield self._dead(offset, f"too_large: {size} bytes > limit {self.max_bytes}", line)
                elif rewrite:
                    yield self._rewritten(offset, line)
                else:
                    yield self._record(offset, line)
                offset += 1

    def _rewritten(self, offset: int, line: bytes) -> Record | DeadLetter:
        """A line with the options applied (``--model``, ``--time-column``); a line that is
        not a JSON object goes to the decoder as it is (it names what is wrong)."""
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            return self._record(offset, line)
        if not isinstance(obj, dict):
            return self._record(offset, line)
        return self._encoded(offset, self.shaper.message(obj, table=False), lambda: line)

    def _encoded(self, offset: int, msg: dict[str, Any], original: Callable[[], bytes]) -> Record | DeadLetter:
        """The message as a record, or a ``not_json`` dead letter whose payload is
        ``original()`` (made only then) when JSON cannot hold it."""
        try:
            return self._record(offset, encode(msg))
        except TypeError as exc:  # orjson.JSONEncodeError included: text not UTF-8, an int beyond 64 bits
            return self._dead(offset, f"not_json: {exc}"[:500], original())

    def _parquet_rows(self) -> Iterator[Record | DeadLetter]:
        offset = 0
        for batch in _parquet(self.path).iter_batches(batch_size=max(1, min(self.chunk_rows, 10_000))):
            names = batch.schema.names
            # column by column, as RecordBatch.to_pylist reads them, without a dict per row
            for values in zip(*(column.to_pylist() for column in batch.columns), strict=True):
                msg = self.shaper.table_message(names, values)
                yield self._encoded(offset, msg, lambda names=names, values=values: _payload(
                    dict(zip(names, values, strict=True))))
                offset += 1

    def _open_jsonl(self) -> IO[bytes]:
        """The JSON-lines file, opened past a UTF-8 byte-order mark (Windows editors) when
        it starts with one: the mark is not the first line's."""
        fh = self.path.open("rb")
        if fh.read(3) != _BOM:
            fh.seek(0)
        return fh

    def _open_csv(self) -> IO[str]:
        csv.field_size_limit(max(self.max_bytes, 131_072))  # a record, hence a cell, is within max_bytes
        return self.path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")

    def _csv_header(self, rows: Iterator[CsvRow]) -> list[str]:
        """The column names (the first record), or :class:`ReplaySourceError`."""
        header = next(rows, None)
        if header is not None and header.too_large:
            raise ReplaySourceError(f"{self.what}: the header row is over kafka.max_message_bytes"
                                    f" ({header.size} bytes > {self.max_bytes})")
        if header is not None and header.error is not None:
            raise ReplaySourceError(f"{self.what}: unreadable CSV header: {header.error}")
        if header is None or not any(header.cells or ()):
            raise ReplaySourceError(f"{self.what}: no header row (the first row names the columns)")
        return header.cells or []

    def _csv_rows(self) -> Iterator[Record | DeadLetter]:
        with self._open_csv() as fh:
            rows = csv_rows(fh, self.max_bytes)
            header = self._csv_header(rows)
            offset = 0
            for row in rows:
                if row.too_large:
                    # the decoder's own wording, as for a JSON line (the CSV record's size)
                    yield self._dead(offset, f"too_large: {row.size} bytes > limit {self.max_bytes}", row.head)
                elif row.error is not None:
                    yield self._dead(offset, f"bad_csv: CSV row ending on line {row.line}: {row.error}", b"")
                elif not row.cells:
                    continue  # a blank line
                elif len(row.cells) != len(header):
                    yield self._dead(offset, f"bad_csv: {len(row.cells)} cells, the header has {len(header)}",
                                     _csv_line(row.cells))
                else:
                    cells = row.cells
                    msg = self.shaper.csv_message(header, cells)
                    yield self._encoded(offset, msg, lambda cells=cells: _csv_line(cells))
                offset += 1


def merged(predictions: ReplaySource, labels: ReplaySource) -> Iterator[list[Chunk]]:
    """The rows of a predictions file and a label file (``--labels``) interleaved in event
    time, in groups of at most ``predictions.chunk_rows`` rows (or about its
    ``chunk_bytes`` of messages), one flush each: a group is the chunk of its predictions
    then the chunk of its labels (:attr:`Chunk.labels`; an empty one left out).

    A two-way merge decides which rows share a group: each file is read in its own order
    (as a topic is consumed), and the label file's next row goes first when its event time
    is earlier than the predictions file's next row's (a tie: the prediction first). A row
    without a valid event time (the decoder dead-letters it, one beyond
    ``kafka.max_future_skew`` included) keeps its place after the row before it in its
    file. A row goes at the earlier of its time and the next row's of its file: one row
    stamped far ahead of its neighbours (a label a week late, a typo) must not keep the
    rest of its file waiting until the other file passed its time (the predictions would
    leave the join before their labels came; as live, where one event moves no clock
    until a second reached its time). Two files in event-time order give groups in event-time order;
    rows out of order in a file stay where the file has them. Within a group the order of
    predictions and labels changes nothing: the join meets them at the flush (a label and
    its prediction in one flush join at once, whichever came first), and its clock is the
    second-highest time seen, whatever the order (:func:`monitor.ingest.event_time.vouch`);
    so each kind is processed in one piece (one decode per group, not one per row of a
    file whose labels follow their predictions closely). Memory: one group, and two rows
    read ahead per file. Label rows stamped more than ``labels.ttl`` before a label above
    them are counted in ``labels.behind_ttl`` (their predictions are likely gone)."""
    sources = (predictions, labels)
    iters = [s.rows() for s in sources]
    last = [NO_TIME, NO_TIME]
    heads: list[tuple[int, Record | DeadLetter] | None] = [None, None]
    #: each file's row after its head, with its event time (None: none valid); None: no row
    ahead: list[tuple[int | None, Record | DeadLetter] | None] = [None, None]
    ttl_ms = int(labels.config.labels.ttl.total_seconds() * 1000)
    newest_label = NO_TIME

    def pull(i: int) -> tuple[int | None, Record | DeadLetter] | None:
        item = next(iters[i], None)
        return None if item is None else (sources[i].event_ms(item), item)

    def advance(i: int) -> None:
        nonlocal newest_label
        row, ahead[i] = ahead[i], pull(i)
        if row is None:
            heads[i] = None
            return
        t, item = row
        after = ahead[i][0] if ahead[i] is not None else None
        if t is not None:
            last[i] = t if after is None else min(t, after)
            if i == 1:
                if t < newest_label - ttl_ms:
                    labels.behind_ttl += 1
                newest_label = max(newest_label, last[i])
        heads[i] = (last[i], item)

    ahead[0], ahead[1] = pull(0), pull(1)

    advance(0)
    advance(1)
    group = (Chunk(), Chunk(labels=True))
    limit_rows, limit_bytes = predictions.chunk_rows, predictions.chunk_bytes
    while heads[0] is not None or heads[1] is not None:
        p, lab = heads
        i = 1 if lab is not None and (p is None or lab[0] < p[0]) else 0
        head = heads[i]
        assert head is not None
        item, chunk = head[1], group[i]
        if isinstance(item, DeadLetter):
            chunk.dead.append(item)
        else:
            chunk.records.append(item)
            chunk.nbytes += len(item.value)
        advance(i)
        if group[0].rows + group[1].rows >= limit_rows or group[0].nbytes + group[1].nbytes >= limit_bytes:
            yield [c for c in group if c.rows]
            group = (Chunk(), Chunk(labels=True))
    if group[0].rows or group[1].rows:
        yield [c for c in group if c.rows]


def _struct_names(schema: Any) -> dict[str, Any]:
    """A Parquet schema as nested dicts of field names (for :func:`_names`)."""
    import pyarrow as pa  # noqa: PLC0415

    def walk(fields: Iterable[Any]) -> dict[str, Any]:
        return {f.name: walk(f.type) if pa.types.is_struct(f.type) else None for f in fields}

    return walk(schema)


def _payload(row: dict[str, Any]) -> bytes:
    """A Parquet row as JSON for a dead letter (a value JSON cannot hold as text)."""
    return orjson.dumps(row, default=str)


def _csv_line(cells: list[str]) -> bytes:
    """A CSV row as it was written (for a dead letter's payload)."""
    out = io.StringIO()
    csv.writer(out).writerow(cells)
    return out.getvalue().rstrip("\r\n").encode("utf-8", "surrogateescape")
