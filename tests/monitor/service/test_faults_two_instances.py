"""Two daemon instances in one consumer group on a two-partition topic.

Supported setup (see the README note): producers key events by model, so each model
lives in one partition; each instance has its own state directory; time windows. After a
rebalance moves a partition, the instance that lost it forgets its open windows (the
committed offset stops at their first row) and the new owner rebuilds them from Kafka.
Proof: the union of both instances' windows equals a single clean run's, and no window
is stored by both.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.demo.broker import EmbeddedBroker
from monitor.demo.data import events
from tests.monitor.daemon_helpers import MODEL_BLOCK, START, produce, table_dump, wait_for
from tests.monitor.fault_helpers import (
    durable_offset,
    fault_config,
    start_daemon,
    terminate,
    wait_ready,
)
from tests.store_targets import state_has_store

pytestmark = [pytest.mark.broker, pytest.mark.slow]

#: longer than instance A's idle spell while B starts and joins (2-5 s on a quiet machine,
#: over 10 s with the suite's 4 workers on 2 cores): an idle close during a hand-over between
#: instances with SQLite files of their own is a known limitation (README, "Scaling out";
#: a shared PostgreSQL store has none, see test_scale_out.py), not what this proves
IDLE = "30s"
SECOND_MODEL = MODEL_BLOCK.format(name="fraud", idle_timeout=IDLE)


def _events(model: str, seed: int) -> list[bytes]:
    return [
        orjson.dumps(e)
        for e in events(
            model=model,
            start=START,
            windows=8,
            per_window=250,
            window_seconds=60,
            shift_from=4,
            seed=seed,
        )
    ]


def _produce(bootstrap: str, topic: str, by_partition: dict[int, list[bytes]]) -> None:
    for part, msgs in by_partition.items():
        produce(bootstrap, topic, msgs, partition=part)


def _ids(db: Path) -> set[str]:
    return {w[0] for w in table_dump(db)["windows"]} if state_has_store(db) else set()


def test_two_instances_split_the_work_without_double_counting(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    topic = f"two-{time.time_ns() % 10**8}"
    broker.create_topic(topic, partitions=2)
    churn, fraud = _events("churn", 1), _events("fraud", 2)
    half = len(churn) // 2 + 30  # inside a window: open windows move with the partition
    _produce(broker.bootstrap, topic, {0: churn[:half], 1: fraud[:half]})
    n = len(churn) + len(fraud)

    def cfg(name: str, group: str) -> Path:
        return fault_config(
            tmp_path / name,
            bootstrap=broker.bootstrap,
            topic=topic,
            group=group,
            max_poll_records=200,
            idle_timeout=IDLE,
            extra=SECOND_MODEL,
        )

    a, b = cfg("a", "shared"), cfg("b", "shared")
    dba, dbb = (c.parent / "state" / "driftwarden.db" for c in (a, b))
    pa = start_daemon(a, log=a.parent / "daemon.log")
    pb = None
    try:
        assert wait_ready(a)
        assert wait_for(lambda: durable_offset(dba) >= 2 * half, timeout=30)
        pb = start_daemon(b, log=b.parent / "daemon.log")
        assert wait_ready(b)
        _produce(broker.bootstrap, topic, {0: churn[half:], 1: fraud[half:]})
        # done when both members' consumed offsets cover the topic and no window is open
        clean_ids: set[str] = set()

        def done() -> bool:
            st = [x for x in (_state(dba), _state(dbb)) if x]
            offs: dict[str, int] = {}
            for s in st:
                for p, o in s["offsets"].items():
                    offs[p] = max(offs.get(p, 0), o)
            return sum(offs.values()) >= n and all(_open(s) == 0 for s in st)

        assert wait_for(done, timeout=120), (_state(dba), _state(dbb))
    finally:
        ra = terminate(pa)
        rb = terminate(pb) if pb is not None else 0
    assert (ra, rb) == (0, 0)

    clean_cfg = cfg("clean", "clean")
    pc = start_daemon(clean_cfg)
    dbc = clean_cfg.parent / "state" / "driftwarden.db"
    try:
        assert wait_ready(clean_cfg)
        assert wait_for(lambda: durable_offset(dbc) >= n and _open(_state(dbc)) == 0, timeout=120)
    finally:
        assert terminate(pc) == 0
    clean = table_dump(dbc)
    clean_ids = {w[0] for w in clean["windows"]}
    da, db_ = table_dump(dba), table_dump(dbb)
    both = _ids(dba) & _ids(dbb)
    print(
        f"\ntwo instances: a stored {len(da['windows'])} windows, b {len(db_['windows'])}; "
        f"{len(both)} stored by both; clean {len(clean_ids)}"
    )
    assert len(db_["windows"]) > 0, "the second instance did no work"
    assert not both, sorted(both)[:5]
    assert sorted(da["windows"] + db_["windows"]) == clean["windows"]
    assert sorted(da["metrics"] + db_["metrics"]) == clean["metrics"]


def _state(db: Path) -> dict[str, Any] | None:
    from tests.monitor.fault_helpers import peek_state

    return peek_state(db, owned_only=True)


def _open(st: dict[str, Any] | None) -> int:
    return -1 if not st else sum(len(m.get("open", [])) for m in st.get("models", {}).values())
