"""The config loader: one tiny bad file per validation rule, with its exact message.

Every file is real TOML written to ``tmp_path`` and loaded with :func:`load_config`,
the same path ``driftwarden check`` and ``run`` take.
"""

from __future__ import annotations

import re
import shutil
import tomllib
import typing
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from monitor import config as cfgmod
from monitor.config import (
    Config,
    ConfigError,
    SlackNotifierConfig,
    WebhookNotifierConfig,
    format_duration,
    known_drift_methods,
    load_config,
    parse_config,
    parse_duration,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config.example.toml"

MODEL = """
[[models]]
name = "churn"
reference = "ref.csv"
{model}
[models.features]
numerical = ["age"]
categorical = ["plan"]
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "ref.csv").write_text("age,plan,prediction\n42,pro,0.5\n")
    path = tmp_path / "driftwarden.toml"
    path.write_text(text)
    return path


def model_text(model: str = "") -> str:
    """MODEL with ``model`` lines inside [[models]]; a line for an existing key replaces it."""
    text = MODEL
    extra = []
    for line in model.splitlines():
        key = line.split("=")[0].strip()
        existing = re.search(rf"^{re.escape(key)} = .*$", text, re.M)
        if existing:
            text = text.replace(existing.group(0), line)
        else:
            extra.append(line)
    return text.format(model="\n".join(extra))


def problems(tmp_path: Path, rest: str = "", model: str = "") -> list[str]:
    """Load MODEL (with ``model`` lines inside [[models]]) followed by ``rest``; return the problems."""
    path = write(tmp_path, model_text(model) + rest)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.source == str(path)
    return exc.value.problems


def load(tmp_path: Path, rest: str = "", model: str = "") -> Config:
    return load_config(write(tmp_path, model_text(model) + rest))


# --------------------------------------------------------------------------- one bad file per rule

SLACK = '[notifiers.s]\ntype = "slack"\n'
HOOK = '[notifiers.h]\ntype = "webhook"\nurl = "https://example.com/hook"\n'
#: a usable Standard Webhooks signing secret (whsec_ and the base64 of 32 bytes)
HOOK_SECRET = "whsec_" + "ZHJpZnR3YXJkZW4tdGVzdC1zaWduaW5nLXNlY3JldC0zMmI="
RULE = '[[rules]]\nname = "r"\nmetric = "drift_share"\nthreshold = 0.3\n'

# (id, lines inside [[models]], lines after it, the exact message)
CASES: list[tuple[str, str, str, str]] = [
    # detection modes: an option of one mode is refused in another
    (
        "calibrated-share",
        "",
        '[models.drift]\nthresholds = "calibrated"\nshare = 0.3\n',
        'models[0].drift.share: applies only to thresholds = "evidently"; with "calibrated" the'
        " thresholds come from the reference (set alpha and alpha_column instead)",
    ),
    (
        "alpha-with-evidently",
        "",
        "[models.drift]\nalpha = 0.05\n",
        'models[0].drift.alpha: applies only to thresholds = "calibrated"',
    ),
    (
        "reference-windows-with-fixed",
        "reference_windows = 3",
        "",
        'models[0].reference_windows: applies only to reference_mode = "rolling" or "seasonal"',
    ),
    (
        "season-required",
        'reference_mode = "seasonal"',
        "",
        'models[0].season: required for reference_mode = "seasonal", e.g. season = "7d"',
    ),
    (
        "season-whole-multiple",
        'reference_mode = "seasonal"\nseason = "90m"',
        '[models.window]\nsize = "1h"\n',
        'models[0].season: expected a whole multiple of the window step ("1h"), got "1h30m"',
    ),
    (
        "detector-with-threshold",
        "",
        RULE + 'detector = "cusum"\n',
        "rules[0].threshold: expected no threshold with a detector (it signals a change in the"
        " series itself; op sets the direction)",
    ),
    (
        "detector-unknown",
        "",
        '[[rules]]\nname = "r"\nmetric = "drift_share"\ndetector = "ewma"\n',
        'rules[0].detector.type: expected "cusum" or "page_hinkley", got "ewma"',
    ),
    # reads behind the token, window samples
    (
        "protect-reads-without-token",
        "",
        "[daemon]\nprotect_reads = true\n",
        "daemon.protect_reads: expected daemon.api_token_env or daemon.api_token_file as well: reads"
        " would need a token that is not configured",
    ),
    ("sample-rows-negative", "", "[reports]\nsample_rows = -1\n", "reports.sample_rows: expected a number >= 0, got -1"),
    (
        "sample-rows-huge",
        "",
        "[reports]\nsample_rows = 1000000\n",
        "reports.sample_rows: expected a number <= 100000, got 1000000",
    ),
    ("sample-windows-text", "", '[reports]\nsample_windows = "all"\n', 'reports.sample_windows: expected an integer, got "all"'),
    # unknown keys
    ("unknown-key-close", "", "[deamon]\n", 'deamon: unknown key; did you mean "daemon"?'),
    (
        "unknown-key-list",
        "",
        "[daemon]\ncolour = 1\n",
        "daemon.colour: unknown key; expected one of: api_token_env, api_token_file, "
        "http_body_timeout, http_idle_timeout, http_listen, http_max_client_connections, http_max_connections, log_format, "
        "log_level, max_json_bytes, max_payload_bytes, max_reference_bytes, protect_reads, public_url, "
        "shutdown_timeout, sqlite_synchronous, state_dir, tick_interval",
    ),
    (
        "unknown-key-nested",
        "",
        '[models.window]\nsise = "5m"\n',
        'models[0].window.sise: unknown key; did you mean "size"?',
    ),
    (
        "unknown-key-rule-alias",
        "",
        RULE + "fore = 2\n",
        'rules[0].fore: unknown key; did you mean "for"?',
    ),
    # literal secrets
    (
        "literal-slack-token",
        "",
        SLACK + 'token = "xoxb-1-2-3"\nchannel = "#c"\n',
        "notifiers.s.token: unknown key; secrets are never literal: use token_env or token_file",
    ),
    (
        "literal-sasl-password",
        "",
        '[kafka]\nsasl_password = "hunter2"\n',
        "kafka.sasl_password: unknown key; secrets are never literal: use sasl_password_env or sasl_password_file",
    ),
    (
        "literal-webhook-secret",
        "",
        HOOK + 'secret = "whsec"\n',
        "notifiers.h.secret: unknown key; secrets are never literal: use secret_env or secret_file",
    ),
    (
        "literal-api-token",
        "",
        '[daemon]\napi_token = "t"\n',
        "daemon.api_token: unknown key; secrets are never literal: use api_token_env or api_token_file",
    ),
    (
        "literal-consumer-option",
        "",
        '[kafka]\nconsumer_options = { sasl_plain_password = "p" }\n',
        "kafka.consumer_options.sasl_plain_password: secrets are never literal: use "
        "kafka.sasl_password_env/sasl_password_file or kafka.ssl_password_env/ssl_password_file",
    ),
    (
        "env-name-is-a-secret",
        "",
        SLACK + 'token_env = "xoxb-1-2-3"\nchannel = "#c"\n',
        'notifiers.s.token_env: expected the name of an environment variable like "SLACK_TOKEN", '
        "got a value that is not a variable name (not shown, in case it is the secret itself)",
    ),
    (
        "secret-env-and-file",
        "",
        '[daemon]\napi_token_env = "T"\napi_token_file = "t"\n',
        "daemon.api_token_file: expected either api_token_env or api_token_file, got both",
    ),
    # scalar types (strict: TOML has real types)
    (
        "int-as-string",
        "",
        '[models.window]\nmin_rows = "30"\n',
        'models[0].window.min_rows: expected an integer, got "30"',
    ),
    (
        "int-as-bool",
        "",
        "[kafka]\nmax_poll_records = true\n",
        "kafka.max_poll_records: expected an integer, got true",
    ),
    (
        "float-as-string",
        "",
        '[models.drift]\nshare = "0.5"\n',
        'models[0].drift.share: expected a number, got "0.5"',
    ),
    (
        "float-not-finite",
        "",
        "[models.drift]\nthreshold = nan\n",
        "models[0].drift.threshold: expected a finite number, got nan",
    ),
    (
        "bool-as-int",
        "",
        "[models.drift]\nprediction = 1\n",
        "models[0].drift.prediction: expected true or false, got 1",
    ),
    ("string-as-int", "prediction = 5", "", "models[0].prediction: expected a string, got 5"),
    (
        "empty-string",
        'prediction = ""',
        "",
        'models[0].prediction: expected a non-empty string, got ""',
    ),
    (
        "list-as-string",
        'segments = "region"',
        "",
        'models[0].segments: expected a list, got "region"',
    ),
    (
        "table-as-int",
        "",
        "[kafka]\nconsumer_options = 5\n",
        "kafka.consumer_options: expected a table, got 5",
    ),
    # consumer options kafka-python refused only when the consumer was made (a reconnect loop
    # or a traceback), or that overrode what the daemon sets
    (
        "consumer-option-unknown",
        "",
        "[kafka]\nconsumer_options = { fetch_max_wait = 200 }\n",
        'kafka.consumer_options.fetch_max_wait: not a kafka-python consumer option (did you mean "fetch_max_wait_ms"?)',
    ),
    (
        "consumer-option-type",
        "",
        '[kafka]\nconsumer_options = { fetch_max_wait_ms = "fast" }\n',
        'kafka.consumer_options.fetch_max_wait_ms: expected an integer, got "fast"',
    ),
    (
        "consumer-option-bool",
        "",
        "[kafka]\nconsumer_options = { check_crcs = 1 }\n",
        "kafka.consumer_options.check_crcs: expected true/false, got 1",
    ),
    (
        "consumer-option-none-default-type",
        "",
        '[kafka]\nconsumer_options = { group_instance_id = 7 }\n',
        "kafka.consumer_options.group_instance_id: expected a string, got 7",
    ),
    (
        "consumer-option-api-version",
        "",
        '[kafka]\nconsumer_options = { api_version = ["two"] }\n',
        'kafka.consumer_options.api_version: expected a list of integers like [2, 8] or a string like "2.8",'
        " got ['two']",
    ),
    (
        "consumer-option-owned-by-a-key",
        "",
        '[kafka]\nconsumer_options = { group_id = "other" }\n',
        "kafka.consumer_options.group_id: set by the daemon from kafka.group_id: set that instead",
    ),
    (
        "consumer-option-owned",
        "",
        "[kafka]\nconsumer_options = { enable_auto_commit = true }\n",
        "kafka.consumer_options.enable_auto_commit: set by the daemon itself",
    ),
    (
        "consumer-option-tls-without-tls",
        "",
        '[kafka]\nconsumer_options = { ssl_ciphers = "ECDHE" }\n',
        'kafka.consumer_options.ssl_ciphers: expected only with security_protocol "SSL" or "SASL_SSL"'
        ' (it is ignored otherwise), got security_protocol "PLAINTEXT"',
    ),
    # TLS and SASL keys without the protocol that uses them: the connection stayed plain
    (
        "tls-key-without-tls",
        "",
        "[kafka]\nssl_check_hostname = false\n",
        'kafka.ssl_check_hostname: expected only with security_protocol "SSL" or "SASL_SSL"'
        ' (it is ignored otherwise), got security_protocol "PLAINTEXT"',
    ),
    (
        "sasl-key-without-sasl",
        "",
        '[kafka]\nsecurity_protocol = "SSL"\nsasl_username = "u"\n',
        'kafka.sasl_username: expected only with a sasl_mechanism and security_protocol "SASL_PLAINTEXT"'
        ' or "SASL_SSL" (it is ignored otherwise), got security_protocol "SSL"',
    ),
    (
        "path-as-int",
        "",
        "[daemon]\nstate_dir = 5\n",
        "daemon.state_dir: expected a path (a string), got 5",
    ),
    (
        # Path("") is the config file's folder: `run` took its files private
        "path-empty",
        "",
        '[daemon]\nstate_dir = " "\n',
        "daemon.state_dir: expected a path, got an empty string",
    ),
    # bounds
    (
        "int-lower-bound",
        "",
        "[models.window]\nmin_rows = 0\n",
        "models[0].window.min_rows: expected a number >= 1, got 0",
    ),
    (
        "float-upper-bound",
        "",
        "[models.drift]\nshare = 1.5\n",
        "models[0].drift.share: expected a number <= 1, got 1.5",
    ),
    (
        "float-exclusive-bound",
        "",
        "[models.drift]\nshare = 0.0\n",
        "models[0].drift.share: expected a number > 0, got 0.0",
    ),
    (
        "threshold-positive",
        "",
        "[models.drift]\nthreshold = -0.1\n",
        "models[0].drift.threshold: expected a number > 0, got -0.1",
    ),
    (
        "payload-bytes",
        "",
        "[daemon]\nmax_payload_bytes = -1\n",
        "daemon.max_payload_bytes: expected a number >= 0, got -1",
    ),
    (
        "retention-days-renamed",
        "",
        "[retention]\nmetrics_days = 30\n",
        'retention.metrics_days: renamed: write metrics = "30d" (a duration, or "forever")',
    ),
    (
        "retention-days-zero-renamed",
        "",
        "[retention]\nwindows_days = 0\n",
        'retention.windows_days: renamed: write windows = "forever" (0 kept rows for ever)',
    ),
    (
        "retention-zero",
        "",
        '[retention]\nwindows = "0s"\n',
        'retention.windows: expected a positive duration like "90d", or "forever" to keep rows'
        ' for ever, got "0s"',
    ),
    (
        "retention-number",
        "",
        "[retention]\ndead_letters = 14\n",
        'retention.dead_letters: expected a duration like "90d", or "forever", got 14',
    ),
    (
        "retention-metrics-longer-than-windows",
        "",
        '[retention]\nwindows = "30d"\nmetrics = "forever"\n',
        'retention.metrics: expected at most retention.windows ("30d"): figures are deleted with'
        ' their window, got "forever"',
    ),
    (
        "dead-letter-cap-zero",
        "",
        "[retention]\ndead_letters_per_minute = 0\n",
        "retention.dead_letters_per_minute: expected a number >= 1, got 0",
    ),
    (
        "dead-letter-payload-cap",
        "",
        "[retention]\ndead_letters_per_minute = 10\ndead_letter_payloads_per_minute = 11\n",
        "retention.dead_letter_payloads_per_minute: expected at most"
        " retention.dead_letters_per_minute (10), got 11",
    ),
    # choices
    (
        "literal",
        "",
        '[daemon]\nlog_level = "loud"\n',
        'daemon.log_level: expected one of "debug", "info", "warning", "error", got "loud"',
    ),
    (
        "literal-task",
        'task = "ranking"',
        "",
        'models[0].task: expected one of "classification", "regression", got "ranking"',
    ),
    (
        "literal-rule-op",
        "",
        RULE + 'op = "=>"\n',
        'rules[0].op: expected one of ">", ">=", "<", "<=", "==", "!=", got "=>"',
    ),
    # durations
    (
        "duration-word",
        "",
        '[models.window]\nsize = "fast"\n',
        'models[0].window.size: expected a duration like "15m", got "fast"',
    ),
    (
        "duration-bare-number",
        "",
        "[models.window]\nlateness = 60\n",
        'models[0].window.lateness: expected a duration like "15m", got 60',
    ),
    (
        "duration-zero",
        "",
        '[daemon]\ntick_interval = "0s"\n',
        'daemon.tick_interval: expected a positive duration like "30s", got "0s"',
    ),
    (
        "labels-ttl",
        "",
        '[labels]\nttl = "7 days"\n',
        'labels.ttl: expected a duration like "15m", got "7 days"',
    ),
    # daemon
    (
        "listen",
        "",
        '[daemon]\nhttp_listen = "9308"\n',
        'daemon.http_listen: expected host:port like "127.0.0.1:9308", got "9308"',
    ),
    (
        "public-url",
        "",
        '[daemon]\npublic_url = "driftwarden.local"\n',
        'daemon.public_url: expected an http:// or https:// URL, got "driftwarden.local"',
    ),
    # kafka
    (
        "bootstrap-entry",
        "",
        '[kafka]\nbootstrap_servers = "a:9092,b"\n',
        'kafka.bootstrap_servers[1]: expected host:port like "localhost:9092", got "b"',
    ),
    (
        "bootstrap-empty",
        "",
        "[kafka]\nbootstrap_servers = []\n",
        "kafka.bootstrap_servers: expected at least 1 entry, got none",
    ),
    (
        "sasl-needs-mechanism",
        "",
        '[kafka]\nsecurity_protocol = "SASL_SSL"\n',
        'kafka.sasl_mechanism: required when security_protocol is "SASL_SSL"; expected one of "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"',
    ),
    (
        "sasl-without-sasl-protocol",
        "",
        '[kafka]\nsasl_mechanism = "PLAIN"\n',
        'kafka.sasl_mechanism: expected no SASL mechanism with security_protocol "PLAINTEXT" (use "SASL_PLAINTEXT" or "SASL_SSL"), got "PLAIN"',
    ),
    (
        "sasl-needs-username",
        "",
        '[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "PLAIN"\n',
        'kafka.sasl_username: required with sasl_mechanism "PLAIN"',
    ),
    (
        "sasl-needs-password",
        "",
        '[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "PLAIN"\nsasl_username = "u"\n',
        'kafka.sasl_password_env: required with sasl_mechanism "PLAIN" (or sasl_password_file)',
    ),
    (
        "heartbeat",
        "",
        '[kafka]\nsession_timeout = "6s"\nheartbeat_interval = "6s"\n',
        'kafka.heartbeat_interval: expected less than session_timeout ("6s"), got "6s"',
    ),
    # models
    (
        "model-name",
        'name = "churn model"',
        "",
        "models[0].name: expected letters, digits, '_', '-' or '.', got \"churn model\"",
    ),
    (
        "reference-suffix",
        'reference = "ref.json"',
        "",
        'models[0].reference: expected a .csv or .parquet file, got "ref.json"',
    ),
    (
        "prediction-is-feature",
        'prediction = "age"',
        "",
        'models[0].prediction: expected a column distinct from the features, got "age"',
    ),
    (
        "drift-column-unknown",
        "",
        "[models.drift.columns.agee]\nthreshold = 0.2\n",
        'models[0].drift.columns.agee: unknown column "agee"; expected a feature or the prediction: age, plan, prediction',
    ),
    # windows
    (
        "count-needs-size",
        "",
        '[models.window]\nby = "count"\n',
        "models[0].window.size: required for count windows; expected a number of rows like 1000",
    ),
    (
        "count-size-rows",
        "",
        '[models.window]\nby = "count"\nsize = "15m"\n',
        'models[0].window.size: expected a number of rows (a positive integer) for count windows, got "15m"',
    ),
    (
        "window-size-zero",
        "",
        '[models.window]\nsize = "0m"\n',
        'models[0].window.size: expected a positive duration like "15m", got "0m"',
    ),
    (
        "tumbling-with-slide",
        "",
        '[models.window]\nsize = "15m"\nslide = "5m"\n',
        'models[0].window.slide: expected no slide for a tumbling window (set type = "sliding"), got "5m"',
    ),
    (
        "sliding-needs-slide",
        "",
        '[models.window]\ntype = "sliding"\n',
        'models[0].window.slide: required for a sliding window, e.g. slide = "5m"',
    ),
    (
        "slide-exceeds-size",
        "",
        '[models.window]\ntype = "sliding"\nsize = "10m"\nslide = "15m"\n',
        'models[0].window.slide: expected at most size ("10m"), got "15m"',
    ),
    (
        "slide-divides-size",
        "",
        '[models.window]\ntype = "sliding"\nby = "count"\nsize = 1000\nslide = 300\n',
        "models[0].window.slide: expected a whole divisor of size (1000), got 300",
    ),
    # rules
    (
        "rule-threshold",
        "",
        '[[rules]]\nname = "r"\nmetric = "drift_share"\n',
        'rules[0].threshold: required key is missing; expected the number "drift_share" is compared with',
    ),
    (
        "rule-name-missing",
        "",
        '[[rules]]\nmetric = "drift_share"\nthreshold = 0.3\n',
        "rules[0].name: required key is missing",
    ),
    ("rule-for", "", RULE + "for = 0\n", "rules[0].for: expected a number >= 1, got 0"),
    (
        "rule-severity",
        "",
        RULE + 'severity = "page"\n',
        'rules[0].severity: expected one of "warning", "critical", got "page"',
    ),
    (
        "no-data-needs-for",
        "",
        '[[rules]]\nname = "r"\nmetric = "no_data"\n',
        'rules[0].no_data_for: required for metric "no_data"; expected a duration like "30m"',
    ),
    (
        "no-data-for-other-metric",
        "",
        RULE + 'no_data_for = "30m"\n',
        'rules[0].no_data_for: expected no no_data_for unless metric = "no_data", got "30m" with metric "drift_share"',
    ),
    (
        "rule-model",
        "",
        RULE + 'model = "churm"\n',
        'rules[0].model: unknown model "churm"; expected one of: churn',
    ),
    (
        "rule-column",
        "",
        RULE.replace('"drift_share"', '"drift_score"') + 'column = "agee"\n',
        'rules[0].column: unknown column "agee"; expected one of: age, plan, prediction',
    ),
    # rules that could never fire: their figures never have that column, segment or
    # reference figure (each was accepted)
    (
        "rule-column-on-a-window-figure",
        "",
        RULE + 'column = "age"\n',
        'rules[0].column: "drift_share" is a figure of the whole window, stored without a column;'
        ' expected no column, got "age"',
    ),
    (
        "rule-no-column-on-a-column-figure",
        "",
        RULE.replace('"drift_share"', '"missing_share"'),
        'rules[0].column: required for "missing_share", a figure of each column; expected a column'
        ' name or "*" (any column)',
    ),
    (
        "rule-segment-without-segments",
        "",
        RULE + 'segment = "region=eu"\n',
        'rules[0].segment: model "churn" has no segments ([models] segments), so no window has'
        ' segment "region=eu"',
    ),
    (
        "rule-segment-unknown-key",
        'segments = ["plan"]',
        RULE + 'segment = "region=eu"\n',
        'rules[0].segment: expected "*" or KEY=VALUE with KEY one of: plan; got "region=eu"',
    ),
    (
        "rule-relative-without-a-reference-figure",
        "",
        RULE + "relative = true\n",
        'rules[0].relative: the reference has no "drift_share" of its own to compare with'
        " (relative thresholds apply to row_count, missing_share and performance figures)",
    ),
    (
        "rule-notifier-none",
        "",
        RULE + 'notifiers = ["slack"]\n',
        'rules[0].notifiers[0]: unknown notifier "slack"; expected one of: (none configured)',
    ),
    (
        "rule-notifier",
        "",
        RULE + 'notifiers = ["h", "slak"]\n' + HOOK,
        'rules[0].notifiers[1]: unknown notifier "slak"; expected one of: h',
    ),
    ("rule-unique", "", RULE + RULE, 'rules[1].name: expected a unique rule name, got "r" again'),
    # notifiers
    (
        "notifier-type-missing",
        "",
        '[notifiers.s]\nchannel = "#c"\n',
        'notifiers.s.type: required key is missing; expected "slack" or "webhook"',
    ),
    (
        "notifier-type",
        "",
        '[notifiers.s]\ntype = "email"\n',
        'notifiers.s.type: expected "slack" or "webhook", got "email"',
    ),
    (
        "slack-neither",
        "",
        SLACK + 'channel = "#c"\n',
        "notifiers.s: expected either token_env/token_file (with channel) or webhook_url_env/webhook_url_file, got neither",
    ),
    (
        "slack-both",
        "",
        SLACK + 'token_env = "T"\nwebhook_url_env = "U"\nchannel = "#c"\n',
        "notifiers.s: expected either token_env/token_file (with channel) or webhook_url_env/webhook_url_file, got both",
    ),
    (
        "slack-channel",
        "",
        SLACK + 'token_env = "T"\n',
        'notifiers.s.channel: required with a bot token, e.g. channel = "#ml-alerts"',
    ),
    (
        "slack-base-url",
        "",
        SLACK + 'webhook_url_env = "U"\nbase_url = "localhost:1234"\n',
        'notifiers.s.base_url: expected an http:// or https:// URL, got "localhost:1234"',
    ),
    (
        "webhook-url",
        "",
        '[notifiers.h]\ntype = "webhook"\nurl = "example.com/hook"\n',
        'notifiers.h.url: expected an http:// or https:// URL, got "example.com/hook"',
    ),
    (
        "webhook-url-missing",
        "",
        '[notifiers.h]\ntype = "webhook"\n',
        "notifiers.h.url: required key is missing",
    ),
    (
        "webhook-kind",
        "",
        HOOK + 'kind = "page"\n',
        'notifiers.h.kind: expected one of "alert", "retrain", got "page"',
    ),
    (
        "retrain-unsigned",
        "",
        HOOK + 'kind = "retrain"\n',
        'notifiers.h.secret_env: required for kind = "retrain" (retraining webhooks are signed); set secret_env or secret_file',
    ),
    (
        "retry-backoff",
        "",
        HOOK + 'backoff = "1m"\nmax_backoff = "30s"\n',
        'notifiers.h.max_backoff: expected at least backoff ("1m"), got "30s"',
    ),
    (
        "retry-max-backoff",
        "",
        HOOK + 'max_backoff = "8d"\n',
        'notifiers.h.max_backoff: expected at most "7d", got "8d"',
    ),
    (
        "retry-attempts",
        "",
        HOOK + "max_attempts = 0\n",
        "notifiers.h.max_attempts: expected a number >= 1, got 0",
    ),
    (
        "cooldown",
        "",
        HOOK + 'cooldown = "0s"\n',
        'notifiers.h.cooldown: expected a positive duration like "30s", got "0s"',
    ),
    (
        "storage-url-scheme",
        "",
        '[storage]\nurl = "mysql://db/x"\n',
        'storage.url: expected a URL like "postgresql://user@host:5432/db", got "mysql://db/x"',
    ),
    # a bad URL is echoed without its user and password, whatever is wrong with it
    (
        "storage-url-scheme-userinfo",
        "",
        '[storage]\nurl = "pg://u:hunter2@h/db"\n',
        'storage.url: expected a URL like "postgresql://user@host:5432/db", got "pg://…@h/db"',
    ),
    (
        "storage-url-no-scheme-userinfo",
        "",
        '[storage]\nurl = "u:hunter2/x@db.example:5432/db"\n',
        'storage.url: expected a URL like "postgresql://user@host:5432/db", got "…@db.example:5432/db"',
    ),
    (
        "storage-url-space-userinfo",
        "",
        '[storage]\nurl = "postgresql://me:hunter 2@db/x"\n',
        'storage.url: expected a URL like "postgresql://user@host:5432/db", got "postgresql://…@db/x"',
    ),
    (
        "storage-url-scheme-password-param",
        "",
        '[storage]\nurl = "postgres:/db/x?sslmode=require&password=hunter2"\n',
        'storage.url: expected a URL like "postgresql://user@host:5432/db", got'
        ' "postgres:/db/x?sslmode=require&password=…"',
    ),
    (
        "webhook-url-userinfo",
        "",
        '[notifiers.h]\ntype = "webhook"\nurl = "htps://bot:hunter2@hooks.example/x"\n',
        'notifiers.h.url: expected an http:// or https:// URL, got "htps://…@hooks.example/x"',
    ),
    (
        "storage-url-password",
        "",
        '[storage]\nurl = "postgresql://me:hunter2@db/x"\n',
        "storage.url: a password must not be written in the file (not shown); use"
        " storage.password_env or storage.password_file",
    ),
    (
        "storage-url-password-param",
        "",
        '[storage]\nurl = "postgresql://me@db/x?sslmode=require&password=hunter2"\n',
        "storage.url: a password must not be written in the file (not shown); use"
        " storage.password_env or storage.password_file",
    ),
    (
        "storage-password-literal",
        "",
        '[storage]\nurl = "postgresql://me@db/x"\npassword = "hunter2"\n',
        "storage.password: unknown key; secrets are never literal: use password_env or password_file",
    ),
    (
        "storage-password-without-url",
        "",
        '[storage]\npassword_env = "PW"\n',
        "storage.password_env: expected only with storage.url (SQLite has no password)",
    ),
    (
        "storage-pool",
        "",
        '[storage]\nurl = "postgresql://me@db/x"\npool_size = 1\n',
        "storage.pool_size: expected a number >= 2, got 1",
    ),
    # keys that were accepted and changed nothing
    (
        "count-window-lateness",
        'window = { by = "count", size = 100, lateness = "5m" }',
        "",
        'models[0].window.lateness: expected only with by = "time" (a count window closes at its row count'
        ' and has neither), got "5m"',
    ),
    (
        "count-window-idle-timeout",
        'window = { by = "count", size = 100, idle_timeout = "1m" }',
        "",
        'models[0].window.idle_timeout: expected only with by = "time" (a count window closes at its row count'
        ' and has neither), got "1m"',
    ),
    (
        "prediction-settings-without-prediction-drift",
        'drift = { prediction = false, columns = { prediction = { threshold = 0.2 } } }',
        "",
        "models[0].drift.columns.prediction: expected no settings for the prediction with"
        " drift.prediction = false (its drift is not judged)",
    ),
    (
        "features-field-of-a-flat-message",
        'layout = "flat"\nfields = { features = "f" }',
        "",
        'models[0].fields.features: expected only with layout = "nested" (flat messages hold the'
        ' features at the top level), got "f"',
    ),
    (
        "cooldown-on-alert-webhooks",
        "",
        HOOK + 'cooldown = "6h"\n',
        'notifiers.h.cooldown: expected only with kind = "retrain" (alert notifications are grouped and'
        " repeated by [alerting] and each rule's repeat_interval), got \"6h\"",
    ),
    (
        "pool-size-on-sqlite",
        "",
        "[storage]\npool_size = 4\n",
        "storage.pool_size: expected only with storage.url (a PostgreSQL pool; the SQLite store has no pool), got 4",
    ),
    (
        "sqlite-synchronous-on-postgresql",
        "",
        '[daemon]\nsqlite_synchronous = "NORMAL"\n[storage]\nurl = "postgresql://me@db/x"\n',
        'daemon.sqlite_synchronous: expected only without storage.url (the SQLite store), got "NORMAL"',
    ),
    # durations that overflowed a date later (a traceback, or every prune failing)
    (
        "duration-too-long",
        "",
        '[kafka]\ncommit_interval = "99999999d"\n',
        'kafka.commit_interval: expected a duration of at most 100 years ("36500d"), got "99999999d"',
    ),
    (
        "retention-too-long",
        "",
        '[retention]\nwindows = "99999999d"\n',
        'retention.windows: expected at most 100 years ("36500d"), or "forever", got "99999999d"',
    ),
    # addresses that failed only at start or at the first request
    (
        "listen-not-an-address",
        "",
        '[daemon]\nhttp_listen = "999.1.1.1:9308"\n',
        'daemon.http_listen: expected host:port like "127.0.0.1:9308", got "999.1.1.1:9308"',
    ),
    (
        "webhook-url-port",
        "",
        '[notifiers.h]\ntype = "webhook"\nurl = "https://example.com:99999/hook"\n',
        'notifiers.h.url: expected an http:// or https:// URL, got "https://example.com:99999/hook"',
    ),
    (
        "storage-url-libpq-refuses",
        "",
        '[storage]\nurl = "postgresql://me@db/x?foo=bar"\n',
        'storage.url: expected a URL like "postgresql://user@host:5432/db", got "postgresql://…@db/x?foo=bar"',
    ),
    # keys that were accepted and changed nothing (an audit of every key, 2026-11-29)
    (
        "label-without-performance",
        'label = "churned"',
        "",
        "models[0].label: applies only with performance.enabled = true (the label join reads it)",
    ),
    (
        "class-of-interest-without-performance",
        'class_of_interest = "yes"',
        "",
        "models[0].class_of_interest: applies only with performance.enabled = true (the label join reads it)",
    ),
    (
        "label-field-without-performance",
        "",
        '[models.fields]\nlabel = "y"\n',
        "models[0].fields.label: applies only with performance.enabled = true (the label join reads it)",
    ),
    (
        "class-of-interest-regression",
        'task = "regression"\nclass_of_interest = 1',
        "[models.performance]\nenabled = true\n",
        'models[0].class_of_interest: applies only to task = "classification"',
    ),
    (
        "segment-field-without-segments",
        "",
        '[models.fields]\nsegment = "seg"\n',
        "models[0].fields.segment: applies only with segments (it is ignored otherwise)",
    ),
    (
        "segment-cap-without-segments",
        "",
        "[models.limits]\nmax_segment_values = 3\n",
        "models[0].limits.max_segment_values: applies only with segments (it is ignored otherwise)",
    ),
    (
        "segment-key-twice",
        'segments = ["region", "region"]',
        "",
        'models[0].segments[1]: expected each segment key once, got "region" again',
    ),
    (
        "segment-key-blank",
        'segments = [" "]',
        "",
        'models[0].segments[0]: expected a segment key, got " "',
    ),
    (
        "field-name-empty",
        "",
        '[models.fields]\nversion = ""\n',
        'models[0].fields.version: expected a non-empty string, got ""',
    ),
    (
        "field-read-twice",
        "",
        '[models.fields]\nversion = "ts"\n',
        'models[0].fields.ts: expected a field of its own, got "ts", which fields.version reads too',
    ),
    (
        "count-window-min-rows-above-size",
        "",
        '[models.window]\nby = "count"\nsize = 10\nmin_rows = 30\n',
        "models[0].window.min_rows: expected at most size (10) for count windows (every window would be"
        " too small for a verdict), got 30",
    ),
    (
        "no-data-for",
        "",
        '[[rules]]\nname = "quiet"\nmetric = "no_data"\nno_data_for = "30m"\nfor = 5\n',
        'rules[0].for: expected none with metric "no_data" (it fires once the model has sent nothing for'
        " no_data_for, and resolves at its next event)",
    ),
    (
        "no-data-segment",
        "",
        '[[rules]]\nname = "quiet"\nmetric = "no_data"\nno_data_for = "30m"\nsegment = "region=eu"\n',
        'rules[0].segment: expected none with metric "no_data" (it fires once the model has sent nothing for'
        " no_data_for, and resolves at its next event)",
    ),
    (
        "rule-for-underscore",
        "",
        '[[rules]]\nname = "r"\nmetric = "drift_share"\nthreshold = 0.3\nfor_ = 3\n',
        'rules[0].for_: unknown key; did you mean "for"?',
    ),
    (
        "rule-name-blank",
        "",
        '[[rules]]\nname = " "\nmetric = "drift_share"\nthreshold = 0.3\n',
        'rules[0].name: expected a name, got " "',
    ),
    (
        "rule-label-name",
        "",
        RULE + 'labels = { "" = "x" }\n',
        'rules[0].labels: expected a label name (a letter or \'_\', then letters, digits or \'_\'), got ""',
    ),
    (
        "cusum-warmup-nothing-learned",
        "",
        '[[rules]]\nname = "r"\nmetric = "drift_share"\n'
        'detector = { type = "cusum", target = 0.1, sigma = 0.05, warmup = 10 }\n',
        "rules[0].detector.cusum.warmup: applies only when target or sigma is learned (both are given, so"
        " nothing is)",
    ),
    (
        "oauth-ttl-without-command",
        "",
        '[kafka]\nsasl_oauth_token_ttl = "1h"\n',
        'kafka.sasl_oauth_token_ttl: expected only with sasl_mechanism "OAUTHBEARER" and'
        " sasl_oauth_token_command (a token file is re-read whenever it changes; it is ignored otherwise)",
    ),
    (
        "dead-letter-topic-is-labels-topic",
        "[models.performance]\nenabled = true",
        '[kafka]\ndead_letter_topic = "labels"\n',
        "kafka.dead_letter_topic: expected a topic other than labels_topic, which a model with performance"
        ' enabled reads (bad messages would be read back), got "labels"',
    ),
    (
        "topic-name",
        "",
        '[kafka]\npredictions_topic = "a b/c"\n',
        "kafka.predictions_topic: expected a Kafka topic name (at most 249 letters, digits, '.', '_' or '-'),"
        ' got "a b/c"',
    ),
    (
        "group-id-blank",
        "",
        '[kafka]\ngroup_id = " "\n',
        'kafka.group_id: expected a name, got " "',
    ),
    (
        "confidence-without-bootstrap",
        "[models.performance]\nenabled = true",
        "[labels]\nbootstrap = 0\nconfidence = 0.9\n",
        "labels.confidence: applies only with bootstrap > 0 (bootstrap = 0 computes no intervals)",
    ),
    (
        "sample-windows-without-rows",
        "",
        "[reports]\nsample_rows = 0\nsample_windows = 500\n",
        "reports.sample_windows: applies only with sample_rows > 0 (sample_rows = 0 keeps no samples)",
    ),
    (
        "statement-timeout-sqlite",
        "",
        '[storage]\nstatement_timeout = "1ms"\n',
        'storage.statement_timeout: expected only with storage.url (PostgreSQL\'s own statement timeout;'
        ' SQLite has none), got "1ms"',
    ),
    (
        "calibrated-reference-min-rows",
        "reference_min_rows = 30",
        '[models.drift]\nthresholds = "calibrated"\n',
        'models[0].reference_min_rows: expected at least 100 with drift.thresholds = "calibrated" (a smaller'
        " reference is refused: its bootstrap is too coarse), got 30",
    ),
    (
        "group-by-typo",
        "",
        '[alerting]\ngroup_by = ["modle"]\n',
        'alerting.group_by[0]: unknown alert label "modle"; did you mean "model"?',
    ),
]


@pytest.mark.parametrize(
    ("model", "rest", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_file_gives_exact_message(tmp_path: Path, model: str, rest: str, message: str) -> None:
    assert problems(tmp_path, rest, model) == [message]


def test_case_ids_are_unique() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


def test_models_missing(tmp_path: Path) -> None:
    path = write(tmp_path, '[daemon]\nlog_level = "info"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.problems == [
        "models: required key is missing; expected at least one [[models]] table"
    ]


def test_models_empty(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, "models = []\n"))
    assert exc.value.problems == ["models: expected at least one [[models]] table, got none"]


def test_duplicate_features(tmp_path: Path) -> None:
    text = MODEL.format(model="").replace('categorical = ["plan"]', 'categorical = ["plan", "age"]')
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    assert exc.value.problems == [
        'models[0].features: expected each feature once, got "age" more than once'
    ]


def test_no_features(tmp_path: Path) -> None:
    text = (
        MODEL.format(model="")
        .replace('numerical = ["age"]', "")
        .replace('categorical = ["plan"]', "")
    )
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    assert exc.value.problems == [
        "models[0].features: expected at least one numerical or categorical feature, got none"
    ]


def test_duplicate_model_names(tmp_path: Path) -> None:
    assert problems(tmp_path, MODEL.format(model="")) == [
        'models[1].name: expected a unique model name, got "churn" again'
    ]


@pytest.mark.parametrize("name", [".", "..", "..."])
def test_model_names_a_url_path_or_file_name_reads_as_a_folder_are_refused(tmp_path: Path, name: str) -> None:
    """"." and ".." passed the name check (letters, digits, '_', '-', '.'): with "..", clients
    turn /api/v1/models/../windows into /api/v1/windows and uploads land in the state
    directory itself. Names with a dot and something else stay valid."""
    assert problems(tmp_path, model=f'name = "{name}"') == [
        "models[0].name: expected a name with a letter, digit, '_' or '-' (a URL path or file name"
        ' reads "." and ".." as a folder: the model\'s URLs and reference uploads would point'
        f' elsewhere), got "{name}"'
    ]
    assert [m.name for m in load(tmp_path, model='name = ".churn.v2."').models] == [".churn.v2."]


def test_model_names_differing_only_in_case_are_refused(tmp_path: Path) -> None:
    """Reference uploads go to state_dir/references/<model>: on a case-insensitive file
    system (a macOS bind mount) "Churn" and "churn" would share one folder."""
    assert problems(tmp_path, MODEL.format(model="").replace('name = "churn"', 'name = "Churn"')) == [
        'models[1].name: expected a name unique regardless of case, got "Churn" next to "churn"'
        " (a case-insensitive file system gives both one reference upload folder)"
    ]


def test_reference_not_found(tmp_path: Path) -> None:
    assert problems(tmp_path, model='reference = "data/missing.csv"') == [
        f'models[0].reference: expected an existing file, got "data/missing.csv" (not found in {tmp_path.resolve()})'
    ]


def test_reference_that_is_a_folder_is_not_called_missing(tmp_path: Path) -> None:
    # it said "(not found in …)" about a folder that is there
    (tmp_path / "data" / "churn.csv").mkdir(parents=True)
    assert problems(tmp_path, model='reference = "data/churn.csv"') == [
        f'models[0].reference: expected an existing file, got "data/churn.csv" (a folder in'
        f' {tmp_path.resolve()})'
    ]


def test_tls_file_not_found(tmp_path: Path) -> None:
    assert problems(tmp_path, '[kafka]\nsecurity_protocol = "SSL"\nssl_cafile = "ca.pem"\n') == [
        f'kafka.ssl_cafile: expected an existing file, got "ca.pem" (not found in {tmp_path.resolve()})'
    ]


def test_env_secret_not_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DW_TEST_UNSET", raising=False)
    assert problems(tmp_path, SLACK + 'token_env = "DW_TEST_UNSET"\nchannel = "#c"\n') == [
        'notifiers.s.token_env: environment variable "DW_TEST_UNSET" is not set'
    ]


def test_env_secret_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DW_TEST_EMPTY", "")
    assert problems(tmp_path, '[daemon]\napi_token_env = "DW_TEST_EMPTY"\n') == [
        'daemon.api_token_env: environment variable "DW_TEST_EMPTY" is empty'
    ]


def test_file_secret_missing(tmp_path: Path) -> None:
    assert problems(tmp_path, HOOK + 'secret_file = "secrets/hook"\n') == [
        'notifiers.h.secret_file: expected a readable file, got "secrets/hook" (No such file or directory)'
    ]


def test_file_secret_empty(tmp_path: Path) -> None:
    (tmp_path / "hook").write_text("\n")
    assert problems(tmp_path, HOOK + 'secret_file = "hook"\n') == [
        'notifiers.h.secret_file: expected a file holding the secret, got "hook" (empty)'
    ]


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[daemon]\nlog_level = \n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.problems == ["TOML syntax: Invalid value (at line 2, column 13)"]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes("# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.problems == ["expected a UTF-8 text file, got undecodable bytes"]


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.problems == [f"cannot read {path}: No such file or directory"]


needs_registry = pytest.mark.skipif(
    not known_drift_methods(), reason="detectors drift registry unavailable"
)


@needs_registry
def test_unknown_drift_method(tmp_path: Path) -> None:
    names = ", ".join(sorted(known_drift_methods()))
    assert problems(tmp_path, '[models.drift]\nmethod = "kolmogorov"\n') == [
        f'models[0].drift.method: expected "auto" or one of: {names}, got "kolmogorov"'
    ]
    assert problems(tmp_path, '[models.drift.columns.age]\nmethod = "kolmogorov"\n') == [
        f'models[0].drift.columns.age.method: expected "auto" or one of: {names}, got "kolmogorov"'
    ]


@needs_registry
def test_drift_method_for_wrong_column_kind(tmp_path: Path) -> None:
    assert problems(tmp_path, '[models.drift.columns.plan]\nmethod = "ks"\n') == [
        'models[0].drift.columns.plan.method: expected a test for categorical columns, got "ks" (accepts numerical)'
    ]
    assert problems(tmp_path, '[models.drift]\nmethod = "ks"\n') == [
        'models[0].drift.method: expected a test for every feature kind, got "ks" which does not accept'
        ' categorical column "plan" (override it in [models.drift.columns.plan])'
    ]


@needs_registry
def test_drift_method_alias_and_override_accepted(tmp_path: Path) -> None:
    cfg = load(
        tmp_path, '[models.drift]\nmethod = "ks"\n[models.drift.columns.plan]\nmethod = "chi2"\n'
    )
    assert cfg.models[0].drift.columns["plan"].method == "chi2"


def test_all_problems_of_a_section_are_reported_together(tmp_path: Path) -> None:
    assert problems(tmp_path, '[daemon]\nlog_level = "loud"\nlog_format = "xml"\n') == [
        'daemon.log_level: expected one of "debug", "info", "warning", "error", got "loud"',
        'daemon.log_format: expected one of "text", "json", got "xml"',
    ]


def test_error_text_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, MODEL.format(model="") + '[daemon]\nlog_format = "xml"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == (
        f'invalid config {path}:\n  daemon.log_format: expected one of "text", "json", got "xml"'
    )


# --------------------------------------------------------------------------- good files


def test_minimal_config_has_documented_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    d, k = cfg.daemon, cfg.kafka
    assert d.state_dir == Path("/var/lib/driftwarden")  # absolute: the unit's and the image's
    assert (d.http_listen, d.log_level, d.log_format) == ("127.0.0.1:9308", "info", "text")
    assert d.base_url == "http://127.0.0.1:9308"
    assert (d.tick_interval, d.shutdown_timeout) == (timedelta(seconds=5), timedelta(seconds=30))
    assert (d.sqlite_synchronous, d.max_payload_bytes, d.api_token_env) == ("FULL", 65536, None)
    assert k.bootstrap_servers == ["localhost:9092"]
    assert (k.group_id, k.predictions_topic, k.labels_topic, k.dead_letter_topic) == (
        "driftwarden",
        "predictions",
        "labels",
        None,
    )
    assert (k.security_protocol, k.auto_offset_reset) == ("PLAINTEXT", "earliest")
    assert (k.session_timeout, k.heartbeat_interval) == (
        timedelta(seconds=10),
        timedelta(seconds=3),
    )
    assert (k.max_poll_records, k.max_message_bytes) == (10_000, 1_048_576)
    m = cfg.model("churn")
    assert m.reference == tmp_path.resolve() / "ref.csv"
    assert (m.task, m.layout, m.prediction, m.label, m.reference_mode) == (
        "classification",
        "nested",
        "prediction",
        "label",
        "fixed",
    )
    assert m.feature_names == ["age", "plan"]
    w = m.window
    assert (w.type, w.by, w.size, w.slide, w.step) == (
        "tumbling",
        "time",
        timedelta(minutes=15),
        None,
        timedelta(minutes=15),
    )
    assert (w.lateness, w.min_rows, w.idle_timeout) == (
        timedelta(minutes=1),
        30,
        timedelta(seconds=30),
    )
    assert (m.drift.method, m.drift.threshold, m.drift.share, m.drift.bins) == (
        "auto",
        None,
        0.5,
        "evidently",
    )
    assert cfg.rules == [] and cfg.notifiers == {} and cfg.secrets == {}
    assert cfg.alerting.repeat_interval == timedelta(hours=4)
    assert cfg.alerting.group_by == ["model", "rule"]
    assert cfg.labels.ttl == timedelta(days=7)
    r = cfg.retention
    assert (r.windows, r.metrics, r.alerts, r.deliveries, r.dead_letters) == (
        timedelta(days=90),
        timedelta(days=90),
        timedelta(days=365),
        timedelta(days=30),
        timedelta(days=14),
    )
    assert (r.prune_interval, r.dead_letters_per_minute, r.dead_letter_payloads_per_minute) == (
        timedelta(hours=1),
        60,
        1,
    )
    with pytest.raises(KeyError):
        cfg.model("fraud")


def test_retention_durations_and_forever(tmp_path: Path) -> None:
    r = load(
        tmp_path,
        '[retention]\nwindows = "forever"\nmetrics = "12h"\ndead_letters = "90m"\n'
        'prune_interval = "5m"\ndead_letters_per_minute = 3\ndead_letter_payloads_per_minute = 0\n',
    ).retention
    assert (r.windows, r.metrics, r.dead_letters, r.prune_interval) == (
        None,
        timedelta(hours=12),
        timedelta(minutes=90),
        timedelta(minutes=5),
    )
    assert (r.dead_letters_per_minute, r.dead_letter_payloads_per_minute) == (3, 0)
    # metrics unset follows windows: windows = "7d" alone was refused (metrics' 90d is longer)
    short = load(tmp_path, '[retention]\nwindows = "7d"\n').retention
    assert (short.windows, short.metrics) == (timedelta(days=7), timedelta(days=7))
    assert load(tmp_path, '[retention]\nwindows = "forever"\n').retention.metrics is None


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    with pytest.raises(Exception):  # noqa: B017 (pydantic's ValidationError for frozen instances)
        cfg.daemon.log_level = "debug"  # type: ignore[misc]


def test_sliding_and_count_windows(tmp_path: Path) -> None:
    w = (
        load(tmp_path, '[models.window]\ntype = "sliding"\nsize = "1h"\nslide = "15m"\n')
        .models[0]
        .window
    )
    assert (w.size, w.slide, w.step) == (
        timedelta(hours=1),
        timedelta(minutes=15),
        timedelta(minutes=15),
    )
    w = load(tmp_path, '[models.window]\nby = "count"\nsize = 1000\n').models[0].window
    assert (w.size, w.step) == (1000, 1000)
    w = (
        load(
            tmp_path, '[models.window]\ntype = "sliding"\nby = "count"\nsize = 1000\nslide = 250\n'
        )
        .models[0]
        .window
    )
    assert (w.size, w.slide, w.step) == (1000, 250, 250)


def test_kafka_conveniences(tmp_path: Path) -> None:
    cfg = load(tmp_path, '[kafka]\nbootstrap_servers = "a:9092, b:9093"\nlabels_topic = ""\n')
    assert cfg.kafka.bootstrap_servers == ["a:9092", "b:9093"]
    assert cfg.kafka.labels_topic is None


def test_rule_defaults_and_wildcards(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        RULE.replace('"drift_share"', '"drift_score"')
        + 'column = "*"\nsegment = "*"\n'
        + '[[rules]]\nname = "quiet"\nmetric = "no_data"\nno_data_for = "30m"\n',
        model='segments = ["plan"]',
    )
    r, q = cfg.rules
    assert (r.op, r.for_, r.resolve_after, r.severity, r.relative, r.column) == (
        ">",
        1,
        1,
        "warning",
        False,
        "*",
    )
    assert (q.threshold, q.no_data_for) == (0.0, timedelta(minutes=30))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("1.5h", timedelta(minutes=90)),
        (" 1h 30m ", timedelta(minutes=90)),
    ],
)
def test_durations_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "15", "15M", "fast", "1h30", "h1", "-5m", "1h x"])
def test_bad_durations_refused(text: str) -> None:
    with pytest.raises(
        ValueError, match=re.escape(f'expected a duration like "15m", got "{text}"')
    ):
        parse_duration(text)


@pytest.mark.parametrize("text", ["500ms", "30s", "15m", "1h30m", "2d", "1d2h3m4s5ms"])
def test_format_duration_round_trips(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


def test_store_secrets_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``secrets=STORE_SECRETS`` (the command line's read commands): the store's password
    is resolved and required, the others are neither read nor required, and asking for
    one is an error rather than None (which would pass for "not configured")."""
    monkeypatch.delenv("DW_TEST_UNSET", raising=False)
    monkeypatch.setenv("DW_TEST_PG", "pg-secret")
    rest = (
        '[daemon]\napi_token_env = "DW_TEST_UNSET"\n'
        '[storage]\nurl = "postgresql://me@db/x"\npassword_env = "DW_TEST_PG"\n'
        + SLACK + 'token_file = "missing-token"\nchannel = "#ml"\n'
        + HOOK + 'kind = "retrain"\nsecret_env = "DW_TEST_UNSET"\n'
    )
    path = write(tmp_path, model_text() + rest)
    cfg = load_config(path, secrets=cfgmod.STORE_SECRETS)
    assert cfg.secret("storage.password") == "pg-secret"
    assert set(cfg.secrets) == {"storage.password"}
    for unread in ("daemon.api_token", "notifiers.s.token", "notifiers.h.secret"):
        with pytest.raises(LookupError, match=f"^{re.escape(unread)}: not resolved"):
            cfg.secret(unread)
    assert cfg.secret("notifiers.s.webhook_url") is None  # not configured at all
    # the keys themselves are still validated
    bad = rest.replace('secret_env = "DW_TEST_UNSET"', 'secret_env = "whsec_literal value"')
    (tmp_path / "bad").mkdir()
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path / "bad", model_text() + bad), secrets=cfgmod.STORE_SECRETS)
    assert [p.split(":")[0] for p in exc.value.problems] == ["notifiers.h.secret_env"]
    # the store's password stays required; every secret is, by default (run, check)
    monkeypatch.delenv("DW_TEST_PG")
    with pytest.raises(ConfigError) as exc:
        load_config(path, secrets=cfgmod.STORE_SECRETS)
    assert exc.value.problems == ['storage.password_env: environment variable "DW_TEST_PG" is not set']
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.problems == [
        'daemon.api_token_env: environment variable "DW_TEST_UNSET" is not set',
        'storage.password_env: environment variable "DW_TEST_PG" is not set',
        'notifiers.s.token_file: expected a readable file, got "missing-token" (No such file or directory)',
        'notifiers.h.secret_env: environment variable "DW_TEST_UNSET" is not set',
    ]


