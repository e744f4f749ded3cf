"""``[alerting]``, ``[notifiers]`` and the rules' detector keys from a TOML config through
the daemon's :class:`monitor.service.alerting.Alerting` (the engine and the outbox it
builds), driven with windows like the other alert tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.config import load_config
from monitor.demo.sinks import SlackStandIn
from monitor.service.alerting import Alerting
from storage import alerts as db
from tests.alerts.conftest import Feed

MODEL = '[[models]]\nname = "churn"\nreference = "ref.csv"\nfeatures.numerical = ["age"]\n'
#: two rules that both fire on a window with drift_share 0.6 and 10 rows
RULES = """
[[rules]]
name = "drift"
metric = "drift_share"
op = ">"
threshold = 0.3
notifiers = ["ops"]
[[rules]]
name = "rows"
metric = "row_count"
op = "<"
threshold = 100
notifiers = ["ops"]
"""


def _alerting(folder: Path, toml: str, store: object, clock: object) -> Alerting:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ref.csv").write_text("age\n1\n2\n")
    (folder / "config.toml").write_text(MODEL + toml)
    return Alerting(load_config(folder / "config.toml"), store, clock=clock)  # type: ignore[arg-type]


def test_alerting_group_by_decides_which_alerts_share_a_message(tmp_path: Path, store, clock) -> None:
    """By default (["model", "rule"]) two rules firing on one window make two messages;
    with ``group_by = ["model"]`` one message carries both."""
    ops = '[notifiers.ops]\ntype = "webhook"\nurl = "http://127.0.0.1:9/hook"\n'
    default = _alerting(tmp_path / "default", RULES + ops, store, clock)
    Feed(default.engine, store, clock).window({"drift_share": 0.6, "row_count": 10})
    firing = db.list_deliveries(store, kind="firing")
    assert sorted((d.payload["group"]["alertname"], len(d.alert_ids)) for d in firing) == [("drift", 1), ("rows", 1)]
    by_model = _alerting(tmp_path / "model", RULES + ops + '[alerting]\ngroup_by = ["model"]\n', store, clock)
    Feed(by_model.engine, store, clock, model="fraud").window({"drift_share": 0.6, "row_count": 10})
    [d] = [d for d in db.list_deliveries(store, kind="firing") if d.payload["group"].get("model") == "fraud"]
    assert d.payload["group"] == {"model": "fraud"} and len(d.alert_ids) == 2


@pytest.mark.parametrize("source", ["webhook_url_file", "webhook_url_env"])
def test_a_slack_notifier_with_an_incoming_webhook_posts_to_it(
    tmp_path: Path, store, clock, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    """``webhook_url_file``/``_env``: the Slack notifier posts to the incoming-webhook URL
    read from there (it is a secret: it carries its own credential)."""
    with SlackStandIn() as slack:
        if source == "webhook_url_file":
            (tmp_path / "hook-url").write_text(slack.webhook_url + "\n")
            (tmp_path / "hook-url").chmod(0o600)
            where = 'webhook_url_file = "hook-url"'
        else:
            monkeypatch.setenv("DW_TEST_SLACK_HOOK", slack.webhook_url)
            where = 'webhook_url_env = "DW_TEST_SLACK_HOOK"'
        alerting = _alerting(tmp_path, RULES + f'[notifiers.ops]\ntype = "slack"\n{where}\n', store, clock)
        Feed(alerting.engine, store, clock).window({"drift_share": 0.6, "row_count": 10})
        alerting.worker.run_once()
        assert sorted(m.text.splitlines()[0] for m in slack.messages) == ["WARNING · churn · drift", "WARNING · churn · rows"]
        assert [d.status for d in db.list_deliveries(store)] == ["sent", "sent"]


#: rules over one series, each with a change detector whose settings differ from a baseline
#: ("cusum", "ph") in one key
DETECTORS = {
    "cusum": '{ type = "cusum" }',
    "cusum-h": '{ type = "cusum", h = 8 }',
    "cusum-k": '{ type = "cusum", k = 5 }',
    "cusum-known": '{ type = "cusum", target = 0.05, sigma = 0.005 }',
    "cusum-warmup": '{ type = "cusum", warmup = 40 }',
    "ph": '{ type = "page_hinkley", threshold = 0.05 }',
    "ph-threshold": '{ type = "page_hinkley", threshold = 0.2 }',
    "ph-delta": '{ type = "page_hinkley", threshold = 0.05, delta = 0.02 }',
    "ph-alpha": '{ type = "page_hinkley", threshold = 0.05, alpha = 0.5 }',
    "ph-warmup": '{ type = "page_hinkley", threshold = 0.05, warmup = 50 }',
}


def test_each_detector_key_changes_when_its_rule_fires(tmp_path: Path, store, clock) -> None:
    """The ``[rules.detector]`` keys from a TOML config reach the rule's detector: on one
    series (30 quiet windows, then a slow rise), each setting moves the first firing from
    its baseline's the way it should, and the alert's threshold is the decision limit."""
    from tests.alerts.test_rule_detectors import ramp

    rules = "".join(
        f'[[rules]]\nname = "{name}"\nmetric = "drift_share"\nop = ">"\ndetector = {det}\n'
        for name, det in DETECTORS.items()
    )
    alerting = _alerting(tmp_path, rules, store, clock)
    feed = Feed(alerting.engine, store, clock)
    first: dict[str, int] = {}
    for i, v in enumerate(ramp()):
        for t in feed.window({"drift_share": v}):
            if t.to_state == "firing":
                first.setdefault(t.rule, i)
    limits = {r["rule"]: r["threshold"] for r in store.query("SELECT rule, threshold FROM alerts")}
    assert 30 <= first["cusum"] < 60 and 30 <= first["ph"] < 60  # after the rise began
    assert first["cusum-h"] > first["cusum"] and limits["cusum-h"] == 8.0  # a wider decision interval
    assert "cusum-k" not in first  # a slack of 5 sigmas: the rise never counts
    assert first["cusum-known"] < first["cusum"]  # a given (tighter) sigma instead of the learned one
    assert first["cusum-warmup"] > first["cusum"]  # the level learned over 40 windows includes the rise
    assert first["ph-threshold"] > first["ph"] and limits["ph-threshold"] == 0.2
    assert first["ph-delta"] > first["ph"]  # a larger tolerance per window
    assert first["ph-alpha"] > first["ph"]  # old deviations fade
    assert first["ph-warmup"] >= 49 and first["ph-warmup"] > first["ph"]  # nothing before its 50th window


def test_a_rules_keys_select_its_windows_and_shape_its_alert(tmp_path: Path, store, clock) -> None:
    """A rule's ``model``, ``segment`` and ``version`` select the windows it judges, ``for``
    and ``resolve_after`` how many windows fire and resolve it, ``severity`` and ``labels``
    are on its alert: all from a TOML config."""
    (tmp_path / "ref.csv").write_text("age,region\n1,eu\n2,us\n")
    (tmp_path / "config.toml").write_text(
        '[[models]]\nname = "churn"\nreference = "ref.csv"\nsegments = ["region"]\n'
        'features.numerical = ["age"]\nfeatures.categorical = ["region"]\n'
        '[[models]]\nname = "fraud"\nreference = "ref.csv"\nsegments = ["region"]\n'
        'features.numerical = ["age"]\nfeatures.categorical = ["region"]\n'
        '[[rules]]\nname = "eu"\nmetric = "drift_share"\nop = ">"\nthreshold = 0.3\nmodel = "churn"\n'
        'segment = "region=eu"\nversion = "v12"\nfor = 2\nresolve_after = 2\nseverity = "critical"\n'
        'labels = { team = "ml" }\n'
    )
    alerting = Alerting(load_config(tmp_path / "config.toml"), store, clock=clock)
    feed = Feed(alerting.engine, store, clock)
    high, low = {"drift_share": 0.6}, {"drift_share": 0.1}

    def states(values: dict[str, float], **kw: str) -> list[str]:
        return [t.to_state for t in feed.window(values, **kw)]

    assert states(high, segment="") == []  # the overall window
    assert states(high, segment="region=us") == []
    assert states(high, segment="region=eu", version="v13") == []
    feed.model = "fraud"
    assert states(high, segment="region=eu") == []
    feed.model = "churn"
    assert "firing" not in states(high, segment="region=eu")  # for = 2: one breach is not enough
    assert states(high, segment="region=eu") == ["firing"]
    [row] = db.list_alerts(store, state="firing")
    assert row["labels"] == {"alertname": "eu", "model": "churn", "metric": "drift_share", "severity": "critical",
                             "segment": "region=eu", "version": "v12", "team": "ml"}
    assert states(low, segment="region=eu") == []  # resolve_after = 2
    assert states(low, segment="region=eu") == ["resolved"]


def test_a_retraining_webhook_from_the_config_signs_and_keeps_its_cooldown(tmp_path: Path, store, clock) -> None:
    """``kind = "retrain"``, ``cooldown`` and ``secret_file`` of a webhook notifier from a
    TOML config: a firing, a resolution and a second firing within the hour make one
    signed retraining call, while an alert webhook on the same rule hears both firings."""
    from alerts.notifiers.webhook import new_secret
    from monitor.demo.sinks import WebhookSink

    secret = new_secret()
    (tmp_path / "hook-secret").write_text(secret + "\n")
    (tmp_path / "hook-secret").chmod(0o600)
    with WebhookSink(secret=secret) as retrain, WebhookSink() as plain:
        toml = (
            '[[rules]]\nname = "drift"\nmetric = "drift_share"\nop = ">"\nthreshold = 0.3\n'
            'notifiers = ["retrain", "plain"]\n'
            f'[notifiers.retrain]\ntype = "webhook"\nkind = "retrain"\nurl = "{retrain.url}"\n'
            'secret_file = "hook-secret"\ncooldown = "1h"\n'
            f'[notifiers.plain]\ntype = "webhook"\nurl = "{plain.url}"\n'
        )
        alerting = _alerting(tmp_path, toml, store, clock)
        feed = Feed(alerting.engine, store, clock)
        fired = [t.notifiers for v in (0.6, 0.1, 0.7) for t in feed.window({"drift_share": v})
                 if t.to_state == "firing"]
        assert fired == [("retrain", "plain"), ("plain",)]  # 30 minutes apart: inside the cooldown
        for _ in range(10):  # each run sends what is due; a resolution waits for its firing
            if not alerting.worker.run_once():
                break
        [req] = retrain.requests
        assert req.verified, req.verify_error  # signed with the secret from the file
        assert req.data["type"] == "retrain.requested"
        assert [e["type"] for e in plain.events()] == ["alert.firing", "alert.resolved", "alert.firing"]
