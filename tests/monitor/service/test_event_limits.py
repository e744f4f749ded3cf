"""Limits on each event, from a TOML config through the real Pipeline and a real store, on
the predictions topic and on the labels topic: ``kafka.max_future_skew`` (how far ahead of
its record and the wall clock an event time may be), ``models.limits.max_event_id_length``
and ``max_value_length`` (for class labels). Each test shows the same event accepted under
one setting and dead-lettered under another."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.monitor.labels.helpers import (
    NOW_MS,
    Clock,
    label_config,
    labels_for,
    pipeline,
    predictions,
    records,
)

MIN = 60_000


def _dead_letters(folder: Path, *, kafka: str = "", limits: str = "",
                  odd: dict[str, Any], odd_label: dict[str, Any]) -> dict[str, list[str]]:
    """The dead letters' reasons per topic after a pipeline configured with ``[kafka]`` lines
    ``kafka`` and ``[models.limits]`` lines ``limits`` read 60 predictions and ``odd``, then
    their labels and ``odd_label`` (record timestamps and the wall clock: NOW)."""
    path = label_config(folder, extra=f"\n[models.limits]\n{limits}\n" if limits else "")
    text = path.read_text()
    assert 'poll_timeout = "200ms"\n' in text
    path.write_text(text.replace('poll_timeout = "200ms"\n', f'poll_timeout = "200ms"\n{kafka}\n'))
    preds = predictions(windows=1, per_window=60)
    _cfg, store, p = pipeline(path, Clock())
    try:
        p.process_records(records("predictions", [*preds, odd]))
        p.flush()
        p.process_label_records(records("labels", [*labels_for(preds), odd_label]))
        p.flush()
        got: dict[str, list[str]] = {"predictions": [], "labels": []}
        for r in store.query('SELECT topic, reason FROM dead_letters ORDER BY topic, "offset"'):
            got[r["topic"]].append(r["reason"])
        return got
    finally:
        store.close()


def test_max_future_skew_bounds_event_times_on_both_topics(tmp_path: Path) -> None:
    """An event 20 minutes ahead is accepted with the default (1h) and dead-lettered, naming
    the setting, with ``max_future_skew = "10m"``: for a prediction and for a label."""
    base = predictions(windows=1, per_window=1)[0]
    ahead = NOW_MS + 20 * MIN
    odd = {**base, "event_id": "ahead", "ts": ahead}
    odd_label = {"event_id": "ahead", "model": "churn", "label": 1, "ts": ahead}
    assert _dead_letters(tmp_path / "default", odd=odd, odd_label=odd_label) == {"predictions": [], "labels": []}
    got = _dead_letters(tmp_path / "10m", kafka='max_future_skew = "10m"', odd=odd, odd_label=odd_label)
    reason = "bad_type: ts too far in the future: 1200s ahead of the record timestamp (kafka.max_future_skew is 600s)"
    assert got == {"predictions": [reason], "labels": [reason]}


def test_max_event_id_length_bounds_event_ids_on_both_topics(tmp_path: Path) -> None:
    """With ``max_event_id_length = 14`` (the length of the stream's own ids, like
    "churn-00000000"), an id of 14 characters is accepted and one of 15 is dead-lettered
    with a reason naming the limit, for a prediction and for a label; the default (256)
    takes the 15."""
    base = predictions(windows=1, per_window=1)[0]
    limits = "max_event_id_length = 14"
    for eid, dead in (("x" * 14, False), ("x" * 15, True)):
        odd = {**base, "event_id": eid}
        odd_label = {"event_id": eid, "model": "churn", "label": 1, "ts": base["ts"]}
        got = _dead_letters(tmp_path / str(len(eid)), limits=limits, odd=odd, odd_label=odd_label)
        reason = "bad_type: event_id longer than 14 characters"
        assert got == ({"predictions": [reason], "labels": [reason]} if dead else {"predictions": [], "labels": []})
    odd = {**base, "event_id": "x" * 15}
    odd_label = {"event_id": "x" * 15, "model": "churn", "label": 1, "ts": base["ts"]}
    assert _dead_letters(tmp_path / "default", odd=odd, odd_label=odd_label) == {"predictions": [], "labels": []}


def test_max_value_length_bounds_class_labels(tmp_path: Path) -> None:
    """``max_value_length`` (which caps versions and segment values in the windows) also caps
    a class label: one of 6 characters passes the length check by default (and, none of the
    score model's reference classes, is refused for that) and is dead-lettered at 5 for its length."""
    base = predictions(windows=1, per_window=1)[0]
    odd = {**base, "event_id": "wordy"}
    odd_label = {"event_id": "wordy", "model": "churn", "label": "abcdef", "ts": base["ts"]}
    assert _dead_letters(tmp_path / "default", odd=odd, odd_label=odd_label) == {
        "predictions": [], "labels": ["bad_type: label 'abcdef' is none of the classes of the reference (0, 1)"]}
    got = _dead_letters(tmp_path / "5", limits="max_value_length = 5", odd=odd, odd_label=odd_label)
    assert got == {"predictions": [], "labels": ["bad_type: label longer than 5 characters"]}
