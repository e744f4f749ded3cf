"""Evidently HTML reports of stored windows, from the window's sample (``window_samples``).

A report compares the window's stored sample (``[reports] sample_rows`` of its rows)
with the reference the window was judged against, through Evidently's
``DataDriftPreset`` over the features (so its share is over the same columns as
driftwarden's) and ``ValueDrift`` for the prediction, using, per column, the test
driftwarden used (Evidently's name for it), and the share threshold the window was
judged with. A banner at the top
shows driftwarden's own stored figures for the whole window (every row, the
thresholds really used). Evidently recomputes on the sample, so its scores can
differ a little from the stored ones; with ``thresholds = "calibrated"`` its
verdicts use Evidently's fixed thresholds.

The reference: the file whose hash the window names (``windows.reference``), from
the running daemon's memory when it is the one in force, else from
``references``; a window judged against a rolling or seasonal reference (or whose
file is gone) is compared with the model's reference file in force, and the
banner says so. At most :data:`MAX_REFERENCE_ROWS` reference rows are used (a
seeded random sample).

Safety: Evidently writes category values and column names into inline
``<script>`` data unescaped (checked against evidently 0.7: a value
``</script><script>…`` would run). Every category value and column name given
to it has ``<``, ``>`` and ``&`` replaced by their full-width look-alikes
(``＜``, ``＞``, ``＆``), so nothing from the stream can end a script or open a
tag; the banner is built with :func:`html.escape`.

Evidently is imported on the first report only (it takes seconds), never at start-up.
"""

from __future__ import annotations

import html
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from storage.db import Store
from storage.overview import get_window
from storage.payloads import PayloadError
from storage.records import DATASET
from storage.samples import EVENT_ID, read_window_sample
from storage.windows import window_metrics

#: reference rows given to Evidently at most (a seeded random sample beyond)
MAX_REFERENCE_ROWS = 50_000
_LOOKALIKE = str.maketrans({"<": "\uff1c", ">": "\uff1e", "&": "\uff06"})


