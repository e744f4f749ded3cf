"""Every config key can be overridden from the environment: DRIFTWARDEN_<PATH>, parts joined by
"__", list indexes as numbers, notifier and column names as keys. One rule, one parser, and
every error names the variable."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from monitor.config import (
    ConfigError,
    WebhookNotifierConfig,
    env_override_names,
    load_config,
    parse_config,
)

BASE = """\
[kafka]
bootstrap_servers = ["kafka:9092"]

[[models]]
name = "churn"
reference = "ref.csv"
[models.features]
numerical = ["age"]
categorical = ["plan"]
[models.drift.columns.age]
threshold = 0.1

[[rules]]
name = "drift"
metric = "drift_share"
threshold = 0.5
notifiers = ["Slack"]

[notifiers.Slack]
type = "slack"
token_env = "DW_ENV_TEST_SLACK"
channel = "#ml"
"""


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    (tmp_path / "ref.csv").write_text("age,plan,prediction\n1,pro,0.5\n")
    (tmp_path / "other.csv").write_text("age,plan,prediction\n1,pro,0.5\n")
    path = tmp_path / "config.toml"
    path.write_text(BASE)
    return path


def load(conf: Path, **env: str) -> object:
    return load_config(conf, environ={"DW_ENV_TEST_SLACK": "xoxb-1", **env})


def problems(conf: Path, **env: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load(conf, **env)
    return exc.value.problems


def test_scalars_of_every_kind(conf: Path) -> None:
    cfg = load(
        conf,
        DRIFTWARDEN_DAEMON__HTTP_LISTEN="0.0.0.0:9308",
        DRIFTWARDEN_DAEMON__LOG_FORMAT="json",
        DRIFTWARDEN_DAEMON__STATE_DIR="state",
        DRIFTWARDEN_DAEMON__MAX_PAYLOAD_BYTES="1024",
        DRIFTWARDEN_KAFKA__SECURITY_PROTOCOL="SSL",
        DRIFTWARDEN_KAFKA__SSL_CHECK_HOSTNAME="false",
        DRIFTWARDEN_KAFKA__DEAD_LETTER_TOPIC="",
        DRIFTWARDEN_MODELS__0__WINDOW__SIZE="5m",
        DRIFTWARDEN_MODELS__0__DRIFT__SHARE="0.25",
        DRIFTWARDEN_MODELS__0__PERFORMANCE__ENABLED="true",
        DRIFTWARDEN_MODELS__0__CLASS_OF_INTEREST="yes",
        DRIFTWARDEN_RULES__0__FOR="3",
        DRIFTWARDEN_RULES__0__THRESHOLD="1",
    )
    d, k, m, r = cfg.daemon, cfg.kafka, cfg.models[0], cfg.rules[0]  # type: ignore[attr-defined]
    assert (d.http_listen, d.log_format, d.max_payload_bytes) == ("0.0.0.0:9308", "json", 1024)
    assert d.state_dir == conf.parent.resolve() / "state"  # relative: against the config's folder
    assert k.ssl_check_hostname is False and k.dead_letter_topic is None
    assert m.window.size == timedelta(minutes=5)
    assert (m.drift.share, m.class_of_interest) == (0.25, "yes")
    assert (r.for_, r.threshold) == (3, 1.0)


def test_lists_tables_and_named_entries(conf: Path) -> None:
    cfg = load(
        conf,
        DRIFTWARDEN_KAFKA__BOOTSTRAP_SERVERS="k1:9092, k2:9092",
        DRIFTWARDEN_MODELS__0__FEATURES__NUMERICAL='["age", "tenure"]',
        DRIFTWARDEN_MODELS__0__WINDOW='{type = "sliding", size = "10m", slide = "5m"}',
        DRIFTWARDEN_MODELS__0__DRIFT__COLUMNS__AGE__THRESHOLD="0.3",
        DRIFTWARDEN_KAFKA__CONSUMER_OPTIONS__FETCH_MAX_WAIT_MS="200",
        DRIFTWARDEN_NOTIFIERS__SLACK__CHANNEL="#ml-alerts",  # matches [notifiers.Slack]
        DRIFTWARDEN_RULES__0__LABELS__TEAM="ml",
    )
    k, m = cfg.kafka, cfg.models[0]  # type: ignore[attr-defined]
    assert k.bootstrap_servers == ["k1:9092", "k2:9092"]
    assert k.consumer_options == {"fetch_max_wait_ms": 200}
    assert m.features.numerical == ["age", "tenure"]
    assert (m.window.type, m.window.size, m.window.slide) == ("sliding", timedelta(minutes=10), timedelta(minutes=5))
    assert m.drift.columns["age"].threshold == 0.3
    assert cfg.notifiers["Slack"].channel == "#ml-alerts"  # type: ignore[attr-defined]
    assert cfg.rules[0].labels == {"team": "ml"}  # type: ignore[attr-defined]


def test_new_entries_from_the_environment_alone(conf: Path) -> None:
    cfg = load(
        conf,
        DRIFTWARDEN_NOTIFIERS__RETRAIN__TYPE="webhook",
        DRIFTWARDEN_NOTIFIERS__RETRAIN__URL="https://retrain.example.com/hook",
        DRIFTWARDEN_NOTIFIERS__RETRAIN__KIND="retrain",
        DRIFTWARDEN_NOTIFIERS__RETRAIN__SECRET_ENV="DW_ENV_TEST_HOOK",
        DW_ENV_TEST_HOOK="whsec_" + "ZHJpZnR3YXJkZW4tdGVzdC1zaWduaW5nLXNlY3JldC0zMmI=",
        DRIFTWARDEN_RULES__1__NAME="retrain",
        DRIFTWARDEN_RULES__1__METRIC="drift_share",
        DRIFTWARDEN_RULES__1__THRESHOLD="0.7",
        DRIFTWARDEN_RULES__1__NOTIFIERS="retrain",
        DRIFTWARDEN_MODELS__1__NAME="fraud",
        DRIFTWARDEN_MODELS__1__REFERENCE="other.csv",
        DRIFTWARDEN_MODELS__1__FEATURES__CATEGORICAL="plan",
    )
    hook = cfg.notifiers["retrain"]  # type: ignore[attr-defined]
    assert isinstance(hook, WebhookNotifierConfig) and hook.kind == "retrain"
    assert [r.name for r in cfg.rules] == ["drift", "retrain"]  # type: ignore[attr-defined]
    assert cfg.rules[1].notifiers == ["retrain"]  # type: ignore[attr-defined]
    assert [m.name for m in cfg.models] == ["churn", "fraud"]  # type: ignore[attr-defined]
    assert cfg.models[1].features.categorical == ["plan"]  # type: ignore[attr-defined]


def test_errors_name_the_variable(conf: Path) -> None:
    assert problems(conf, DRIFTWARDEN_MODELS__0__WINDOW__SIZE="fast") == [
        'models[0].window.size (from DRIFTWARDEN_MODELS__0__WINDOW__SIZE): expected a duration like "15m", got "fast"'
    ]
    assert problems(conf, DRIFTWARDEN_DAEMON__STAT_DIR="/x") == [
        "DRIFTWARDEN_DAEMON__STAT_DIR: unknown key daemon.stat_dir; did you mean DRIFTWARDEN_DAEMON__STATE_DIR?"
    ]
    assert problems(conf, DRIFTWARDEN_RULES__0__FOR="often") == [
        'DRIFTWARDEN_RULES__0__FOR: expected an integer, got "often"'
    ]
    assert problems(conf, DRIFTWARDEN_KAFKA__SSL_CHECK_HOSTNAME="yes") == [
        'DRIFTWARDEN_KAFKA__SSL_CHECK_HOSTNAME: expected true or false, got "yes"'
    ]
    assert problems(conf, DRIFTWARDEN_MODELS__3__NAME="x") == [
        "DRIFTWARDEN_MODELS__3__NAME: models[3]: the list has 1 entry; an override may add the next one"
        " (models[1]) at most"
    ]
    assert problems(conf, DRIFTWARDEN_MODELS__FIRST__NAME="x") == [
        "DRIFTWARDEN_MODELS__FIRST__NAME: models is a list: expected an index like MODELS__0, got FIRST"
    ]
    assert problems(conf, DRIFTWARDEN_DAEMON___STATE_DIR="x") == [
        "DRIFTWARDEN_DAEMON___STATE_DIR: unknown key daemon._state_dir; did you mean"
        " DRIFTWARDEN_DAEMON__STATE_DIR?"
    ]
    assert problems(conf, DRIFTWARDEN_DAEMON__="x") == [
        "DRIFTWARDEN_DAEMON__: expected DRIFTWARDEN_ then key names joined by double underscores,"
        " like DRIFTWARDEN_DAEMON__STATE_DIR"
    ]
    # a secret is never literal, from the environment either; its value is not echoed
    got = problems(conf, DRIFTWARDEN_NOTIFIERS__SLACK__TOKEN="xoxb-literal")
    assert got == [
        "DRIFTWARDEN_NOTIFIERS__SLACK__TOKEN: secrets are never literal: set"
        " DRIFTWARDEN_NOTIFIERS__SLACK__TOKEN_ENV to the name of the variable holding notifiers.Slack.token"
    ]
    # a password in a URL from the environment: refused for what it is, and not echoed
    assert problems(conf, DRIFTWARDEN_STORAGE__URL="postgresql://me:hunter2@db/x") == [
        "storage.url (from DRIFTWARDEN_STORAGE__URL): a password must not be part of the URL (not shown);"
        " name the variable holding it in storage.password_env (DRIFTWARDEN_STORAGE__PASSWORD_ENV), or use"
        " storage.password_file"
    ]
    assert problems(conf, DRIFTWARDEN_STORAGE__URL="postgresql://me@db/x?password=hunter2") == [
        "storage.url (from DRIFTWARDEN_STORAGE__URL): a password must not be part of the URL (not shown);"
        " name the variable holding it in storage.password_env (DRIFTWARDEN_STORAGE__PASSWORD_ENV), or use"
        " storage.password_file"
    ]
    assert problems(conf, DRIFTWARDEN_STORAGE__URL="pg://me:hunter2@db/x") == [
        'storage.url (from DRIFTWARDEN_STORAGE__URL): expected a URL like "postgresql://user@host:5432/db",'
        ' got "pg://…@db/x"'
    ]
    # checks after parsing (files, cross references) name it too
    assert problems(conf, DRIFTWARDEN_MODELS__0__REFERENCE="missing.csv") == [
        f'models[0].reference (from DRIFTWARDEN_MODELS__0__REFERENCE): expected an existing file, got'
        f' "missing.csv" (not found in {conf.parent.resolve()})'
    ]
    assert problems(conf, DRIFTWARDEN_RULES__0__NOTIFIERS="pager") == [
        'rules[0].notifiers[0] (from DRIFTWARDEN_RULES__0__NOTIFIERS): unknown notifier "pager"; expected one of: Slack'
    ]


def test_names_without_a_double_underscore_are_not_overrides(conf: Path) -> None:
    env = {"DRIFTWARDEN_DEMO_SLACK_TOKEN": "x", "DRIFTWARDEN_CONFIG": "/etc/x.toml", "DRIFTWARDEN_DAEMON__LOG_LEVEL": "debug"}
    assert env_override_names(env) == ["DRIFTWARDEN_DAEMON__LOG_LEVEL"]
    assert load(conf, **env).daemon.log_level == "debug"  # type: ignore[attr-defined]


def test_parse_config_without_environ_ignores_the_environment(
    conf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tomllib

    monkeypatch.setenv("DRIFTWARDEN_DAEMON__LOG_LEVEL", "debug")
    monkeypatch.setenv("DW_ENV_TEST_SLACK", "xoxb-1")
    cfg = parse_config(tomllib.loads(BASE), base_dir=conf.parent)
    assert cfg.daemon.log_level == "info"
    assert load_config(conf).daemon.log_level == "debug"  # load_config reads os.environ


def test_variables_that_look_like_overrides_but_are_not_read_are_warned_about(conf: Path) -> None:
    """One underscore where the key's parts need two, or a lower-case prefix, was ignored
    without a word; a variable a ``*_env`` key names is a secret and never warned about."""
    cfg = load(
        conf,
        DRIFTWARDEN_DAEMON_LOG_LEVEL="debug",
        driftwarden_daemon__log_format="json",
        DRIFTWARDEN_SLACK_TOKEN="xoxb-1",
        DRIFTWARDEN_CONFIG="/etc/driftwarden.toml",
    )
    assert cfg.daemon.log_level == "info" and cfg.daemon.log_format == "text"  # neither was applied
    assert cfg.warnings == (
        "DRIFTWARDEN_DAEMON_LOG_LEVEL: not read (an override separates the key's parts with __);"
        " did you mean DRIFTWARDEN_DAEMON__LOG_LEVEL?",
        "driftwarden_daemon__log_format: not read (override names are upper case); did you mean"
        " DRIFTWARDEN_DAEMON__LOG_FORMAT?",
    )
