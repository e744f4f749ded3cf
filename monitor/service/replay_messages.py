"""Turning a replay file's row back into the Kafka message it stands for.

A JSON line already is a message. A table row (CSV, Parquet) is not: its columns may be
flattened (``features.age``, ``segment.region``, as ``pandas.json_normalize`` writes
them) or nested (Parquet struct columns), and a CSV cell has no type. :class:`MessageShaper`
rebuilds the message the live decoder (:mod:`monitor.ingest.decode`) expects, so a
replay's rows are judged by the very code that judges live messages:

- ``--model`` sets the model field of every row; a file of a one-model config without
  a model field gets that model;
- ``--time-column`` (a key, or a dotted path into nested objects) becomes the model's
  ``ts`` field; a row without it has no ``ts`` (a ``missing_field`` dead letter);
- table rows: ``features.X`` columns go into the features object (``layout = "nested"``)
  or to the top level (``"flat"``); an unprefixed feature column of a nested model goes
  into the features object too; ``segment.X`` columns make the segment object;
- CSV cells are text: an empty cell is absent; the numerical features, a numerical
  prediction and the latency field are JSON numbers when the text is a decimal number
  (left as text otherwise, which the decoder dead-letters as live does), the event time
  is a number when it is one (epoch ms) and text otherwise (RFC 3339); every other
  cell stays text (``"1.10"``, ``"NA"``, ``"007"`` are kept as written).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson

from monitor.config import Config, ModelConfig
from monitor.references.load import text_number


def lookup(obj: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """``(found, value)`` of ``key`` in ``obj``: the key itself, else a dotted path into
    nested objects (``meta.time``)."""
    if key in obj:
        return True, obj[key]
    cur: Any = obj
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def _json_default(v: Any) -> Any:
    """Parquet values orjson does not write itself."""
    if isinstance(v, datetime | date | time):  # pandas Timestamps included
        return v.isoformat()
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, bytes | bytearray):
        return bytes(v).decode("utf-8")
    if isinstance(v, timedelta):
        return v.total_seconds()
    raise TypeError(f"{type(v).__name__} is not a JSON type")


def encode(msg: Mapping[str, Any]) -> bytes:
    """The message as JSON bytes. Raises ``TypeError`` (orjson's ``JSONEncodeError``, or a
    value no JSON can hold, such as text that is not UTF-8)."""
    return orjson.dumps(msg, default=_json_default)


class _RowModels:
    """What both shapers do first with a row: set its model field as ``--model``
    (``force_model``) or a one-model config's default (``default_model``, for rows without
    one) says, and find that model's config."""

    def __init__(self, config: Config, *, model_field: str, force_model: str | None,
                 default_model: str | None) -> None:
        self.models: dict[str, ModelConfig] = {m.name: m for m in config.models}
        self.model_field = model_field
        self.force_model = force_model or None
        self.default_model = default_model

    def _model_of(self, row: dict[str, Any]) -> ModelConfig | None:
        """``row``'s model (its model field set in place first); None when missing, not a
        string or unknown: the decoder names it."""
        if self.force_model is not None:
            row[self.model_field] = self.force_model
        elif self.default_model is not None and row.get(self.model_field) is None:
            row[self.model_field] = self.default_model
        model = row.get(self.model_field)
        return self.models.get(model) if isinstance(model, str) else None


