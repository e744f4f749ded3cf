"""Instances of a shared store announce their config and say, once, how another's differs."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from monitor.config import parse_config
from monitor.service.peers import Peers, config_facts, consequences, differences
from storage.instances import FORGET_AFTER, LIVE_FOR, announce, live_instances, names_elsewhere
from tests.store_targets import StoreTarget, age_instance

T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def _config(threshold: float = 0.3, models: tuple[str, ...] = ("churn",), notifiers: bool = True) -> Any:
    data: dict[str, Any] = {
        "kafka": {"predictions_topic": "p"},
        "models": [{"name": m, "reference": "ref.csv", "features": {"numerical": ["age"]}} for m in models],
        "rules": [{"name": "drift", "metric": "drift_share", "threshold": threshold,
                   "notifiers": ["ops"] if notifiers else []}],
    }
    if notifiers:
        data["notifiers"] = {"ops": {"type": "webhook", "url": "https://example.com/hook"}}
    return data


def test_differences_name_what_differs(tmp_path: Any) -> None:
    (tmp_path / "ref.csv").write_text("age\n1\n")
    ours = config_facts(parse_config(_config(), base_dir=tmp_path), {"churn": "aaa"})
    assert differences(ours, ours) == []
    # the reference by content: another path with the same content is alike, other content is not
    assert differences(ours, config_facts(parse_config(_config(), base_dir=tmp_path), {"churn": "bbb"})) == [
        "models with other settings or another reference: churn"
    ]
    theirs = config_facts(parse_config(_config(0.5, ("churn", "fraud"), notifiers=False), base_dir=tmp_path),
                          {"churn": "aaa", "fraud": "ccc"})
    assert differences(ours, theirs) == [
        "models only it has: fraud", "rules with other settings: drift", "notifiers only this one has: ops",
    ]


def test_instances_in_other_consumer_groups_are_told(tmp_path: Any) -> None:
    """Two instances on one shared store with different ``kafka.group_id`` (a copied config
    edited by hand, staging and production on one database) each get every partition from
    Kafka and take its claim from the other at every flush, their flushes rolled back: they
    announced alike configs, so nothing said why (only "claimed by another instance")."""
    (tmp_path / "ref.csv").write_text("age\n1\n")
    ours = config_facts(parse_config(_config(), base_dir=tmp_path), {"churn": "aaa"})
    other = _config()
    other["kafka"]["group_id"] = "driftwarden-staging"
    diff = differences(ours, config_facts(parse_config(other, base_dir=tmp_path), {"churn": "aaa"}))
    assert diff == ["another kafka.group_id: 'driftwarden-staging' (this one: 'driftwarden')"]
    assert "different consumer groups each read every partition" in consequences(diff)
    older = {k: v for k, v in ours.items() if k != "kafka"}  # an instance of an earlier version
    assert differences(ours, older) == [] and differences(older, ours) == []


def test_peers_warn_once_per_difference_and_forget_the_gone(
    store_target: StoreTarget, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "ref.csv").write_text("age\n1\n")
    store = store_target.open()
    now = [T0]
    ours = config_facts(parse_config(_config(), base_dir=tmp_path), {"churn": "aaa"})
    peers = Peers(store, "host-b:2:bb", lambda: ours, lambda: now[0])
    assert peers.run_once() == []  # alone
    theirs = {**ours, "models": {**ours["models"], "fraud": "x"}}
    announce(store, "host-a:1:aa", theirs, T0)
    with caplog.at_level(logging.WARNING, logger="driftwarden.peers"):
        (said,) = peers.run_once()
        assert said.startswith("instance host-a:1:aa shares this store with another config: models only it has: fraud.")
        assert said.endswith(" Events of a model an instance lacks are dead-lettered (unknown_model) on the"
                             " partitions it holds: give every instance the same config."
                             " (README \"Scaling out\")")
        assert peers.run_once() == []  # said once, not at every announcement
    assert [r.getMessage() for r in caplog.records] == [said]
    assert "fraud" in names_elsewhere(store, T0, "models", other_than="host-b:2:bb")  # host-a's
    assert "fraud" not in names_elsewhere(store, T0, "models", other_than="host-a:1:aa")
    # host-a stops refreshing its row: gone after LIVE_FOR, deleted after FORGET_AFTER
    age_instance(store, "host-a:1:aa", LIVE_FOR + timedelta(seconds=1), now[0])
    assert peers.run_once() == [] and set(live_instances(store, now[0])) == {"host-b:2:bb"}
    age_instance(store, "host-a:1:aa", FORGET_AFTER + timedelta(seconds=1), now[0])
    peers.run_once()
    rows = store.query("SELECT name FROM stream_state WHERE name LIKE 'instance:%'")
    assert [r["name"] for r in rows] == ["instance:host-b:2:bb"]
    store.close()


def test_an_instance_that_cannot_announce_itself_says_so_once_then_when_it_can_again(
    store_target: StoreTarget, caplog: pytest.LogCaptureFixture
) -> None:
    """Past LIVE_FOR without an announcement the others take this instance as gone: failing
    for half of that is a WARNING (once), and announcing again is said too."""
    store = store_target.open()
    now = [T0]
    broken = [True]

    def facts() -> dict[str, Any]:
        if broken[0]:
            raise RuntimeError("the store is away")
        return {"rules": {}, "notifiers": [], "models": {}}

    peers = Peers(store, "host-b:2:bb", facts, lambda: now[0])
    with caplog.at_level(logging.INFO, logger="driftwarden.peers"):
        for _ in range(4):  # 0, 15, 30, 45 s of failing
            peers.tick()
            now[0] += timedelta(seconds=15)
        peers.tick()  # 60 s: said already
        broken[0] = False
        peers.tick()
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert said == [
        ("WARNING", "peers: this instance has not announced itself for 45 s (the store is away): after 90 s the"
                    " other instances of the store take it as gone, and end the alerts of rules only it has and"
                    " give up deliveries to notifiers only it has"),
        ("INFO", "peers: this instance announces itself again"),
    ]
    store.close()