def test_secret_files_every_user_can_read_are_warned_about(tmp_path: Path) -> None:
    """A secret file others can read (mode 0644, as a container may mount it) is loaded
    with a warning naming it and the fix; group-readable (0640) is fine."""
    folder = tmp_path / "secrets"
    folder.mkdir()
    modes = {"api": 0o644, "pg": 0o604, "key.pem": 0o644, "slack": 0o640, "hook": 0o600, "sasl": 0o400}
    import trustme  # noqa: PLC0415 - a test-only package

    client = trustme.CA().issue_cert("driftwarden-client")  # the key is loaded with its certificate
    client.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    contents = {"hook": HOOK_SECRET, "key.pem": client.private_key_pem.bytes().decode().strip()}
    for name, mode in modes.items():
        (folder / name).write_text(contents.get(name, "s3cret") + "\n")
        (folder / name).chmod(mode)
    rest = (
        '[daemon]\napi_token_file = "secrets/api"\n'
        '[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "PLAIN"\nsasl_username = "u"\n'
        'sasl_password_file = "secrets/sasl"\nssl_certfile = "secrets/cert.pem"\nssl_keyfile = "secrets/key.pem"\n'
        '[storage]\nurl = "postgresql://me@db/x"\npassword_file = "secrets/pg"\n'
        + SLACK + 'token_file = "secrets/slack"\nchannel = "#ml"\n'
        + HOOK + 'secret_file = "secrets/hook"\n'
    )
    path = write(tmp_path, model_text() + rest)
    shown = folder.resolve()

    def warning(key: str, name: str, mode: str) -> str:
        return (f"{key}: {shown / name} is readable by every user (mode {mode}); restrict it: chmod 600"
                f" {shown / name} (640 if the daemon reads it through its group)")

    cfg = load_config(path)
    assert cfg.secret("daemon.api_token") == "s3cret"
    assert cfg.warnings == (
        warning("daemon.api_token_file", "api", "0644"),
        warning("storage.password_file", "pg", "0604"),
        warning("kafka.ssl_keyfile", "key.pem", "0644"),
    )
    # a command that reads the store is told only about the file it reads
    assert load_config(path, secrets=cfgmod.STORE_SECRETS).warnings == (
        warning("storage.password_file", "pg", "0604"),
    )
    for name in ("api", "pg", "key.pem"):
        (folder / name).chmod(0o600)
    assert load_config(path).warnings == ()