class MessageShaper(_RowModels):
    """Builds messages from rows for the models of a config (see the module doc).

    ``model_field`` is the live decoder's; ``default_model`` is the model of rows without
    one (a one-model config whose file has no model field), ``None`` otherwise.
    """

    def __init__(self, config: Config, *, model_field: str, time_column: str | None, force_model: str | None,
                 default_model: str | None) -> None:
        super().__init__(config, model_field=model_field, force_model=force_model, default_model=default_model)
        self.time_column = time_column
        self._plans: dict[str, _Plan] = {}
        self._csv: _CsvHeader | None = None
        self._table: _TableHeader | None = None

    @property
    def rewrites_lines(self) -> bool:
        """Whether a JSON line must be parsed and rebuilt (else it is the message as it is)."""
        return bool(self.time_column or self.force_model or self.default_model)

    def message(self, row: dict[str, Any], *, table: bool, text: bool = False) -> dict[str, Any]:
        """The message of ``row`` (changed in place): ``table`` for CSV and Parquet rows,
        ``text`` for CSV ones (every value a string; empty ones already dropped)."""
        m = self._model_of(row)
        if m is None:
            return row  # the decoder names it (missing, not a string, unknown)
        f = m.fields
        if self.time_column is not None and self.time_column != f.ts:
            found, value = lookup(row, self.time_column)
            if found:
                row[f.ts] = value
            else:
                row.pop(f.ts, None)
        if table:
            row = self._nest(row, m)
        if text:
            self._types(row, m)
        return row

    def csv_message(self, header: Sequence[str], cells: Sequence[str]) -> dict[str, Any]:
        """The message of a CSV row: :meth:`message` of its non-empty cells (``cells`` as
        many as ``header``), built in one pass over the cells where the header allows
        (:class:`_CsvHeader`): the same dict, keys in the same order, so the same bytes."""
        if self._csv is None or self._csv.header is not header:
            self._csv = _CsvHeader(self, header)
        msg = self._csv.message(cells)
        if msg is None:
            msg = self.message({k: v for k, v in zip(header, cells, strict=True) if v != ""}, table=True, text=True)
        return msg

    def table_message(self, names: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
        """The message of a Parquet row (its column ``names`` and ``values``, nulls as
        ``None``): :meth:`message` of ``dict(zip(names, values))``, built in one pass where
        the columns allow (:class:`_TableHeader`): the same dict, keys in the same order."""
        if self._table is None or self._table.header != names:
            self._table = _TableHeader(self, names)
        msg = self._table.message(values)
        if msg is None:
            msg = self.message(dict(zip(names, values, strict=True)), table=True)
        return msg

    def _nest(self, row: dict[str, Any], m: ModelConfig) -> dict[str, Any]:
        plan = self._plan(m)
        route = plan.route
        msg: dict[str, Any] = {}
        feats: dict[str, Any] = {}
        seg: dict[str, Any] = {}
        for k, v in row.items():
            r = route.get(k)
            if r is None:
                r = plan.add_route(k)
            where, name = r
            if where == _TOP:
                msg[k] = v
            elif v is not None:
                (feats if where == _FEATURE else seg)[name] = v
        f = m.fields
        if plan.nested:
            own = msg.get(f.features)
            if own is None or isinstance(own, dict):
                merged = dict(own or {})
                for c in plan.movable:  # an unprefixed feature column of a nested model
                    if c not in merged and msg.get(c) is not None:
                        merged[c] = msg.pop(c)
                merged.update(feats)
                msg[f.features] = merged  # a table row always has the object (null: every feature missing)
        else:
            for k, v in feats.items():
                msg.setdefault(k, v)
        if seg:
            own_seg = msg.get(f.segment)
            msg[f.segment] = {**own_seg, **seg} if isinstance(own_seg, dict) else seg
        return msg

    def _types(self, msg: dict[str, Any], m: ModelConfig) -> None:
        plan = self._plan(m)
        feats = msg.get(m.fields.features) if plan.nested else msg
        if isinstance(feats, dict):
            for c in plan.numerical:
                v = feats.get(c)
                if isinstance(v, str):
                    feats[c] = text_number(v)
        for k in plan.numeric_top:
            v = msg.get(k)
            if isinstance(v, str):
                msg[k] = text_number(v)

    def _plan(self, m: ModelConfig) -> _Plan:
        plan = self._plans.get(m.name)
        if plan is None:
            plan = self._plans[m.name] = _Plan(m, self.model_field)
        return plan


_TOP, _FEATURE, _SEGMENT = 0, 1, 2


class _Plan:
    """What :meth:`MessageShaper._nest` and ``_types`` need of one model, worked out once;
    ``route`` remembers where each column name goes (bounded: a table has few names)."""

    def __init__(self, m: ModelConfig, model_field: str) -> None:
        f = m.fields
        self.nested = m.layout == "nested"
        self.prefixes = ((f.features + ".", _FEATURE), *(((f.segment + ".", _SEGMENT),) if m.segments else ()))
        envelope = {f.model, f.event_id, f.version, f.ts, f.prediction, f.segment, f.features, f.latency, model_field}
        self.movable = tuple(c for c in (*m.features.numerical, *m.features.categorical) if c not in envelope)
        self.numerical = tuple(m.features.numerical)
        top = [f.ts]
        if m.prediction_type == "numerical":
            top.append(f.prediction)
        if f.latency:
            top.append(f.latency)
        self.numeric_top = tuple(top)
        self.route: dict[str, tuple[int, str]] = {}

    def add_route(self, key: str) -> tuple[int, str]:
        r = (_TOP, key)
        for prefix, where in self.prefixes:
            if key.startswith(prefix):
                r = (where, key[len(prefix):])
                break
        if len(self.route) < 10_000:
            self.route[key] = r
        return r


_MODEL, _MOVE = 3, 4


class _FastHeader:
    """What the one-pass shapers of CSV and Parquet rows share: the column names (``None``:
    every row goes the generic way), where the model field is, and per model the columns'
    routes worked out once (:meth:`_compile`, each format's own)."""

    def __init__(self, shaper: MessageShaper, names: Sequence[str]) -> None:
        self.shaper = shaper
        usable = shaper.time_column is None and len(set(names)) == len(names)
        self.names = tuple(names) if usable else None
        field = shaper.model_field
        self.model_at = self.names.index(field) if self.names and field in self.names else None
        self._columns: dict[str, tuple[tuple[Any, ...], ...] | None] = {}

    def _model_columns(self, model: Any) -> tuple[ModelConfig, tuple[tuple[Any, ...], ...]] | None:
        """Model ``model``'s config and its columns' routes, or ``None`` when it is not a
        configured model's name or its rows need the generic path."""
        m = self.shaper.models.get(model) if isinstance(model, str) else None
        if m is None:
            return None
        columns = self._columns.get(m.name, False)
        if columns is False:
            columns = self._columns[m.name] = self._compile(m)
        return None if columns is None else (m, columns)

    def _compile(self, m: ModelConfig) -> tuple[tuple[Any, ...], ...] | None:
        raise NotImplementedError


class _CsvHeader(_FastHeader):
    """:meth:`MessageShaper.message` of a CSV row (``table``, ``text``) in one pass over
    its cells, worked out once per header and model: the generic path builds a dict of the
    non-empty cells, routes each key (:meth:`MessageShaper._nest`), then types the numbers
    (``_types``); here each column's route and whether it is a number are known in advance.

    The result is the generic path's dict, keys in the same order: top-level keys in column
    order (the model field where its column is, else after them), then (a nested model)
    the features object (movable columns in config order, then ``features.X`` ones), then
    the segment object. :meth:`message` returns ``None`` for a row it does not build (its
    model is not configured), and every row goes the generic way when the header or the
    options need more (``--time-column``, a column named twice, a column named as the
    features or segment object, a model field under a prefix)."""

    def __init__(self, shaper: MessageShaper, header: Sequence[str]) -> None:
        super().__init__(shaper, header)
        self.header = header

    def message(self, cells: Sequence[str]) -> dict[str, Any] | None:
        """The row's message, or ``None`` (the generic path's, see the class doc)."""
        if self.names is None:
            return None
        sh = self.shaper
        model = sh.force_model
        if model is None:
            cell = cells[self.model_at] if self.model_at is not None else ""
            model = cell if cell != "" else sh.default_model
        found = self._model_columns(model)
        if found is None:
            return None
        m, columns = found
        msg: dict[str, Any] = {}
        feats: dict[str, Any] = {}
        seg: dict[str, Any] = {}
        moved: dict[str, Any] = {}
        for i, where, name, number in columns:
            v = cells[i]
            if v == "":
                continue
            if number:
                v = text_number(v)
            if where == _TOP:
                msg[name] = v
            elif where == _FEATURE:
                feats[name] = v
            elif where == _MOVE:
                moved[name] = v
            elif where == _SEGMENT:
                seg[name] = v
            else:  # the model field where its column is
                msg[name] = model
        f = m.fields
        if sh.model_field not in msg:
            msg[sh.model_field] = model
        plan = sh._plan(m)
        if plan.nested:
            merged = {c: moved[c] for c in plan.movable if c in moved}
            merged.update(feats)
            msg[f.features] = merged
        else:
            for k, v in feats.items():
                msg.setdefault(k, v)
        if seg:
            msg[f.segment] = seg
        return msg

    def _compile(self, m: ModelConfig) -> tuple[tuple[int, int, str, bool], ...] | None:
        """``(cell index, where, name, is a number)`` per column for model ``m``; ``None``
        when the header needs the generic path for it (see the class doc)."""
        assert self.names is not None
        plan = self.shaper._plan(m)
        f = m.fields
        if f.features in self.names or f.segment in self.names:
            return None  # an object column to merge with: the generic path's work
        numerical, top = set(plan.numerical), set(plan.numeric_top)
        movable = set(plan.movable) if plan.nested else set()
        out = []
        for i, key in enumerate(self.names):
            where, name = plan.route.get(key) or plan.add_route(key)
            if i == self.model_at:
                if where != _TOP:
                    return None
                out.append((i, _MODEL, key, False))
            elif where == _TOP and key in movable:
                out.append((i, _MOVE, key, key in numerical))
            elif where == _TOP:
                out.append((i, _TOP, key, key in top or (not plan.nested and key in numerical)))
            elif where == _FEATURE:
                out.append((i, _FEATURE, name, name in numerical or (not plan.nested and name in top)))
            else:
                out.append((i, _SEGMENT, name, False))
        return tuple(out)


class _TableHeader(_FastHeader):
    """:meth:`MessageShaper.message` of a Parquet row (``table``) in one pass over its
    values, worked out once per column names and model, as :class:`_CsvHeader` for CSV.
    Here every column is a key (a null is ``None``): a null model takes the default in its
    column's place, a null feature or segment column is left out, a null unprefixed
    feature of a nested model stays at the top level; a ``features`` (``segment``) struct
    column is the object the ``features.X`` (``segment.X``) columns are merged into.
    :meth:`message` returns ``None`` for a row it does not build (its model is not a
    configured model's name); every row goes the generic way with ``--time-column``, a
    column named twice, a model field under a prefix, or a features object column beside
    unprefixed feature columns (whether those move into it depends on its content)."""

    def __init__(self, shaper: MessageShaper, names: Sequence[str]) -> None:
        self.header = list(names)
        super().__init__(shaper, self.header)

    def message(self, values: Sequence[Any]) -> dict[str, Any] | None:
        """The row's message, or ``None`` (the generic path's, see the class doc)."""
        if self.names is None:
            return None
        sh = self.shaper
        model = sh.force_model
        if model is None:
            model = values[self.model_at] if self.model_at is not None else None
            if model is None:
                model = sh.default_model
        found = self._model_columns(model)
        if found is None:
            return None
        m, columns = found
        msg: dict[str, Any] = {}
        feats: dict[str, Any] = {}
        seg: dict[str, Any] = {}
        moved: dict[str, Any] = {}
        for i, where, name in columns:
            v = values[i]
            if where == _TOP:
                msg[name] = v
            elif where == _MODEL:
                msg[name] = model
            elif v is None:
                if where == _MOVE:
                    msg[name] = None  # not moved: a null stays where it is
            elif where == _FEATURE:
                feats[name] = v
            elif where == _MOVE:
                moved[name] = v
            else:
                seg[name] = v
        f = m.fields
        if sh.model_field not in msg:
            msg[sh.model_field] = model
        plan = sh._plan(m)
        if plan.nested:
            own = msg.get(f.features)
            if own is None or isinstance(own, dict):
                merged = dict(own or {})
                for c in plan.movable:  # none when there is a features column (see _compile)
                    if c in moved:
                        merged[c] = moved[c]
                merged.update(feats)
                msg[f.features] = merged
        else:
            for k, v in feats.items():
                msg.setdefault(k, v)
        if seg:
            own_seg = msg.get(f.segment)
            msg[f.segment] = {**own_seg, **seg} if isinstance(own_seg, dict) else seg
        return msg

    def _compile(self, m: ModelConfig) -> tuple[tuple[int, int, str], ...] | None:
        """``(value index, where, name)`` per column for model ``m``; ``None`` when the
        columns need the generic path for it (see the class doc)."""
        assert self.names is not None
        plan = self.shaper._plan(m)
        movable = set(plan.movable) if plan.nested else set()
        if m.fields.features in self.names and movable & set(self.names):
            return None
        out = []
        for i, key in enumerate(self.names):
            where, name = plan.route.get(key) or plan.add_route(key)
            if i == self.model_at:
                if where != _TOP:
                    return None
                out.append((i, _MODEL, key))
            elif where == _TOP and key in movable:
                out.append((i, _MOVE, key))
            else:
                out.append((i, where, name))
        return tuple(out)


class LabelShaper(_RowModels):
    """Builds label messages (``--labels``) from rows: a label file's row is the label
    message it stands for, its columns the message's fields (``event_id``, ``label``,
    ``ts`` and the model field, named per model in ``[models.fields]``; other columns
    are kept and ignored, as on the labels topic). The model field is set as
    :class:`MessageShaper` sets it (``--model``, a one-model config's default). CSV cells
    are text: the event time is a number when it is one (epoch ms), a regression model's
    label a number when it is one (else text, which the decoder dead-letters as live);
    a class label stays text (``1`` and ``"1"`` are one class to the decoder).
    ``--time-column`` is the predictions file's only."""

    @property
    def rewrites_lines(self) -> bool:
        """Whether a JSON line must be parsed and rebuilt (else it is the message as it is)."""
        return bool(self.force_model or self.default_model)

    def message(self, row: dict[str, Any], *, table: bool, text: bool = False) -> dict[str, Any]:
        """The message of ``row`` (changed in place); ``text`` for CSV rows (every value a
        string, empty ones already dropped). ``table`` is accepted for the interface
        :class:`MessageShaper` has: a label row has no nested objects to rebuild."""
        m = self._model_of(row)
        if m is None or not text:
            return row  # the decoder names a missing, mistyped or unknown model
        f = m.fields
        numeric = (f.ts, f.label) if m.task == "regression" else (f.ts,)
        for k in numeric:
            v = row.get(k)
            if isinstance(v, str):
                row[k] = text_number(v)
        return row

    def csv_message(self, header: Sequence[str], cells: Sequence[str]) -> dict[str, Any]:
        """The message of a CSV row (``cells`` as many as ``header``; empty ones absent)."""
        return self.message({k: v for k, v in zip(header, cells, strict=True) if v != ""}, table=True, text=True)

    def table_message(self, names: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
        """The message of a Parquet row (nulls as ``None``, JSON ``null``)."""
        return self.message(dict(zip(names, values, strict=True)), table=True)
