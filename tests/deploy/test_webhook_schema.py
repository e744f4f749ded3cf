"""docs/schemas/retrain.requested.schema.json describes what is really sent: a retraining
webhook delivered by the real outbox (a replay with --notify into a sink) validates."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson

from monitor.config import load_config
from monitor.demo.sinks import WebhookSink
from monitor.service.replay import run_replay
from tests.conftest import repo_root
from tests.monitor.daemon_helpers import stream, write_config

SCHEMA = repo_root() / "docs" / "schemas" / "retrain.requested.schema.json"
SECRET = "whsec_" + "c2NoZW1hLXRlc3Qtc2VjcmV0LWZvci1yZXRyYWluaW5n"

RULE = """
[[rules]]
name = "drift"
metric = "drift_share"
op = ">="
threshold = 0.5
notifiers = ["retrain"]

[notifiers.retrain]
type = "webhook"
kind = "retrain"
url = "{url}"
secret_env = "DW_SCHEMA_TEST_SECRET"
"""


def test_a_delivered_retraining_request_matches_the_schema(tmp_path: Path, monkeypatch: object) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    monkeypatch.setenv("DW_SCHEMA_TEST_SECRET", SECRET)  # type: ignore[attr-defined]
    data = tmp_path / "events.jsonl"
    data.write_bytes(b"\n".join(stream(windows=6, per_window=200, shift_from=3, seed=5)) + b"\n")
    with WebhookSink(secret=SECRET) as sink:
        cfg_path = write_config(
            tmp_path / "conf", bootstrap="127.0.0.1:9", topic="t", http_port=9,
            daemon_extra='public_url = "https://driftwarden.example.com"', extra=RULE.format(url=sink.url + "/retrain"),
        )
        result = run_replay(load_config(cfg_path), data, tmp_path / "out", notify=True)
        assert result.deliveries_sent >= 1
        (req,) = [r for r in sink.accepted() if r.path == "/hooks/retrain"][:1]
    assert req.verified is True
    body = orjson.loads(req.body)
    jsonschema.validate(body, schema)
    assert body["type"] == "retrain.requested" and body["model"] == "churn"
    assert body["callback"] == "https://driftwarden.example.com/api/v1/models/churn/references"
    assert body["id"] == req.header("webhook-id")
    # and the schema is not a rubber stamp
    broken = {**body, "callback": "ftp://x"}
    try:
        jsonschema.validate(broken, schema)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("the schema accepted a non-HTTP callback")