def test_unusable_notifier_secrets_refused_where_read_and_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signing secret Standard Webhooks cannot use, or a Slack webhook URL that is not
    one, is a config error (status 2 for `run` and `check`), not a traceback when the
    notifier is built; the value is never echoed."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "hook").write_text("whsec_c2hvcnQ=\n")  # "short": 5 bytes
    monkeypatch.setenv("DW_TEST_HOOK", "whsec_not base64!")
    by_file = HOOK + 'kind = "retrain"\nsecret_file = "secrets/hook"\n'
    by_env = HOOK + 'secret_env = "DW_TEST_HOOK"\n'
    for rest, want in (
        (by_file, "notifiers.h.secret: webhook secret is too short: use at least 24 random bytes, e.g. whsec_"
                  " and the base64 of 32 random bytes (`openssl rand -base64 32`); read from file"),
        (by_env, "notifiers.h.secret: webhook secret must be 'whsec_' followed by base64, e.g. whsec_ and the"
                 " base64 of 32 random bytes (`openssl rand -base64 32`); read from environment variable"
                 " DW_TEST_HOOK (not shown)"),
    ):
        with pytest.raises(ConfigError) as exc:
            load(tmp_path, rest)
        (problem,) = exc.value.problems
        assert problem.startswith(want), problem
        assert "c2hvcnQ" not in problem and "not base64!" not in problem
    monkeypatch.setenv("DW_TEST_HOOK", HOOK_SECRET)
    assert load(tmp_path, by_env).secret("notifiers.h.secret") == HOOK_SECRET
    # a Slack incoming-webhook URL from a secret: checked like a url key, not quoted
    monkeypatch.setenv("DW_TEST_SLACK_URL", "hooks.slack.com/services/T0/B0/sekrit")
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, SLACK + 'webhook_url_env = "DW_TEST_SLACK_URL"\n')
    assert exc.value.problems == [
        "notifiers.s.webhook_url: expected an http:// or https:// URL (a Slack incoming webhook);"
        " read from environment variable DW_TEST_SLACK_URL (not shown)"
    ]


