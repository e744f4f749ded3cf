"""A flush whose COMMIT raised (the connection dropped): on either store the pipeline finds
out whether it committed before writing anything again, so it is stored exactly once, and
the daemon hands the outcome to the alerting (its transitions are logged once, or dropped
and made again)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from monitor.config import load_config
from monitor.service.daemon import Daemon
from monitor.service.reload import prepare_reload
from tests.monitor.daemon_helpers import write_config
from tests.monitor.service.commit_helpers import DRIFT_RULE, commit_loss_run, cut_next_commit
from tests.store_targets import StoreTarget


@pytest.mark.parametrize(
    ("committed", "store_away"),
    [(True, False), (True, True), (False, False), (False, True)],
    ids=["committed", "committed-found-later", "rolled-back", "rolled-back-found-later"],
)
def test_a_flush_whose_commit_raised_is_stored_exactly_once(
    tmp_path: Path, store_target: StoreTarget, monkeypatch: pytest.MonkeyPatch, committed: bool, store_away: bool
) -> None:
    clean = commit_loss_run(tmp_path / "clean", store_target.fresh().open())
    store = store_target.open()
    lossy = commit_loss_run(tmp_path / "lossy", store, arm=cut_next_commit(store, committed=committed),
                            store_away=store_away, monkeypatch=monkeypatch)
    assert lossy.pop("looked") == ([None] if store_away else []) + [committed]
    assert lossy.pop("raised") == (store_away or not committed)
    clean.pop("raised"), clean.pop("looked")
    assert [w for w in clean["windows"] if w[3]] and clean["label_counters"] and clean["logged"]
    for table in clean:
        assert lossy[table] == clean[table], table


def test_the_daemon_and_a_reload_hand_the_outcome_to_the_alerting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transitions of a flush in doubt survive a reload (SIGHUP may come while the
    store is away) and are logged by the new alerting once the flush is found committed."""
    path = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="t", http_port=1, extra=DRIFT_RULE)
    daemon = Daemon(load_config(path), http=False, config_path=path)
    try:
        assert daemon.pipeline.on_outcome == daemon.alerting.flush_outcome
        in_doubt: list[Any] = [object()]
        daemon.alerting._uncommitted = in_doubt
        prepare_reload(daemon, path).apply(daemon)
        assert daemon.pipeline.on_outcome == daemon.alerting.flush_outcome
        assert daemon.alerting._uncommitted == in_doubt
        logged: list[Any] = []
        monkeypatch.setattr("monitor.service.alerting.log_transitions", logged.extend)
        daemon.pipeline.on_outcome(True)
        assert logged == in_doubt and daemon.alerting._uncommitted == []
    finally:
        daemon.close()


def test_a_flush_in_doubt_whose_partitions_were_all_claimed_again_is_left_to_their_owner(
    tmp_path: Path, store_target: StoreTarget, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The store cannot be read after the COMMIT failed, and meanwhile another instance
    claims the partition and writes its row: no row can tell any more. The partition is
    the other instance's (it resumed from what was stored, whichever it was): the first
    one forgets it, as when fenced, and stores nothing more for it."""
    import monitor.service.pipeline as pipeline_module
    from monitor.service.pipeline import Pipeline
    from storage.db import StorageError
    from tests.monitor.daemon_helpers import START, stream
    from tests.monitor.service.test_pipeline_isolation import records

    cfg = load_config(write_config(tmp_path, bootstrap="127.0.0.1:9", topic="predictions", http_port=1))
    store, other = store_target.open(), store_target.open()
    a = Pipeline(cfg, store, clock=lambda: START.replace(day=24), owner="a")
    recs = records(stream(3, 100, shift_from=9))
    a.process_records(recs[:200])
    a.flush()
    a.process_records(recs[200:])
    arm = cut_next_commit(store, committed=True)
    real = pipeline_module.flush_outcome
    away = [True]

    def outcome(*args: Any, **kw: Any) -> bool | None:
        if away.pop() if away else False:
            raise StorageError("the store is still away")
        return real(*args, **kw)

    monkeypatch.setattr(pipeline_module, "flush_outcome", outcome)
    arm()
    with pytest.raises(StorageError):
        a.flush()
    b = Pipeline(cfg, other, clock=lambda: START.replace(day=24), owner="b")
    b.auto_claim = False
    b.adopt([0], generation=None)
    b.flush()
    assert a.flush() == {} and not a.claims and not a.has_pending
    assert "cannot be told committed or not" in caplog.text
    assert [r["owner"] for r in store.query("SELECT owner FROM stream_partitions")] == ["b"]