class ReportUnavailable(Exception):
    """No report can be made; ``status`` is the HTTP status, ``message`` says why and what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ReportInputs:
    """Everything a report is made of (read from the store and the reference file)."""

    window: dict[str, Any]
    figures: list[dict[str, Any]]
    #: the sample's columns (features, prediction), ``sample_rows`` rows each
    sample: dict[str, np.ndarray]
    sample_rows: int
    reference: dict[str, np.ndarray]
    reference_note: str


def safe_text(value: object) -> str:
    """A value from the stream as Evidently may show it: ``<``, ``>``, ``&`` as look-alikes."""
    return str(value).translate(_LOOKALIKE)


# -- gathering ------------------------------------------------------------------------------


def gather(
    store: Store,
    window_id: str,
    *,
    reference_file: Callable[[], Path | None] | None = None,
    load_file: Callable[[Path, dict[str, str]], dict[str, np.ndarray]] | None = None,
) -> ReportInputs:
    """The inputs of a window's report, or :class:`ReportUnavailable` (404: no such window;
    410: its sample is gone or was never kept).

    ``reference_file``: where the model's reference in force lives, used when the file the
    window was judged against is gone or the window was judged against a rolling/seasonal
    reference (the CLI with only ``--state-dir``: the newest registered one); ``load_file``: reads a
    reference file into columns of the given kinds (``f`` numerical, ``s`` categorical).
    """
    window = get_window(store, window_id)
    if window is None:
        raise ReportUnavailable(404, "no such window: it was never stored, or the retention prune deleted it")
    try:
        got = read_window_sample(store, window_id)
    except PayloadError as exc:  # written by another program, or damaged
        raise ReportUnavailable(422, f"the sample of this window cannot be read: {exc}") from exc
    if got is None:
        raise ReportUnavailable(
            410,
            "the sample of this window's rows is gone: reports can be made for the newest"
            " [reports] sample_windows windows of each model only (the window's stored figures are"
            " still in the API and `driftwarden windows --show`)",
        )
    meta, columns = got
    columns.pop(EVENT_ID, None)
    kinds = {c: ("f" if a.dtype.kind == "f" else "s") for c, a in columns.items()}
    reference, note = _reference(store, window, kinds, reference_file, load_file or read_reference)
    return ReportInputs(
        window=window, figures=window_metrics(store, window_id), sample=columns,
        sample_rows=int(meta["sample_rows"]), reference=reference, reference_note=note,
    )


def _reference(
    store: Store, window: Mapping[str, Any], kinds: dict[str, str],
    reference_file: Callable[[], Path | None] | None, load_file: Callable[[Path, dict[str, str]], dict[str, np.ndarray]],
) -> tuple[dict[str, np.ndarray], str]:
    label = str(window.get("reference") or "")
    rows = store.query(
        'SELECT path FROM "references" WHERE model = ? AND substr(sha256, 1, 12) = ? AND path != \'\''
        " ORDER BY registered_at DESC",
        (window["model"], label),
    ) if label else []
    for r in rows:
        path = Path(r["path"])
        if path.is_file():
            return _cap(load_file(path, kinds)), f"the reference this window was judged against ({path.name})"
    why = (
        f"this window was judged against a {label.split(':', 1)[0]} reference made of earlier windows"
        if ":" in label else "the reference file this window was judged against is no longer available"
    )
    path = reference_file() if reference_file is not None else None
    if path is None or not path.is_file():
        raise ReportUnavailable(409, f"{why}, and no reference file of model {window['model']} is available")
    return _cap(load_file(path, kinds)), f"{why}; compared with the model's reference in force ({path.name}) instead"


def _cap(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = min((a.shape[0] for a in columns.values()), default=0)
    if n <= MAX_REFERENCE_ROWS:
        return columns
    idx = np.sort(np.random.default_rng(zlib.crc32(b"reference")).choice(n, MAX_REFERENCE_ROWS, replace=False))
    return {c: a[idx] for c, a in columns.items()}


def read_reference(path: Path, kinds: dict[str, str]) -> dict[str, np.ndarray]:
    """The columns ``kinds`` names from a reference file (CSV or Parquet), numerical ones as
    float64 (NaN for missing or unparsable), categorical ones as text (a CSV's cells as written,
    as the reference was judged: see :func:`monitor.references.load.csv_options`); absent
    columns are left out."""
    import pandas as pd  # noqa: PLC0415

    from monitor.references.load import categorical_values, read_frame  # noqa: PLC0415

    df = read_frame(path, text=[c for c, k in kinds.items() if k != "f"],
                    numbers=[c for c, k in kinds.items() if k == "f"])
    out: dict[str, np.ndarray] = {}
    for c, kind in kinds.items():
        if c not in df.columns:
            continue
        if kind == "f":
            out[c] = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            out[c] = categorical_values(df[c].to_numpy(dtype=object))
    return out


# -- rendering ------------------------------------------------------------------------------


def render(inputs: ReportInputs) -> str:
    """The report as one self-contained HTML document (Evidently's, with our banner on top)."""
    import pandas as pd  # noqa: PLC0415
    from evidently import DataDefinition, Dataset, Report  # noqa: PLC0415
    from evidently.metrics import ValueDrift  # noqa: PLC0415
    from evidently.presets import DataDriftPreset  # noqa: PLC0415

    cols = [c for c in inputs.sample if c in inputs.reference]
    if not cols:
        raise ReportUnavailable(409, "the reference file has none of the sampled columns")
    if inputs.sample_rows == 0:
        raise ReportUnavailable(409, "the window has no rows to report on")
    cols, note = report_columns(inputs, cols)
    names = {c: safe_text(c) for c in cols}
    num = [names[c] for c in cols if inputs.sample[c].dtype.kind == "f"]
    cat = [names[c] for c in cols if inputs.sample[c].dtype.kind != "f"]
    cur = pd.DataFrame({names[c]: _series(inputs.sample[c]) for c in cols})
    ref = pd.DataFrame({names[c]: _series(inputs.reference[c]) for c in cols})
    methods: dict[str, str] = {}
    share = 0.5
    for f in inputs.figures:
        if f["metric"] in ("drift_score", "prediction_drift") and f["column"] in names and f.get("test"):
            name = _evidently_test(str(f["test"]))
            numerical = inputs.sample[f["column"]].dtype.kind == "f"
            if name and _applies(name, numerical):
                methods[names[f["column"]]] = name
        elif f["metric"] == "drift_share" and f["column"] == DATASET and f.get("threshold") is not None:
            share = float(f["threshold"])
    definition: dict[str, Any] = {"numerical_columns": num, "categorical_columns": cat}
    # the dataset's share is over the features, as driftwarden's; the prediction on its own
    predicted = {f["column"] for f in inputs.figures if f["metric"] == "prediction_drift"} & set(cols)
    features = [names[c] for c in cols if c not in predicted]
    presets: list[Any] = [DataDriftPreset(columns=features, drift_share=min(max(share, 0.0), 1.0),
                                          per_column_method=methods or None)]
    presets += [ValueDrift(column=names[c], method=methods.get(names[c])) for c in sorted(predicted)]
    dd = DataDefinition(**definition)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report(presets).run(Dataset.from_pandas(cur, data_definition=dd), Dataset.from_pandas(ref, data_definition=dd))
        page = snapshot.get_html_str(as_iframe=False)
    return _with_banner(page, banner(inputs, note))


def _series(values: np.ndarray) -> Any:
    import pandas as pd  # noqa: PLC0415

    if values.dtype.kind == "f":
        return pd.Series(values.astype(np.float64))
    return pd.Series([None if v is None else safe_text(v) for v in values.tolist()], dtype=object)


def _evidently_test(name: str) -> str | None:
    from detectors.drift.registry import get_test  # noqa: PLC0415

    try:
        return get_test(name).evidently_name
    except (KeyError, ValueError):
        return None


#: columns Evidently's part of a report covers at most: a 1,000-column window took 74 s,
#: 47 MB of HTML and ~950 MB of memory to render, holding the only render slot
MAX_REPORT_COLUMNS = 100


def report_columns(inputs: ReportInputs, cols: list[str]) -> tuple[list[str], str]:
    """The sampled columns Evidently's part covers (at most :data:`MAX_REPORT_COLUMNS`: the
    prediction's, then the drifted ones, then the rest, in the window's order) and what the
    banner says of those left out ("" when none is)."""
    if len(cols) <= MAX_REPORT_COLUMNS:
        return cols, ""
    predicted = {f["column"] for f in inputs.figures if f["metric"] == "prediction_drift"}
    drifted = {f["column"] for f in inputs.figures if f["metric"] in ("drift_score", "prediction_drift") and f.get("drifted")}
    order = {c: i for i, c in enumerate(cols)}
    chosen = sorted(cols, key=lambda c: (c not in predicted, c not in drifted, order[c]))[:MAX_REPORT_COLUMNS]
    note = (f"Evidently's part below covers {MAX_REPORT_COLUMNS} of the window's {len(cols)} columns (the"
            " prediction's and the drifted ones first; its drift share is theirs); this table has every column.")
    return sorted(chosen, key=order.__getitem__), note


def _applies(name: str, numerical: bool) -> bool:
    """Whether Evidently takes test ``name`` by name for a column of that type. It picks
    ``z`` or ``chisquare`` itself for a numerical column of at most 5 values (as
    driftwarden's ``auto`` does) but refuses them by name there (the report was a 500):
    such columns are left to its own choice, which is the same test."""
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest  # noqa: PLC0415
    from evidently.legacy.core import ColumnType  # noqa: PLC0415

    try:
        get_registered_stattest(name, ColumnType.Numerical if numerical else ColumnType.Categorical)
    except Exception:  # noqa: BLE001 - StatTestInvalidFeatureTypeError, StatTestNotFoundError
        return False
    return True


def _with_banner(page: str, banner_html: str) -> str:
    i = page.find("<body>")
    if i < 0:
        return banner_html + page
    i += len("<body>")
    return page[:i] + banner_html + page[i:]


def banner(inputs: ReportInputs, note: str = "") -> str:
    """driftwarden's own facts about the window, escaped, as a block above Evidently's report."""
    w = inputs.window
    e = html.escape
    rows = []
    for f in inputs.figures:
        if f["metric"] not in ("drift_score", "prediction_drift", "drift_share"):
            continue
        drifted = {1: "drifted", 0: "no"}.get(f.get("drifted"), "-")
        rows.append(
            f"<tr><td>{e(f['column'] or '(dataset)')}</td><td>{e(f['metric'])}</td><td>{e(str(f.get('test') or ''))}</td>"
            f"<td>{_num(f.get('value'))}</td><td>{_num(f.get('threshold'))}</td><td>{e(drifted)}</td></tr>"
        )
    style = ("font:14px/1.4 system-ui,sans-serif;margin:12px;padding:12px 16px;border:1px solid #c8ccd4;"
             "border-radius:6px;background:#f6f8fa;color:#1f2328")
    return (
        f'<section id="driftwarden-window" style="{style}">'
        f"<h2 style=\"margin:0 0 6px;font-size:18px\">driftwarden · window report</h2>"
        f"<p style=\"margin:0 0 6px\"><b>model</b> {e(str(w['model']))} · <b>version</b> {e(str(w['version']) or '-')}"
        f" · <b>segment</b> {e(str(w['segment']) or '(all rows)')} · {e(str(w['start']))} → {e(str(w['end']))}"
        f" · <b>status</b> {e(str(w['status']))}</p>"
        f"<p style=\"margin:0 0 6px\">{int(w['rows'])} rows; this report is made from a sample of"
        f" {inputs.sample_rows} of them against {e(inputs.reference_note)}. Evidently recomputes on the"
        f" sample: its scores can differ a little from driftwarden's figures below, which are for every"
        f" row, with the thresholds used. Performance figures (with labels) are in the API, the"
        f" dashboard and `driftwarden windows show`, not in this report.{(' ' + e(note)) if note else ''}</p>"
        f"<p style=\"margin:0 0 6px;font-size:12px\">window id: <code>{e(str(w['id']))}</code></p>"
        + (
            "<table style=\"border-collapse:collapse;font-size:13px\"><thead><tr><th align=left>column</th>"
            "<th align=left>figure</th><th align=left>test</th><th align=right>score</th><th align=right>threshold"
            "</th><th align=left>drifted</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
            if rows else ""
        )
        + "</section>"
    )


def _num(value: object) -> str:
    if value is None:
        return "-"
    try:
        return f"{float(value):.4g}"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return html.escape(str(value))