def test_env_and_file_secrets_resolved_and_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DW_TEST_SLACK", "xoxb-very-secret")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "hook").write_text(HOOK_SECRET + "\n")
    rest = (
        SLACK
        + 'token_env = "DW_TEST_SLACK"\nchannel = "#ml"\n'
        + HOOK
        + 'kind = "retrain"\nsecret_file = "secrets/hook"\n'
    )
    monkeypatch.chdir(tmp_path.parent)  # the file path is relative to the config, not the cwd
    cfg = load(tmp_path, rest)
    assert cfg.secret("notifiers.s.token") == "xoxb-very-secret"
    assert cfg.secret("notifiers.h.secret") == HOOK_SECRET
    assert cfg.secret("notifiers.s.webhook_url") is None
    h = cfg.notifiers["h"]
    assert (
        isinstance(h, WebhookNotifierConfig)
        and h.secret_file == tmp_path.resolve() / "secrets" / "hook"
    )
    for shown in (repr(cfg), str(cfg), repr(cfg.secrets), str(cfg.model_dump())):
        assert "very-secret" not in shown and "also-secret" not in shown
    # a config with resolved secrets and one other problem: the error does not carry them either
    with pytest.raises(ConfigError) as exc:
        load(
            tmp_path,
            rest + '[[rules]]\nname = "r"\nmetric = "drift_share"\nthreshold = 1.0\nnotifiers = ["x"]\n',
        )
    assert "very-secret" not in str(exc.value) and "also-secret" not in str(exc.value)
    assert exc.value.problems == [
        'rules[0].notifiers[0]: unknown notifier "x"; expected one of: h, s'
    ]


