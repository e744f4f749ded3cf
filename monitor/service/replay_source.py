"""Reading a file of events (CSV, Parquet or JSON lines) as the pipeline's column batches.

A row is one prediction event, with the same field names as the Kafka messages
(``[models.fields]``): the model, event time, event id, version, the features (as
columns of their own, or ``features.age`` as flattened nested JSON), the prediction and
the segment keys (``region`` or ``segment.region``). Event time comes from the model's
``ts`` field or ``--time-column``: RFC 3339 text or epoch milliseconds.

Rows are read in chunks (bounded memory) and become :class:`ColumnBatch` es exactly as
the decoder would build them from the same JSON (numbers as float64, categories as text,
``1.0`` as ``"1"``). Values are read leniently: a non-numeric value in a numerical column
counts as missing (the live decoder would dead-letter the message). A row without a
usable model, event time or prediction is a dead letter with the live reason codes
(``unknown_model``, ``missing_field``, ``bad_type``), topic ``replay:<file name>`` and the
row number as its offset.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from monitor.config import Config, ModelConfig
from monitor.ingest.batch import ColumnBatch
from monitor.ingest.schema import ModelSchema
from monitor.references.load import categorical_values
from storage.dead_letters import DeadLetter

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".json": "jsonl"}


class ReplaySourceError(ValueError):
    """The file cannot be replayed as it is; the message says what to fix."""


@dataclass(frozen=True)
class Chunk:
    """One chunk of the file as the pipeline takes it."""

    batches: dict[str, ColumnBatch]
    dead: list[DeadLetter]
    next_offset: int
    rows: int


def file_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ReplaySourceError(f"{path}: expected a .csv, .parquet or .jsonl file, got {path.suffix or 'no suffix'}")
    return fmt


def count_rows(path: Path) -> int | None:
    """Rows in the file (for the progress bar): Parquet's metadata, or the lines of text."""
    fmt = file_format(path)
    if fmt == "parquet":
        import pyarrow as pa  # noqa: PLC0415
        import pyarrow.parquet as pq  # noqa: PLC0415

        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except (pa.ArrowException, OSError) as exc:
            raise ReplaySourceError(f"{path}: not a readable Parquet file: {exc}") from None
    with path.open("rb") as fh:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    return max(0, lines - (1 if fmt == "csv" else 0))


def _frames(path: Path, chunk_rows: int) -> Iterator[Any]:
    import pandas as pd  # noqa: PLC0415

    fmt = file_format(path)
    try:
        if fmt == "csv":
            yield from pd.read_csv(path, chunksize=chunk_rows)
        elif fmt == "parquet":
            import pyarrow.parquet as pq  # noqa: PLC0415

            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                yield batch.to_pandas()
        else:
            lines: list[Any] = []
            with path.open("rb") as fh:
                for i, raw in enumerate(fh, start=1):
                    if not raw.strip():
                        continue
                    try:
                        lines.append(orjson.loads(raw))
                    except orjson.JSONDecodeError as exc:
                        raise ReplaySourceError(f"{path} line {i}: not JSON ({exc})") from None
                    if len(lines) >= chunk_rows:
                        yield pd.json_normalize(lines, sep=".")
                        lines = []
            if lines:
                yield pd.json_normalize(lines, sep=".")
    except ReplaySourceError:
        raise
    except (OSError, ValueError) as exc:
        raise ReplaySourceError(f"cannot read {path}: {exc}") from None


def _column(df: Any, *names: str) -> Any | None:
    for n in names:
        if n and n in df.columns:
            return df[n]
    return None


def _times_ms(series: Any) -> np.ndarray:
    """Epoch milliseconds (int64) with -1 where the time is missing or unreadable."""
    import pandas as pd  # noqa: PLC0415

    numeric = pd.to_numeric(series, errors="coerce")
    out = np.full(len(series), -1, dtype=np.int64)
    is_num = numeric.notna().to_numpy()
    out[is_num] = numeric[is_num].to_numpy(dtype=np.float64).astype(np.int64)
    text = ~is_num & series.notna().to_numpy()
    if text.any():
        parsed = pd.to_datetime(series[text].astype(str), utc=True, errors="coerce", format="ISO8601")
        ok = parsed.notna().to_numpy()
        idx = np.flatnonzero(text)[ok]
        out[idx] = parsed[ok].to_numpy(dtype="datetime64[ms]").astype(np.int64)
    return out


