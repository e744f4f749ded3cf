"""The dashboard page at ``/``: plain HTML rendered here, charts drawn by a vendored uPlot.

One model at a time (``/?model=NAME``, default the first configured): its versions and
reference, each column's drift score over its newest :data:`CHART_WINDOWS` all-rows
windows with the threshold it was judged against (one chart per column, one line per
version, drifted windows marked), the dataset's drift share, its newest windows with
their verdicts and report links; and for every model the firing and pending alerts,
the newest deliveries and dead letters.

Every value is escaped where it is written: :func:`html.escape` in the markup; the chart
data travels as JSON in a ``<script type="application/json">`` block with ``<``, ``>``,
``&`` and U+2028/9 written as ``\\uXXXX`` (so no value can close the block), read by
``static/dashboard.js`` with ``JSON.parse`` and shown through ``textContent`` only. The
page is served with a Content-Security-Policy that allows scripts and styles from this
server only: no inline script runs, whatever a value holds.
"""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from monitor.web.view import DaemonView
from storage.alerts import list_alerts
from storage.db import StorageError, brief_reason
from storage.finite import dumps_finite
from storage.overview import drift_history, recent_dead_letters, recent_deliveries
from storage.records import parse_iso, window_url_id
from storage.scores import alert_figure_text
from storage.windows import windows_with_verdicts

log = logging.getLogger("driftwarden.http")

#: windows per chart (the newest all-rows windows of the model)
CHART_WINDOWS = 200
#: rows of each table
TABLE_ROWS = 20
#: the page's Content-Security-Policy: nothing inline runs, nothing leaves this server
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

e = html.escape
#: what a section read from the store says while the store cannot be read
UNREAD = "Not shown: the store cannot be read now (see the status line above). This is not an empty store."