def test_kafka_tls_files_are_loaded_as_the_client_loads_them(tmp_path: Path) -> None:
    """A CA file without a certificate, or a client key that does not go with its
    certificate, was a connection error repeated for ever (``check``: "no answer within
    10s"); now a config problem naming the file. A key or key password without a client
    certificate is ignored by the client, so it is refused."""
    import trustme  # noqa: PLC0415 - a test-only package

    ca = trustme.CA()
    client, other = ca.issue_cert("driftwarden-client"), ca.issue_cert("someone-else")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    other.private_key_pem.write_to_path(str(tmp_path / "other.key"))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    tls = '[kafka]\nsecurity_protocol = "SSL"\n'
    files = 'ssl_cafile = "ca.pem"\nssl_certfile = "client.pem"\nssl_keyfile = "client.key"\n'
    cfg = load(tmp_path, tls + files)
    assert cfg.kafka.ssl_keyfile == tmp_path.resolve() / "client.key"
    where = tmp_path.resolve()
    assert problems(tmp_path, tls + 'ssl_cafile = "junk.pem"\n') == [
        f'kafka.ssl_cafile: no usable CA certificate in "{where / "junk.pem"}": no certificate or crl found'
    ]
    (got,) = problems(tmp_path, tls + files.replace("client.key", "other.key"))
    assert got.startswith(
        f'kafka.ssl_certfile: cannot load the client certificate "{where / "client.pem"}" with the key'
        f' "{where / "other.key"}" (and kafka.ssl_password, if set): '
    ), got
    assert problems(tmp_path, tls + 'ssl_keyfile = "client.key"\n') == [
        "kafka.ssl_keyfile: expected only with kafka.ssl_certfile (the client certificate it goes with;"
        " it is ignored otherwise)"
    ]


