"""What the on-call commands show: windows (and one window's every figure), alerts, dead
letters, deliveries, silences, status. Each takes an open store and prints a table (see
:mod:`monitor.cli.render`) or the versioned JSON document; the JSON items carry every
field the table shows, and more (ids, full timestamps)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from monitor.cli.access import CliError
from monitor.cli.render import Col, details, emit_json, fit_list, short_time, table, time_range

Echo = Callable[[str], Any]

#: the label join's counters the status table shows (``label_counters``), and their headers
LABEL_JOIN_HEADERS = {
    "predictions": "preds", "joined": "joined", "duplicate_labels": "dup labels", "early": "early",
    "expired_labels": "expired labels", "expired_predictions": "expired preds",
    "unmatched_labels": "unmatched", "dropped_early_labels": "dropped early",
}


def _drifted_text(r: Mapping[str, Any], width: int) -> str:
    """A window's drifted columns in one line of ``width``: ``age (wasserstein 0.833), amount
    (ks p=1.1e-19)`` (the statistic named: a p-value is no distance), else the names alone,
    else as many as fit and how many more (``age +4``)."""
    from storage.scores import drifted_column_text  # noqa: PLC0415

    cols = r["drifted_columns"]
    full = [drifted_column_text(c["column"], c["test"], c["score"]) for c in cols]
    return fit_list(full, width, short=[c["column"] for c in cols])


# --------------------------------------------------------------------------- windows


def _hint_unknown_model(store: Any, model: str | None) -> None:
    """Nothing listed for ``--model M``: when the store has no window or alert of ``M`` at
    all (a typo, most likely), say so on stderr with the models it has, rather than an
    empty table that reads as "all quiet". Standard output (a table, or JSON) is unchanged."""
    if model is None:
        return
    import typer  # noqa: PLC0415

    from storage.alerts import known_models  # noqa: PLC0415

    models = known_models(store)
    if model not in models:
        shown = ", ".join(models[:20]) + (f" (and {len(models) - 20} more)" if len(models) > 20 else "")
        typer.echo(f"driftwarden: --model {model!r}: no window or alert of that model in this store;"
                   f" its models: {shown or '(none yet)'}", err=True)


def windows_list(store: Any, *, model: str | None, segment: str | None, since: str | None,
                 state: str | None, limit: int, as_json: bool, echo: Echo) -> None:
    from storage.oncall import drifted_columns_of, window_ref  # noqa: PLC0415
    from storage.windows import windows_with_verdicts  # noqa: PLC0415

    status = state if state in ("ok", "insufficient", "error") else None
    drifted = {"drifted": True, "stable": False}.get(state or "")
    rows = windows_with_verdicts(store, model=model, segment=segment, since=since, status=status,
                                 drifted=drifted, limit=limit)
    if not rows:
        _hint_unknown_model(store, model)
    cols = drifted_columns_of(store, [r["id"] for r in rows])
    for r in rows:
        r["drifted_columns"] = cols[r["id"]]
        r["ref"] = window_ref(r["id"])
    if as_json:
        keys = ("id", "ref", "model", "version", "segment", "start", "end", "rows", "status", "late_rows",
                "reference", "computed_at", "error", "drift_share", "share_threshold", "dataset_drift",
                "drifted_columns", "label_coverage", "performance")
        emit_json("windows", items=[{k: r.get(k) for k in keys} for r in rows], echo=echo)
        return
    # one day in view: its date goes to the title, the cells keep the times
    days = {t[:10] for r in rows for t in (r["start"], r["end"]) if not t.startswith("#")}
    one_day = len(rows) > 1 and len(days) == 1

    def span(r: Mapping[str, Any]) -> str:
        text = time_range(r["start"], r["end"])
        return text[6:] if one_day else text

    title = "windows, newest first" + (f", {days.pop()[5:]}" if one_day else "")
    labels: list[Col] = []
    if any(r.get("label_coverage") is not None for r in rows):
        # with labels: coverage and the headline figure with its confidence interval
        labels = [
            Col("labelled", lambda r: "-" if r.get("label_coverage") is None else f"{r['label_coverage']:.0%}",
                no_wrap=True, justify="right", drop=4),
            Col("performance", "performance", fit=lambda r, w: _performance_text(r.get("performance") or {}, w),
                min_width=14, drop=2),
        ]
    # At 80 columns what tells windows apart keeps its width (ref, model, version,
    # segment, time, rows, verdict); the drifted columns shrink to "age +4" and the
    # performance figure loses its interval; then labelled, "drift at", performance and
    # the drifted columns are left out, in that order. Only if that is not enough are
    # the widest identifying values cut in their middle.
    table(title, [
        Col("ref", "ref", no_wrap=True, cut=False),
        Col("model", "model", no_wrap=True, hoist=True),
        Col("version", lambda r: r["version"] or "-", no_wrap=True, hoist=True),
        Col("segment", lambda r: r["segment"] or "(all)", no_wrap=True, hoist=True),
        Col("window (UTC)", span, no_wrap=True),
        Col("rows", "rows", no_wrap=True, justify="right"),
        Col("drift", lambda r: _verdict(r), no_wrap=True),
        # the share each verdict was held against (drift.share, or calibrated): the same
        # for every row (the usual case) goes to the title
        Col("drift at", lambda r: _share(r), no_wrap=True, hoist=True, drop=3),
        Col("drifted columns", "drifted_columns", fit=_drifted_text, min_width=6, drop=1),
        *labels,
    ], rows)


def _performance_text(perf: Mapping[str, Any], width: int = 10**6) -> str:
    """The first headline figure of a window, as ``accuracy 0.831 [0.80, 0.86]``; without
    the interval when ``width`` is too small for it."""
    for name, f in perf.items():
        if f.get("value") is None:
            continue
        text = f"{name} {f['value']:.3g}"
        if f.get("ci_low") is not None and f.get("ci_high") is not None:
            interval = f" [{f['ci_low']:.3g}, {f['ci_high']:.3g}]"
            if len(text + interval) <= width:
                text += interval
        return text
    return "-"


def _verdict(r: Mapping[str, Any]) -> str:
    if r["status"] != "ok" or r["drift_share"] is None:
        return r["status"]
    return f"{'DRIFT' if r['dataset_drift'] else 'no'} {r['drift_share']:.2f}"


def _share(r: Mapping[str, Any]) -> str:
    return "-" if r.get("share_threshold") is None else f"≥{r['share_threshold']:.2f}"


def window_show(store: Any, key: str, *, as_json: bool, echo: Echo) -> None:
    from storage.oncall import find_window, window_figures, window_ref  # noqa: PLC0415

    found = find_window(store, key)
    if not found:
        raise CliError(f'no window "{key}": give its ref (first column of `driftwarden windows`) or its full id')
    if len(found) > 1:
        raise CliError(f'"{key}" matches {len(found)} windows: give more characters of the ref, or the full id')
    w = found[0]
    figures = window_figures(store, w["id"])
    for f in figures:
        f["drifted"] = None if f["drifted"] is None else bool(f["drifted"])
    if as_json:
        emit_json("window", item={**w, "ref": window_ref(w["id"]), "figures": figures}, echo=echo)
        return
    dataset = [f for f in figures if f["column"] == ""]
    drift = [f for f in figures if f["column"] != "" and f["test"]]
    other = [f for f in figures if f["column"] != "" and not f["test"]]
    details(f"window {window_ref(w['id'])}", [
        ("id", w["id"]),
        ("model", w["model"]),
        ("version", w["version"] or "-"),
        ("segment", w["segment"] or "(all rows)"),
        ("start", w["start"]),
        ("end", w["end"]),
        ("rows", w["rows"]),
        ("status", w["status"]),
        *([("error", w["error"])] if w.get("error") else []),  # why its figures could not be computed
        ("late rows", w["late_rows"]),
        ("reference", w["reference"] or "-"),
        ("computed", w["computed_at"]),
        *[(f["metric"], _figure_text(f)) for f in dataset],
    ])
    table("drift per column", [
        Col("column", "column"),
        Col("metric", "metric", no_wrap=True, hoist=True),
        Col("test", "test", no_wrap=True),
        Col("score", "value", justify="right"),
        Col("threshold", "threshold", justify="right"),
        Col("p-value", "p_value", justify="right"),
        Col("drifted", "drifted"),
    ], drift)
    # the other per-column figures (quality), one column per metric
    metrics = sorted({f["metric"] for f in other})
    pivot: dict[str, dict[str, Any]] = {}
    for f in other:
        pivot.setdefault(f["column"], {"column": f["column"]})[f["metric"]] = f["value"]
    table("quality per column", [
        Col("column", "column"),
        *[Col(m.removesuffix("_share").replace("_", " "), m, justify="right") for m in metrics],
    ], list(pivot.values()))


def _figure_text(f: Mapping[str, Any]) -> str:
    """A dataset-level figure with its interval, threshold and verdict when it has them:
    ``0.6075 [0.56, 0.655]`` (a performance figure's bootstrap interval), ``0.25
    (threshold 0.5) no drift``."""
    from monitor.cli.render import cell  # noqa: PLC0415

    text = cell(f["value"])
    if f.get("ci_low") is not None and f.get("ci_high") is not None:
        text += f" [{f['ci_low']:.3g}, {f['ci_high']:.3g}]"
    if f["threshold"] is not None:
        text += f" (threshold {cell(f['threshold'])})"
    if f["drifted"] is not None:
        text += " DRIFT" if f["drifted"] else " no drift"
    return text


# --------------------------------------------------------------------------- alerts


def alerts_list(store: Any, *, model: str | None, state: str | None, since: str | None, as_json: bool,
                echo: Echo) -> None:
    """The alerts table: which rule, model and series (column, segment, version: two alerts
    of one ``column = "*"`` rule differ only there; a part no alert has is left out), its
    state, the figure against the threshold (a ``no_data`` alert's as durations), when it
    fired, and the ``ref`` of the window it last judged (``driftwarden windows show REF``:
    every figure of that window). An alert an active silence mutes says so (``firing
    (silenced)``: its state still changes, nobody is told). ``--json`` items add ``ref``
    (None for a no-data alert) and ``silenced`` (the id of the silence muting a pending or
    firing alert, or None)."""
    from storage.alerts import list_alerts, list_silences  # noqa: PLC0415
    from storage.oncall import window_ref  # noqa: PLC0415
    from storage.scores import alert_figure_text  # noqa: PLC0415

    rows = list_alerts(store, state=state, model=model)
    if not rows:
        _hint_unknown_model(store, model)
    if since is not None:
        rows = [r for r in rows if (r.get("updated_at") or r.get("started_at") or "") >= since]
    silences = list_silences(store, active_at=datetime.now(UTC))
    for r in rows:
        r["ref"] = window_ref(r["last_window_id"]) if r.get("last_window_id") else None
        muting = (s.id for s in silences if s.matches(r["model"], r["rule"]))
        r["silenced"] = next(muting, None) if r["state"] in ("pending", "firing") else None
    if as_json:
        emit_json("alerts", items=rows, echo=echo)
        return
    table("alerts, latest change first", [
        Col("rule", "rule", no_wrap=True),
        Col("model", "model", no_wrap=True, hoist=True),
        *[Col(part, lambda r, part=part: r.get(part) or "-", no_wrap=True, hoist=True, drop=drop)
          for part, drop in (("column", 0), ("segment", 0), ("version", 2)) if any(r.get(part) for r in rows)],
        Col("state", lambda r: r["state"] + (" (silenced)" if r["silenced"] else ""), no_wrap=True, hoist=True),
        Col("severity", "severity", no_wrap=True, hoist=True, drop=1),
        Col("value / threshold", lambda r: f"{alert_figure_text(r.get('metric'), r['value'])}"
            f" / {alert_figure_text(r.get('metric'), r['threshold'])}", justify="right", no_wrap=True),
        Col("since (UTC)", lambda r: short_time(r["resolved_at"] or r["fired_at"] or r["started_at"]), no_wrap=True),
        Col("window", lambda r: r["ref"] or "-", no_wrap=True, cut=False),
    ], rows)


# --------------------------------------------------------------------------- dead letters


def _payload_text(payload: bytes | None, limit: int | None = None) -> str:
    if payload is None:
        return "-"
    text = bytes(payload[:limit] if limit else payload).decode("utf-8", "replace")
    return text + ("…" if limit and len(payload) > limit else "")


def dead_letters(store: Any, *, since: str | None, reason: str | None, by_reason: bool, limit: int,
                 export: Path | None, as_json: bool, echo: Echo) -> None:
    from storage.oncall import dead_letter_reasons, dead_letters_page  # noqa: PLC0415

    if export is not None:
        n = export_dead_letters(store, export, since=since, reason=reason, echo=echo)
        if str(export) != "-":
            echo(f"exported {n} dead letter(s) to {export}")
        return
    if by_reason:
        rows = dead_letter_reasons(store, since=since)
        if as_json:
            emit_json("dead_letter_reasons", items=rows, echo=echo)
            return
        table("dead letters by reason", [
            Col("reason", "code"),
            Col("stored", "n", justify="right"),
            Col("not kept", "not_kept", justify="right"),
            Col("first (UTC)", lambda r: short_time(r["first"]), no_wrap=True),
            Col("last (UTC)", lambda r: short_time(r["last"]), no_wrap=True),
        ], rows)
        return
    rows = dead_letters_page(store, since=since, reason=reason, limit=limit)
    if not rows and reason is not None and not as_json:  # a typo looks like "no such letters"
        known = [r["code"] for r in dead_letter_reasons(store, since=since)]
        echo(f'no dead letters with reason "{reason}"; stored reason codes: {", ".join(known) or "(none)"}')
        return
    if as_json:
        emit_json("dead_letters", items=[_letter_json(r) for r in rows], echo=echo)
        return
    table("dead letters, newest first", [
        Col("id", "id", justify="right"),
        Col("received", lambda r: short_time(r["received_at"]), no_wrap=True),
        Col("topic", "topic", hoist=True),
        Col("partition", "partition", hoist=True),
        Col("offset", "offset", justify="right"),
        Col("reason", "reason"),
        Col("payload", lambda r: _payload_text(r["payload"], 60)),
    ], rows)


def _letter_json(r: Mapping[str, Any]) -> dict[str, Any]:
    """A dead letter as JSON: the payload as UTF-8 text when it is, else base64."""
    out = {k: r[k] for k in ("id", "topic", "partition", "offset", "reason", "received_at")}
    payload = r["payload"]
    if payload is None:
        out["payload"], out["payload_encoding"] = None, None
    else:
        try:
            out["payload"], out["payload_encoding"] = bytes(payload).decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            out["payload"], out["payload_encoding"] = base64.b64encode(bytes(payload)).decode(), "base64"
    return out


#: dead letters read per query while exporting (each holds up to ``max_payload_bytes``)
EXPORT_PAGE = 200


def _letter_lines(store: Any, since: str | None, reason: str | None) -> Iterator[str]:
    """Every matching dead letter as one JSON line each, oldest first, a page at a time:
    memory holds one page, whatever the table holds."""
    from storage.oncall import dead_letters_page  # noqa: PLC0415

    after = 0
    while True:
        rows = dead_letters_page(store, since=since, reason=reason, limit=EXPORT_PAGE, after_id=after)
        for r in rows:
            yield json.dumps(_letter_json(r), ensure_ascii=False)
        if len(rows) < EXPORT_PAGE:
            return
        after = int(rows[-1]["id"])


def export_dead_letters(store: Any, target: Path, *, since: str | None, reason: str | None, echo: Echo) -> int:
    """Every matching dead letter as JSON lines (oldest first) to ``target`` (``-``: stdout)."""
    n = 0
    if str(target) == "-":
        for line in _letter_lines(store, since, reason):
            echo(line)
            n += 1
        return n
    try:
        with open(target, "x", encoding="utf-8") as fh:  # never overwrite an earlier export
            for line in _letter_lines(store, since, reason):
                fh.write(line + "\n")
                n += 1
    except FileExistsError:
        raise CliError(f"--export: {target} exists; give a new file name (or - for stdout)", 2) from None
    except OSError as exc:
        raise CliError(f"--export: cannot write {target}: {exc.strerror or exc}", 2) from None
    return n


# --------------------------------------------------------------------------- deliveries


def deliveries(store: Any, *, model: str | None, state: str | None, notifier: str | None, since: str | None,
               limit: int, as_json: bool, echo: Echo) -> None:
    from storage.oncall import deliveries_page  # noqa: PLC0415

    rows = deliveries_page(store, model=model, status=state, notifier=notifier, since=since, limit=limit)
    if as_json:
        emit_json("deliveries", items=rows, echo=echo)
        return
    table("deliveries (the outbox), newest first", [
        Col("created", lambda r: short_time(r["created_at"]), no_wrap=True),
        Col("notifier", "notifier", no_wrap=True),
        Col("kind", "kind", no_wrap=True),
        Col("model", "model", hoist=True),
        Col("status", "status", no_wrap=True),
        Col("tries", "attempts", justify="right"),
        Col("next / done", lambda r: short_time(r["delivered_at"] or (r["next_attempt_at"] if r["status"] == "pending" else None)),
            no_wrap=True),
        Col("last error", "last_error"),
    ], rows)


# --------------------------------------------------------------------------- silences


def silence_add(store: Any, *, model: str | None, rule: str | None, duration: str | None, until: str | None,
                comment: str, created_by: str, known_rules: list[str] | None, as_json: bool, echo: Echo,
                known_models: list[str] | None = None) -> None:
    """Insert a silence; the daemon reads silences from the store at each notification."""
    import uuid  # noqa: PLC0415

    from monitor.config import parse_duration  # noqa: PLC0415
    from storage.alerts import SilenceRecord, insert_silence  # noqa: PLC0415
    from storage.records import iso  # noqa: PLC0415

    if known_rules is not None and rule is not None and rule not in known_rules:
        raise CliError(f'silence add: unknown rule "{rule}"; the config\'s rules: {", ".join(known_rules) or "(none)"}', 2)
    if known_models is not None and model is not None and model not in known_models:
        # a typo would mute nothing while the operator believes the model is muted
        raise CliError(f'silence add: unknown model "{model}"; the config\'s models:'
                       f' {", ".join(known_models) or "(none)"}', 2)
    if model is None and rule is None:
        raise CliError("silence add: give --model and/or --rule (a silence of everything is not allowed)", 2)
    if (duration is None) == (until is None):
        raise CliError('silence add: give either --for (like "2h") or --until (like 2026-11-24T09:00Z)', 2)
    now = datetime.now(UTC)
    if duration is not None:
        try:
            end = now + parse_duration(duration)
        except ValueError:
            raise CliError(f'--for: expected a duration like "2h", got "{duration}"', 2) from None
    else:
        try:
            end = datetime.fromisoformat(str(until).replace("Z", "+00:00"))
        except ValueError:
            raise CliError(f'--until: expected a time like 2026-11-24T09:00Z, got "{until}"', 2) from None
        end = end if end.tzinfo else end.replace(tzinfo=UTC)
    if end <= now:
        raise CliError("silence add: the end is in the past; give a later --until or a positive --for", 2)
    sid = "sil_" + uuid.uuid4().hex[:20]
    rec = SilenceRecord(id=sid, model=model, rule=rule, starts_at=now, ends_at=end, created_at=now,
                        created_by=created_by, comment=comment)
    with store.transaction():
        insert_silence(store, rec)
    if as_json:
        emit_json("silence", item={"id": sid, "model": model, "rule": rule, "ends_at": iso(end)}, echo=echo)
        return
    echo(f"silence {sid} added: {model or 'any model'} / {rule or 'any rule'} until {iso(end)}")


def silence_list(store: Any, *, include_ended: bool, as_json: bool, echo: Echo) -> None:
    from storage.alerts import list_silences  # noqa: PLC0415

    now = datetime.now(UTC)
    rows = [s.to_json(now) for s in list_silences(store, active_at=None if include_ended else now)]
    if as_json:
        emit_json("silences", items=rows, echo=echo)
        return
    table("silences" + ("" if include_ended else ", active"), [
        Col("id", "id", no_wrap=True),
        Col("model", lambda r: r["model"] or "(any)"),
        Col("rule", lambda r: r["rule"] or "(any)"),
        Col("until (UTC)", lambda r: short_time(r["ends_at"]), no_wrap=True),
        Col("by", "created_by"),
        Col("comment", "comment"),
    ], rows)


def silence_expire(store: Any, silence_id: str, *, echo: Echo) -> None:
    from storage.alerts import expire_silence  # noqa: PLC0415

    with store.transaction():
        ended = expire_silence(store, silence_id, datetime.now(UTC))
    if not ended:
        raise CliError(f'no active silence "{silence_id}": see `driftwarden silence list --all`')
    echo(f"silence {silence_id} expired")


# --------------------------------------------------------------------------- status


def status(store: Any, *, as_json: bool, echo: Echo, models: Any = None) -> None:
    """``models``: the config's (``-c``), to flag stream states built with another window shape."""
    from monitor.windows.shape import WindowShape, stored_shapes  # noqa: PLC0415
    from storage.alerts import alert_counts, delivery_counts  # noqa: PLC0415
    from storage.dead_letters import dead_letter_total, dead_letters_not_kept  # noqa: PLC0415
    from storage.labels import label_counters, slots_waiting  # noqa: PLC0415
    from storage.stream import partition_rows  # noqa: PLC0415
    from storage.windows import window_counts  # noqa: PLC0415

    rows = partition_rows(store)
    configured = {m.name: WindowShape.of(m.window) for m in models or []}
    shapes = [
        {"model": x.model, "topic": x.topic, "partition": x.partition,  # its owner: in "partitions"
         "window": x.shape.describe() if x.shape is not None else None,
         "config_window": configured[x.model].describe() if x.model in configured else None,
         "differs": x.differs_from(configured)}
        for x in stored_shapes(rows)
    ]
    out = {
        "schema_version": store.schema_version(),
        "windows": window_counts(store),
        "alerts": [{"state": k[0], "severity": k[1], "n": n} for k, n in sorted(alert_counts(store).items())],
        "deliveries": [{"notifier": k[0], "status": k[1], "n": n} for k, n in sorted(delivery_counts(store).items())],
        "dead_letters": dead_letter_total(store),
        # beyond the per-minute caps: counted, not stored
        "dead_letters_not_kept": sum(dead_letters_not_kept(store).values()),
        "label_join": label_counters(store),
        "performance_windows_waiting": slots_waiting(store),
        # which instance owns each partition's stream state (several instances on PostgreSQL)
        "partitions": [
            {k: r[k] for k in ("topic", "partition", "owner", "offset", "updated_at")} for r in rows
        ],
        # the window shape each model's stream state was built with (and, with -c, whether
        # this config's differs: another instance's definition, or a restart to come re-windows it)
        "stream_models": shapes,
    }
    if as_json:
        emit_json("status", item=out, echo=echo)
        return
    table("windows by model", [
        Col("model", "model"), Col("status", "status"), Col("count", "n", justify="right"),
        Col("newest end (UTC)", lambda r: short_time(r["last_end"]), no_wrap=True),
    ], out["windows"], count=sum(r["n"] for r in out["windows"]))
    # tables of counts: the title gives their total ("alerts (2)" over 3 alerts read as 2)
    table("alerts", [Col("state", "state"), Col("severity", "severity"), Col("count", "n", justify="right")],
          out["alerts"], count=sum(r["n"] for r in out["alerts"]))
    table("deliveries", [Col("notifier", "notifier"), Col("status", "status"), Col("count", "n", justify="right")],
          out["deliveries"], count=sum(r["n"] for r in out["deliveries"]))
    if out["label_join"]:
        # headers short enough that 8 counters fit 80 columns without cutting words ("predictio/ns")
        table("label join", [Col("model", "model", no_wrap=True), *[Col(h, k, no_wrap=True, justify="right") for k, h in
              LABEL_JOIN_HEADERS.items()]], [{"model": m, **c} for m, c in sorted(out["label_join"].items())])
    if any(p["owner"] for p in out["partitions"]):
        table("partitions", [Col("topic", "topic"), Col("partition", "partition", justify="right"),
              Col("owner", "owner"), Col("offset", "offset", justify="right"),
              Col("updated (UTC)", lambda r: short_time(r["updated_at"]), no_wrap=True)], out["partitions"])
    if shapes:
        cols = [Col("model", "model", no_wrap=True), Col("partition", "partition", justify="right"),
                Col("window", lambda r: r["window"] or "not recorded")]
        if configured:
            cols.append(Col("this config", lambda r: ("DIFFERS: " if r["differs"] else "") + (r["config_window"] or "-")))
        table("stream state by model", cols, shapes)
    kept_note = f" (and {out['dead_letters_not_kept']} more counted, not kept: over the per-minute cap)" if out["dead_letters_not_kept"] else ""
    echo(f"dead letters: {out['dead_letters']}{kept_note}   schema version: {out['schema_version']}")