def gather(d: DaemonView, model: str | None) -> dict[str, Any]:
    """What the page shows, read from the daemon and the store (call in a worker thread).

    While the store is failing (or a read fails) the page shows what the daemon holds in
    memory, with the storage error in its status line, instead of waiting on the store:
    its kind and a fixed phrase (:func:`storage.db.brief_reason`), as ``/readyz`` shows
    anyone; where the store is (its path, host, role, database) stays in the log.
    """
    names = list(d.pipeline.models)
    selected = model if model in d.pipeline.models else (names[0] if names else None)
    stored: dict[str, Any] = {"versions": {}, "windows": [], "history": [], "alerts": [], "deliveries": [],
                              "dead_letters": []}
    store_error = d.storage_error_brief
    read = False
    if not d.store_suspect:
        try:
            stored = _stored(d, selected)
            read = True
        except StorageError as exc:
            log.warning("dashboard: store not read: %s", exc)
            store_error = brief_reason(exc)
    models = []
    for name, rt in d.pipeline.models.items():
        ref = rt.prepared.reference
        models.append({
            "name": name, "task": rt.config.task, "features": len(rt.schema.features),
            "reference": ref.path.name, "reference_rows": ref.rows, "reference_version": rt.prepared.version,
            "reference_mode": rt.config.reference_mode, "versions": stored["versions"].get(name, []),
            "open_windows": len(rt.windows.open),
            "watermark": _ms_iso(wm) if (wm := rt.windows.event_watermark) is not None else None,
        })
    stalled = d.stalled_for()
    if store_error is None and stalled is not None:
        store_error = f"the consumer loop has not turned for {stalled:.0f} s (waiting on the store?)"
    return {
        "models": models, "selected": selected, "windows": stored["windows"], "charts": charts(stored["history"]),
        "alerts": stored["alerts"], "deliveries": stored["deliveries"], "dead_letters": stored["dead_letters"],
        "dead_letter_counts": dict(sorted(d.pipeline.stats.dead_letters.items())),
        "ready": d.is_ready, "storage_error": store_error,
        #: False: the store was not read (failing): its sections say so rather than "none"
        "store_read": read,
        "now": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def _stored(d: DaemonView, selected: str | None) -> dict[str, Any]:
    """The page's parts that come from the store."""
    from monitor.web.drift_metrics import recent_versions  # noqa: PLC0415

    windows: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    if selected is not None:
        windows = windows_with_verdicts(d.reads, model=selected, limit=TABLE_ROWS)
        sampled = _sampled(d, [w["id"] for w in windows])
        for w in windows:
            w["has_sample"] = w["id"] in sampled
        history = drift_history(d.reads, selected, windows=CHART_WINDOWS)
    return {
        "versions": {name: recent_versions(d.reads, name, rt.config.limits.max_versions)
                     for name, rt in d.pipeline.models.items()},
        "windows": windows, "history": history,
        "alerts": list_alerts(d.reads, state="firing", limit=TABLE_ROWS)
        + list_alerts(d.reads, state="pending", limit=TABLE_ROWS),
        "deliveries": recent_deliveries(d.reads, TABLE_ROWS),
        "dead_letters": recent_dead_letters(d.reads, TABLE_ROWS),
    }


def _sampled(d: DaemonView, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    marks = ",".join("?" * len(ids))
    rows = d.reads.query(f"SELECT window_id FROM window_samples WHERE window_id IN ({marks})", ids)
    return {r["window_id"] for r in rows}


def _ms_iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _x(end: str) -> float:
    """A window end on the chart's x axis: Unix seconds, or the row ordinal of a count window."""
    if end.startswith("#"):
        return float(int(end[1:]))
    return parse_iso(end).timestamp()


def charts(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The chart data: one chart per column (dataset drift share first), each with one score
    series per version, the threshold and the windows judged drifted, on a shared x axis.

    ``score`` names what a chart's numbers are: ``"p-value"`` or ``"distance"`` (by its
    first test), ``"share"`` for the drift share, None for a test this build does not know;
    the page shows it beside the test's name and on the score's legend entry."""
    from detectors.drift import get_test  # noqa: PLC0415

    xs = sorted({_x(r["end"]) for r in history})
    index = {x: i for i, x in enumerate(xs)}
    by_chart: dict[tuple[str, str], dict[str, Any]] = {}
    for r in history:
        key = ("", "drift_share") if r["metric"] == "drift_share" else (r["column"], r["metric"])
        c = by_chart.setdefault(key, {"column": r["column"], "metric": r["metric"], "tests": set(),
                                      "series": {}, "threshold": [None] * len(xs), "drifted": [None] * len(xs)})
        i = index[_x(r["end"])]
        values = c["series"].setdefault(r["version"], [None] * len(xs))
        values[i] = r["value"]
        if r["threshold"] is not None and c["threshold"][i] is None:
            c["threshold"][i] = r["threshold"]
        if r["drifted"] and r["value"] is not None:
            c["drifted"][i] = r["value"]
        if r.get("test"):
            c["tests"].add(r["test"])
    out = []
    for (column, metric), c in sorted(by_chart.items(), key=lambda kv: (kv[0][1] != "drift_share", kv[0])):
        tests = sorted(c["tests"])
        direction = "higher"
        score: str | None = "share" if metric == "drift_share" else None
        if tests:
            try:
                test = get_test(tests[0])
            except KeyError:
                pass
            else:
                direction = test.direction
                score = "p-value" if test.score_kind == "p_value" else "distance"
        title = "dataset drift share" if metric == "drift_share" else (
            f"{column} (prediction)" if metric == "prediction_drift" else column)
        out.append({
            "title": title, "tests": tests, "score": score, "drift_when": direction,
            "series": [{"version": v, "values": vals} for v, vals in sorted(c["series"].items())],
            "threshold": c["threshold"], "drifted": c["drifted"],
        })
    time_axis = not any(r["end"].startswith("#") for r in history)
    return {"x": xs, "time": time_axis, "charts": out}


def json_for_script(data: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>``, ``&``, U+2028/9."""
    text = dumps_finite(data, default=str)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


# -- the page ---------------------------------------------------------------------------


def render(data: dict[str, Any]) -> str:
    selected = data["selected"]
    tabs = "".join(
        f'<a class="tab{" on" if m["name"] == selected else ""}" href="?model={quote(m["name"])}">{e(m["name"])}</a>'
        for m in data["models"]
    )
    status = "ready" if data["ready"] else "not ready"
    if data["storage_error"]:
        status += f" · storage: {data['storage_error']}"
    read = data.get("store_read", True)
    unread = f'<p class="empty unread">{e(UNREAD)}</p>'
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="60">
<title>driftwarden{(" · " + e(selected)) if selected else ""}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="static/uPlot.min.css">
<link rel="stylesheet" href="static/dashboard.css">
</head>
<body>
<header>
<h1>driftwarden</h1>
<nav>{tabs}</nav>
<p class="status {"ok" if data["ready"] else "bad"}" id="status">{e(status)} · {e(data["now"])}</p>
</header>
<main>
<section id="models"><h2>Models</h2>{_models_table(data["models"])}</section>
<section id="drift"><h2>Drift over time{(" · " + e(selected)) if selected else ""} <small>all rows, newest {CHART_WINDOWS} windows; dashed: threshold; dots: drifted</small></h2>
<div id="charts"><p class="empty" id="charts-empty">{e(UNREAD) if not read else "No judged windows yet." if not data["charts"]["charts"] else "Loading charts…"}</p></div>
</section>
<section id="windows"><h2>Latest windows{(" · " + e(selected)) if selected else ""}</h2>{_windows_table(selected, data["windows"]) if read else unread}</section>
<section id="alerts"><h2>Firing and pending alerts</h2>{_alerts_table(data["alerts"]) if read else unread}</section>
<section id="deliveries"><h2>Recent deliveries</h2>{_deliveries_table(data["deliveries"]) if read else unread}</section>
<section id="dead-letters"><h2>Dead letters</h2>{_dead_letters(data["dead_letters"] if read else None, data["dead_letter_counts"])}</section>
</main>
<script id="drift-data" type="application/json">{json_for_script(data["charts"])}</script>
<script src="static/uPlot.iife.min.js"></script>
<script src="static/dashboard.js"></script>
</body>
</html>
"""


def _table(head: list[str], rows: list[list[str]], empty: str, cls: str = "") -> str:
    if not rows:
        return f'<p class="empty">{e(empty)}</p>'
    th = "".join(f"<th>{e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _n(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return e(f"{value:.4g}")
    return e(str(value))


def _figure(alert: dict[str, Any], key: str) -> str:
    """An alert's ``value`` or ``threshold`` as the command line shows it: a no-data
    alert's seconds as a duration (``1m 04s``), other figures to 4 significant digits."""
    return "–" if alert.get(key) is None else e(alert_figure_text(alert.get("metric"), alert[key]))


def _t(value: Any) -> str:
    """An ISO time (or a count window's ``#ordinal``) shortened for a table cell."""
    if not value:
        return "–"
    text = str(value)
    return e(text.replace("T", " ")[:19] if not text.startswith("#") else text)


def _models_table(models: list[dict[str, Any]]) -> str:
    rows = [[
        e(m["name"]), e(m["task"]), _n(m["features"]),
        f'{e(m["reference"])} <small>({_n(m["reference_rows"])} rows{", version " + e(m["reference_version"]) if m["reference_version"] else ""}, {e(m["reference_mode"])})</small>',
        ", ".join(f"<code>{e(v) or '(none)'}</code>" for v in m["versions"]) or "–",
        _n(m["open_windows"]), _t(m["watermark"]),
    ] for m in models]
    return _table(["model", "task", "features", "reference", "versions", "open windows", "watermark (UTC)"], rows,
                  "No models configured.")


def _verdict(w: dict[str, Any]) -> str:
    if w["status"] != "ok":
        return f'<span class="tag muted">{e(w["status"])}</span>'
    if w.get("dataset_drift"):
        return '<span class="tag bad">drifted</span>'
    return '<span class="tag ok">stable</span>'


def _windows_table(model: str | None, windows: list[dict[str, Any]]) -> str:
    rows = []
    for w in windows:
        share = "–" if w.get("drift_share") is None else f'{_n(w["drift_share"])} / {_n(w.get("share_threshold"))}'
        if w.get("has_sample") and model is not None:
            href = f"api/v1/models/{quote(model)}/windows/{window_url_id(w['id'])}/report"
            report = f'<a href="{e(href)}">report</a>'
        else:
            report = '<span class="muted">no sample</span>'
        rows.append([
            _t(w["start"]) + " → " + _t(w["end"]), f"<code>{e(w['version']) or '–'}</code>",
            f"<code>{e(w['segment']) or '(all)'}</code>", _n(w["rows"]), share, _verdict(w), report,
        ])
    return _table(["window (UTC)", "version", "segment", "rows", "drift share / threshold", "verdict", ""], rows,
                  "No windows stored yet.", "windows")


def _alerts_table(alerts: list[dict[str, Any]]) -> str:
    rows = []
    for a in alerts:
        where = " ".join(f"{k} <code>{e(str(a[k]))}</code>" for k in ("column", "segment", "version") if a.get(k))
        rows.append([
            f'<span class="tag {"bad" if a["state"] == "firing" else "warn"}">{e(a["state"])}</span>',
            e(a["severity"]), e(a["rule"]), e(a["model"]), where or "–",
            f"{e(str(a.get('metric') or ''))} {_figure(a, 'value')} vs {_figure(a, 'threshold')}",
            _t(a.get("fired_at") or a.get("started_at")),
        ])
    return _table(["state", "severity", "rule", "model", "where", "value vs threshold", "since (UTC)"], rows,
                  "Nothing firing or pending.", "alerts")


def _deliveries_table(deliveries: list[dict[str, Any]]) -> str:
    rows = [[
        _t(d["created_at"]), e(d["notifier"]), e(d["kind"]),
        f'<span class="tag {"ok" if d["status"] == "sent" else "bad" if d["status"] == "dead" else "warn"}">{e(d["status"])}</span>',
        _n(d["attempts"]), e((d["last_error"] or "")[:200]) or "–",
    ] for d in deliveries]
    return _table(["created (UTC)", "notifier", "kind", "status", "attempts", "last error"], rows,
                  "No notifications sent yet.", "deliveries")


def _dead_letters(letters: list[dict[str, Any]] | None, counts: dict[str, int]) -> str:
    """The counts since start (memory) and the stored letters (None: the store was not read)."""
    summary = ", ".join(f"{e(k)}: {n}" for k, n in counts.items()) or "none"
    if letters is None:
        return f'<p class="muted">Since start, by reason: {summary}</p><p class="empty unread">{e(UNREAD)}</p>'
    rows = [[
        _t(x["received_at"]), f"{e(x['topic'])}[{_n(x['partition'])}]@{_n(x['offset'])}",
        e(x["reason"][:200]), _n(x["payload_size"]),
    ] for x in letters]
    table = _table(["received (UTC)", "where", "reason", "bytes"], rows, "No dead letters.", "dead")
    return f'<p class="muted">Since start, by reason: {summary}</p>{table}'