def test_relative_paths_resolve_against_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "etc"
    (conf / "ref").mkdir(parents=True)
    (conf / "ref" / "churn.csv").write_text("age,plan\n1,a\n")
    import trustme  # noqa: PLC0415 - a test-only package

    trustme.CA().cert_pem.write_to_path(str(conf / "ca.pem"))  # loaded as the client would
    (conf / "config.toml").write_text(
        MODEL.format(model="").replace('"ref.csv"', '"ref/churn.csv"')
        + '[daemon]\nstate_dir = "state"\n[kafka]\nssl_cafile = "ca.pem"\nsecurity_protocol = "SSL"\n'
    )
    monkeypatch.chdir(tmp_path)
    cfg = load_config("etc/config.toml")
    assert cfg.models[0].reference == conf.resolve() / "ref" / "churn.csv"
    assert cfg.daemon.state_dir == conf.resolve() / "state"
    assert cfg.kafka.ssl_cafile == conf.resolve() / "ca.pem"
    # absolute paths are kept; parse_config takes the folder explicitly
    data = tomllib.loads((conf / "config.toml").read_text())
    data["daemon"]["state_dir"] = str(tmp_path / "abs-state")
    cfg = parse_config(data, base_dir=conf)
    assert cfg.daemon.state_dir == tmp_path / "abs-state"
    assert cfg.models[0].reference == conf.resolve() / "ref" / "churn.csv"