class ReplaySource:
    """Chunks of a replay file for the models of ``config``."""

    def __init__(self, config: Config, path: Path, *, time_column: str | None = None, model: str | None = None,
                 chunk_rows: int = 10_000, received_at: datetime) -> None:
        self.config = config
        self.path = Path(path)
        self.time_column = time_column
        self.force_model = model
        self.chunk_rows = chunk_rows
        self.received_at = received_at
        self.topic = f"replay:{self.path.name}"
        if model is not None and model not in {m.name for m in config.models}:
            known = ", ".join(m.name for m in config.models)
            raise ReplaySourceError(f'--model: unknown model "{model}"; the config has: {known}')
        file_format(self.path)

    def __iter__(self) -> Iterator[Chunk]:
        offset = 0
        for df in _frames(self.path, self.chunk_rows):
            yield self._chunk(df.reset_index(drop=True), offset)
            offset += len(df)

    def _chunk(self, df: Any, first: int) -> Chunk:
        n = len(df)
        offsets = np.arange(first, first + n, dtype=np.int64)
        first_model = self.config.models[0]
        if self.force_model is not None:
            models = np.full(n, self.force_model, dtype=object)
        else:
            col = _column(df, first_model.fields.model)
            if col is None:
                if len(self.config.models) > 1:
                    raise ReplaySourceError(
                        f'{self.path}: no "{first_model.fields.model}" column to tell the models apart; add one'
                        " or give --model"
                    )
                models = np.full(n, first_model.name, dtype=object)
            else:
                models = col.astype(object).where(col.notna(), None).to_numpy(dtype=object)
        dead: list[DeadLetter] = []
        batches: dict[str, ColumnBatch] = {}
        known = {m.name: m for m in self.config.models}
        unknown = np.array([m not in known for m in models], dtype=bool)
        for i in np.flatnonzero(unknown):
            reason = "missing_field: model" if models[i] is None else f"unknown_model: {str(models[i])[:100]}"
            dead.append(self._dead(df, int(i), int(offsets[i]), reason))
        for name, m in known.items():
            mask = (models == name) & ~unknown
            if mask.any():
                batch = self._batch(df[mask].reset_index(drop=True), offsets[mask], m, dead)
                if batch is not None and len(batch):
                    batches[name] = batch
        return Chunk(batches, sorted(dead, key=lambda d: d.offset), first + n, n)

    def _dead(self, df: Any, i: int, offset: int, reason: str) -> DeadLetter:
        """Row ``i`` of ``df`` (file row ``offset``) as a dead letter, its payload the row as JSON."""
        row = {k: (None if _isna(v) else v) for k, v in df.iloc[i].to_dict().items()}
        payload = orjson.dumps(row, default=str, option=orjson.OPT_SERIALIZE_NUMPY)
        return DeadLetter(self.topic, 0, offset, reason, payload, self.received_at)

    def _batch(self, df: Any, offsets: np.ndarray, m: ModelConfig, dead: list[DeadLetter]) -> ColumnBatch | None:
        import pandas as pd  # noqa: PLC0415

        schema = ModelSchema.from_config(m)
        f = m.fields
        pred = _column(df, f.prediction)
        if pred is None:
            raise ReplaySourceError(f'{self.path}: no "{f.prediction}" column (the prediction of model {m.name})')
        ts_col = _column(df, self.time_column or f.ts)
        if ts_col is None:
            raise ReplaySourceError(
                f'{self.path}: no "{self.time_column or f.ts}" column for the event time; give --time-column'
            )
        ts = _times_ms(ts_col)
        keep = ts >= 0
        for i in np.flatnonzero(~keep):
            reason = (f"missing_field: {f.ts}" if _isna(ts_col.iloc[int(i)])
                      else f"bad_type: {f.ts} is not an RFC 3339 time or epoch milliseconds")
            dead.append(self._dead(df, int(i), int(offsets[i]), reason))
        if not keep.any():
            return None
        df, offsets, ts = df[keep].reset_index(drop=True), offsets[keep], ts[keep]
        n = len(df)

        def feature(name: str) -> Any:
            return _column(df, name, f"{f.features}.{name}")

        def text(series: Any | None) -> np.ndarray:
            if series is None:
                out = np.empty(n, dtype=object)
                out[:] = None
                return out
            return categorical_values(series.astype(object).where(series.notna(), None).to_numpy(dtype=object))

        def number(series: Any | None) -> np.ndarray:
            if series is None:
                return np.full(n, np.nan)
            return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)

        cols: dict[str, np.ndarray] = {c: number(feature(c)) for c in schema.numerical}
        cols.update({c: text(feature(c)) for c in schema.categorical})
        prediction = df[pred.name]
        cols[m.prediction] = number(prediction) if schema.prediction_type == "numerical" else text(prediction)
        segs = {s: text(_column(df, f"{f.segment}.{s}", s)) for s in schema.segments}
        eid = text(_column(df, f.event_id))
        eid[np.equal(eid, None)] = ""
        ver = text(_column(df, f.version))
        ver[np.equal(ver, None)] = ""
        return ColumnBatch(
            model=m.name, ts_ms=ts, partition=np.zeros(n, dtype=np.int32), offset=offsets.astype(np.int64),
            event_id=eid, version=ver, segments=segs, columns=cols,
        )


def _isna(v: Any) -> bool:
    """Missing as pandas says it (None, NaN, NA, NaT), for scalars only."""
    import pandas as pd  # noqa: PLC0415

    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):  # lists, dicts: not a missing scalar
        return False
