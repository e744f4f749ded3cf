"""Helpers for tests of a flush whose COMMIT raised: a run of the pipeline whose second
flush is cut, and a store whose next transaction ends as if the connection dropped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from monitor.config import load_config
from storage.db import StorageError, Store

#: a drifting window fires (its transition is made inside the flush that gets cut)
DRIFT_RULE = """
[[rules]]
name = "drift"
metric = "drift_share"
threshold = 0.3
notifiers = ["hook"]

[notifiers.hook]
type = "webhook"
url = "http://127.0.0.1:9/hook"
"""


def commit_loss_run(
    folder: Path, store: Store, *, arm: Callable[[], None] | None = None, store_away: bool = False,
    monkeypatch: pytest.MonkeyPatch | None = None,
) -> dict[str, Any]:
    """Predictions, labels, late rows and a dead letter through a pipeline with alerting
    on ``store``. ``arm()``, if given, runs before the second flush (it makes its COMMIT
    fail); when that flush raises, the run goes on as the daemon does: it flushes again,
    at once, or with ``store_away`` (the store cannot be read at first, to tell whether the
    COMMIT happened) after consuming more, as after a flush that failed in a rebalance.

    Returns what the store holds, the transitions logged, whether the flush raised, and
    what each look at the store found (``looked``: True/False; None: it could not)."""
    import monitor.service.alerting as alerting_module
    import monitor.service.pipeline as pipeline_module
    from monitor.demo.data import events
    from monitor.service.alerting import Alerting
    from monitor.service.pipeline import Pipeline
    from tests.monitor.daemon_helpers import START
    from tests.monitor.labels.helpers import Clock, label_config, labels_for, records

    looked: list[bool | None] = []
    if arm is not None:
        assert monkeypatch is not None
        real = pipeline_module.flush_outcome

        def outcome(*args: Any, **kw: Any) -> bool | None:
            if store_away and not looked:
                looked.append(None)
                raise StorageError("the store is still away")
            looked.append(real(*args, **kw))
            return looked[-1]

        monkeypatch.setattr(pipeline_module, "flush_outcome", outcome)
    cfg = load_config(label_config(folder, extra=DRIFT_RULE))
    clock = Clock()
    logged: list[str] = []
    alerting = Alerting(cfg, store, clock=clock)
    p = Pipeline(cfg, store, clock=clock, on_window=alerting.on_window, on_performance=alerting.on_performance,
                 on_outcome=alerting.flush_outcome)
    original = alerting_module.log_transitions
    alerting_module.log_transitions = lambda ts: logged.extend(f"{t.alert_id} {t.to_state}" for t in ts)
    raised = False
    try:
        preds = list(events(model="churn", start=START, windows=4, per_window=100, window_seconds=60,
                            shift_from=2, seed=11))
        labels = labels_for(preds)
        p.process_records(records("predictions", preds[:300]))  # windows 0 and 1 close
        p.flush()
        late = [{**ev, "event_id": f"late-{i}"} for i, ev in enumerate(preds[:5])]  # window 0's, closed
        p.process_records(records("predictions", [*late, *preds[300:]], start=300))  # window 2 (drifting) closes
        p.process_label_records(records("labels", labels[:200]))
        p.process_records([records("predictions", [{}], start=405)[0]._replace(value=b"not json")])
        assert p.stats.late_rows and p.has_pending
        if arm is not None:
            arm()
        try:
            p.flush()
        except StorageError:
            raised = True
            if not store_away:
                p.flush()  # the pending work is still in memory
        p.process_label_records(records("labels", labels[200:], start=200))
        clock.advance(minutes=5)
        p.tick()  # window 3 closes (idle)
        p.flush()
        p.flush()
    finally:
        alerting_module.log_transitions = original

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r.values()) for r in store.query(sql)]

    return {
        "windows": rows("SELECT id, rows, status, late_rows FROM windows ORDER BY id"),
        "metrics": rows('SELECT window_id, family, "column", metric, value FROM metrics'
                        ' ORDER BY window_id, family, "column", metric'),
        "label_counters": rows("SELECT model, name, value FROM label_counters ORDER BY model, name"),
        "label_slots": rows('SELECT model, start, "end", rows, labelled FROM label_slots ORDER BY model, start'),
        "dead_letters": rows('SELECT topic, partition, "offset", reason FROM dead_letters ORDER BY "offset"'),
        "dead_letter_volume": rows("SELECT reason, minute, topic, partition, stored, payloads FROM dead_letter_volume"
                                   " ORDER BY reason, minute, topic, partition"),
        "alerts": rows("SELECT id, state, episode, last_window_id FROM alerts ORDER BY id"),
        "deliveries": rows("SELECT id, kind FROM deliveries ORDER BY id"),
        "offsets": rows('SELECT partition, "offset" FROM stream_partitions ORDER BY partition'),
        "logged": sorted(logged),
        "raised": raised,
        "looked": looked,
    }


def cut_next_commit(store: Store, *, committed: bool) -> Callable[[], None]:
    """Returns ``arm()``: the next transaction on ``store`` then commits (``committed``) or
    rolls back, and raises :class:`StorageError` as a connection dropped at COMMIT would.
    (A store of either kind; the real cut is ``tests.freeze_proxy.CommitLossProxy``.)"""
    real = store.transaction
    armed: list[bool] = []

    class Cut(Exception):
        pass

    @contextmanager
    def transaction() -> Iterator[Store]:
        if not armed or store.in_transaction:
            with real():
                yield store
            return
        armed.clear()
        try:
            with real():
                yield store
                if not committed:
                    raise Cut
        except Cut:
            pass
        raise StorageError("cannot write: the connection was lost at COMMIT")

    store.transaction = transaction  # type: ignore[method-assign]
    return lambda: armed.append(True)