def test_slack_base_url_gets_trailing_slash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DW_TEST_TOKEN", "xoxb-test")
    cfg = load(
        tmp_path,
        SLACK + 'token_env = "DW_TEST_TOKEN"\nchannel = "#a"\nbase_url = "http://127.0.0.1:8080/api"\n',
    )
    s = cfg.notifiers["s"]
    assert isinstance(s, SlackNotifierConfig) and s.base_url == "http://127.0.0.1:8080/api/"
    # an incoming webhook has its own URL and channel: both keys would be ignored
    monkeypatch.setenv("DW_TEST_HOOK", "https://hooks.slack.com/services/x")
    for key in ('base_url = "http://127.0.0.1:8080/api/"', 'channel = "#a"'):
        assert problems(tmp_path, SLACK + f'webhook_url_env = "DW_TEST_HOOK"\n{key}\n') == [
            f"notifiers.s.{key.split(' ')[0]}: expected only with token_env/token_file (an incoming webhook posts"
            f" to its own channel at its own URL), got {key.split(' = ')[1]}"
        ]


# --------------------------------------------------------------------------- config.example.toml


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.example.toml"
    shutil.copy(EXAMPLE, path)
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "churn.csv").write_text(
        "age,tenure_days,monthly_charges,plan,region,prediction\n42,311,70.5,pro,eu,0.87\n"
    )
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-example")
    monkeypatch.setenv("RETRAIN_WEBHOOK_SECRET", HOOK_SECRET)
    return path


def test_example_config_loads(example: Path) -> None:
    cfg = load_config(example)
    m = cfg.model("churn")
    assert m.features.numerical == ["age", "tenure_days", "monthly_charges"]
    assert m.features.categorical == ["plan", "region"]
    assert m.reference == example.parent.resolve() / "reference" / "churn.csv"
    assert [r.metric for r in cfg.rules] == ["drift_share", "prediction_drift", "no_data", "drift_share"]
    assert cfg.rules[3].detector is not None and cfg.rules[3].detector.type == "cusum"
    assert sorted(cfg.notifiers) == ["alerts", "retrain", "slack"]
    retrain = cfg.notifiers["retrain"]
    assert isinstance(retrain, WebhookNotifierConfig)
    assert (retrain.kind, retrain.cooldown) == ("retrain", timedelta(hours=24))
    assert cfg.secret("notifiers.slack.token") == "xoxb-example"
    assert cfg.secret("notifiers.retrain.secret") == HOOK_SECRET


def _models(tp: object) -> list[type[BaseModel]]:
    """Every config model class reachable from ``tp``."""
    found: list[type[BaseModel]] = []

    def walk(t: object) -> None:
        if isinstance(t, type) and issubclass(t, BaseModel):
            if t not in found:
                found.append(t)
                for f in t.model_fields.values():
                    walk(f.annotation)
            return
        for arg in typing.get_args(t):
            walk(arg)

    walk(tp)
    return found


def test_every_option_is_documented_in_the_example() -> None:
    text = EXAMPLE.read_text()
    missing = []
    for model in _models(Config):
        for name, field in model.model_fields.items():
            if name == "secrets":  # filled by the loader, not a key
                continue
            key = field.alias or name
            if not re.search(rf"(^|[\s.\[#]){re.escape(key)}(\s*=|\]|\.)", text, re.M):
                missing.append(f"{model.__name__}.{key}")
    assert missing == []


# sections of the example and the model their keys belong to
SECTIONS: dict[str, type[BaseModel]] = {
    "daemon": cfgmod.DaemonConfig,
    "kafka": cfgmod.KafkaConfig,
    "labels": cfgmod.LabelsConfig,
    "retention": cfgmod.RetentionConfig,
    "reports": cfgmod.ReportsConfig,
    "alerting": cfgmod.AlertingConfig,
    "storage": cfgmod.StorageConfig,
    "models": cfgmod.ModelConfig,
    "models.fields": cfgmod.FieldMap,
    "models.window": cfgmod.WindowConfig,
    "models.drift": cfgmod.DriftConfig,
    "rules": cfgmod.RuleConfig,
    "notifiers.slack": cfgmod.SlackNotifierConfig,
    "notifiers.alerts": cfgmod.WebhookNotifierConfig,
    "notifiers.retrain": cfgmod.WebhookNotifierConfig,
}


def test_example_comments_show_the_real_defaults() -> None:
    """A commented ``# key = value`` line for an option with a default shows that default."""
    section, checked, wrong = "", 0, []
    for line in EXAMPLE.read_text().splitlines():
        if m := re.match(r"^\[\[?([\w.]+)\]\]?", line):
            section = m.group(1)
            continue
        m = re.match(r"^# (\w+) = (.+)$", line)
        if not m or section not in SECTIONS:
            continue
        fields = {f.alias or n: f for n, f in SECTIONS[section].model_fields.items()}
        field = fields.get(m.group(1))
        assert field is not None, f"[{section}] documents unknown option {m.group(1)}"
        default = field.get_default(call_default_factory=True)
        if default in (None, {}, []):
            continue  # an example value for an option that is off by default
        value = tomllib.loads(line[2:])[m.group(1)]
        if isinstance(default, timedelta):
            value = parse_duration(value)
        elif isinstance(default, Path):
            value = Path(value)
        checked += 1
        if value != default:
            wrong.append(
                f"[{section}] {m.group(1)}: example says {value!r}, default is {default!r}"
            )
    assert wrong == []
    assert checked > 40


def test_detector_rules_reach_the_engine(tmp_path: Path) -> None:
    from monitor.service.alerting import rule_from_config

    cfg = load(
        tmp_path,
        '[[rules]]\nname = "a"\nmetric = "drift_share"\ndetector = "cusum"\n'
        '[[rules]]\nname = "b"\nmetric = "accuracy"\nop = "<"\n'
        'detector = { type = "page_hinkley", threshold = 0.2, warmup = 5 }\n',
        'label = "label"\ntask = "classification"\nperformance.enabled = true',
    )
    a, b = (rule_from_config(r) for r in cfg.rules)
    assert a.detector is not None and a.detector.kind == "cusum" and a.detector.limit == 5.0
    assert b.detector is not None and dict(b.detector.params)["min_instances"] == 5
    assert b.detector.build(b.op).mode == "down"


def test_what_the_new_checks_must_still_accept(tmp_path: Path) -> None:
    """The checks that refuse unusable keys accept what libpq and kafka-python accept: a
    PostgreSQL URL of several hosts (an empty port item is the default port), api_version
    as a list (TOML has no tuple: the consumer gets (2, 8)) or a string, and
    ssl_check_hostname = true (its default) under PLAINTEXT, as a shared template sets it."""
    from monitor.ingest.kafka_client import make_consumer

    for url in ("postgresql://me@db1,db2:5433/x", "postgresql://me@db1:5432,db2/x", "postgresql://me@db1,db2/x",
                "postgresql://me@[::1]:5432/x", "postgresql:///x?host=/var/run/postgresql"):
        assert load(tmp_path, f'[storage]\nurl = "{url}"\n').storage.url == url
    cfg = load(tmp_path, '[kafka]\nssl_check_hostname = true\nconsumer_options = { api_version = [2, 8] }\n')
    assert cfg.kafka.consumer_options == {"api_version": [2, 8]}
    assert load(tmp_path, '[kafka]\nconsumer_options = { api_version = "2.8" }\n').kafka.consumer_options == {
        "api_version": "2.8"}
    consumer = make_consumer(cfg)  # kafka-python refused a list ("api_version must be tuple")
    try:
        assert consumer.config["api_version"] == (2, 8)
    finally:
        consumer.close()


def test_a_client_may_not_hold_more_connections_than_all(tmp_path: Path) -> None:
    assert problems(tmp_path, "[daemon]\nhttp_max_connections = 10\nhttp_max_client_connections = 11\n") == [
        "daemon.http_max_client_connections: expected at most http_max_connections (10): one client could hold"
        " every connection; got 11"
    ]
    assert load(tmp_path, "[daemon]\nhttp_max_connections = 10\n").daemon.client_connection_cap == 10
    assert load(tmp_path, "").daemon.client_connection_cap == 25
    assert load(tmp_path, "[daemon]\nhttp_max_client_connections = 3\n").daemon.client_connection_cap == 3


def test_fields_model_is_one_field_for_every_model(tmp_path: Path) -> None:
    """fields.model was accepted and never read: the decoders always read "model". It is
    now read, and must be one field (it is read before a message's model is known)."""
    (tmp_path / "other.csv").write_text("age,plan,prediction\n42,pro,0.5\n")
    cfg = load(tmp_path, model='[models.fields]\nmodel = "m"')
    assert cfg.model_field == "m"
    second = '\n[[models]]\nname = "other"\nreference = "other.csv"\n[models.features]\nnumerical = ["age"]\n'
    assert problems(tmp_path, second, model='[models.fields]\nmodel = "m"') == [
        'models[1].fields.model: expected the same field as models[0] ("m"): it is read to learn a message\'s'
        ' model, before the model is known; got "model"'
    ]


def test_a_count_window_smaller_than_the_default_min_rows_gets_its_size(tmp_path: Path) -> None:
    """min_rows defaults to 30: a 10-row count window would never have had a verdict."""
    small = load(tmp_path, '[models.window]\nby = "count"\nsize = 10\n')
    assert small.models[0].window.min_rows == 10
    large = load(tmp_path, '[models.window]\nby = "count"\nsize = 1000\n')
    assert large.models[0].window.min_rows == 30


def test_a_dead_letter_topic_named_like_an_unread_labels_topic_is_fine(tmp_path: Path) -> None:
    """Without a model joining labels the labels topic is never read: no loop to refuse."""
    cfg = load(tmp_path, '[kafka]\ndead_letter_topic = "labels"\n')
    assert cfg.kafka.dead_letter_topic == "labels" and not cfg.joins_labels



def test_a_rule_on_a_segment_whose_key_holds_an_equals_sign_loads(tmp_path: Path) -> None:
    """The rule's ``KEY=VALUE`` was split at its first ``=``: a rule on a segment of the key
    ``re=gion`` was refused as an unknown key (``re``), though its windows exist."""
    cfg = load(tmp_path, RULE + 'segment = "re=gion=eu"\n', 'segments = ["re=gion"]')
    assert cfg.rules[0].segment == "re=gion=eu"
    assert problems(tmp_path, RULE + 'segment = "re=eu"\n', 'segments = ["re=gion"]') == [
        'rules[0].segment: expected "*" or KEY=VALUE with KEY one of: re=gion; got "re=eu"']
