"""deploy/Dockerfile and deploy/compose/: no Docker engine here, so the Dockerfile is read
and checked (non-root numeric USER, exec-form ENTRYPOINT/CMD/HEALTHCHECK, the state volume,
the environment overrides), and what the image runs is run outside Docker: the same
command line, the same environment, the compose file's config and overrides, against the
real broker, with the volumes mapped to temporary folders."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import pytest
import yaml

from monitor.config import DEFAULT_STATE_DIR, apply_env_overrides
from monitor.demo.broker import EmbeddedBroker, free_port
from monitor.demo.data import write_reference_csv
from monitor.demo.sinks import SlackStandIn
from tests.conftest import repo_root
from tests.deploy.dockerfile import env, healthcheck_command, options, parse
from tests.monitor.daemon_helpers import count_windows, produce, stream, wait_for
from tests.monitor.fault_helpers import with_sentinel
from tests.store_targets import PG_MODE, state_env

ROOT = repo_root()
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE_DIR = ROOT / "deploy" / "compose"
ETC = "/etc/driftwarden"


def _one(name: str) -> list[str]:
    found = [i for i in parse(DOCKERFILE) if i.name == name]
    assert len(found) >= 1, name
    return [i.args for i in found]


def test_dockerfile_runs_as_a_numeric_non_root_user() -> None:
    ins = parse(DOCKERFILE)
    users = [i.args for i in ins if i.name == "USER"]
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0)
    # the user the RUN created has that uid and owns the state dir
    run = " ".join(i.args for i in ins if i.name == "RUN")
    assert f"--uid {uid}" in run and f"-o {uid}" in run and str(DEFAULT_STATE_DIR) in run
    # nothing after USER switches back
    after = ins[[i.name for i in ins].index("USER") + 1 :]
    assert not [i for i in after if i.name == "RUN"]


def test_exec_form_entrypoint_cmd_and_healthcheck() -> None:
    ins = {i.name: i for i in parse(DOCKERFILE)}
    assert ins["ENTRYPOINT"].exec_form() == ["driftwarden"]
    assert ins["CMD"].exec_form() == ["run"]
    hc = ins["HEALTHCHECK"]
    assert healthcheck_command(hc) == ["driftwarden", "healthcheck"]
    opts = options(hc)
    assert {"interval", "timeout", "start-period", "retries"} <= set(opts)


def test_volume_environment_and_port_agree_with_the_config() -> None:
    ins = parse(DOCKERFILE)
    image_env = env(ins)
    (volume,) = [i.exec_form() for i in ins if i.name == "VOLUME"]
    assert volume == [str(DEFAULT_STATE_DIR)]
    assert image_env["DRIFTWARDEN_DAEMON__STATE_DIR"] == str(DEFAULT_STATE_DIR)
    assert image_env["DRIFTWARDEN_CONFIG"] == f"{ETC}/config.toml"
    assert image_env["DRIFTWARDEN_DAEMON__LOG_FORMAT"] == "json"
    host, port = image_env["DRIFTWARDEN_DAEMON__HTTP_LISTEN"].rsplit(":", 1)
    assert host == "0.0.0.0"  # reachable from outside the container
    assert _one("EXPOSE") == [port]
    workdirs = [i.args for i in ins if i.name == "WORKDIR"]
    assert workdirs[-1] == str(DEFAULT_STATE_DIR)
    # every override in the image is a key the config parser knows
    doc = tomllib.loads((COMPOSE_DIR / "config.toml").read_text())
    _, origins, problems = apply_env_overrides(doc, image_env)
    assert problems == []
    assert set(origins.values()) == {k for k in image_env if k.startswith("DRIFTWARDEN_") and "__" in k}


def test_the_image_gets_every_package() -> None:
    copied = {i.args.split()[0] for i in parse(DOCKERFILE) if i.name == "COPY"}
    for src in copied:
        assert (ROOT / src).exists(), src
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "state", "*.db"} <= set(ignored)


def test_compose_file_mounts_what_the_image_expects() -> None:
    compose = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    svc = compose["services"]["driftwarden"]
    build = svc["build"]
    assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    targets = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
    assert targets[f"{ETC}/config.toml"] == "./config.toml"
    assert str(DEFAULT_STATE_DIR) in targets
    assert any(p.endswith(":9308") for p in svc["ports"])
    assert svc["depends_on"] == ["kafka"]
    assert svc["environment"]["DRIFTWARDEN_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    # its overrides are valid keys for its config
    doc = tomllib.loads((COMPOSE_DIR / "config.toml").read_text())
    overrides = {k: str(v) for k, v in svc["environment"].items() if k.startswith("DRIFTWARDEN_")}
    _, _, problems = apply_env_overrides(doc, overrides)
    assert problems == []
    # the broker advertises the name the daemon is given
    kafka_env = compose["services"]["kafka"]["environment"]
    assert "INTERNAL://kafka:9092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]


# --------------------------------------------------------------------------- run it outside Docker


def _mapped(value: str, mapping: dict[str, Path]) -> str:
    for inside, outside in mapping.items():
        if value == inside or value.startswith(inside + "/"):
            return str(outside) + value[len(inside) :]
    return value


def _argv(image_argv: list[str]) -> list[str]:
    """``driftwarden ...`` as this checkout runs it."""
    assert image_argv[0] == "driftwarden"
    return [sys.executable, "-m", "monitor.cli.app", *image_argv[1:]]


@pytest.mark.broker
def test_what_the_image_runs_works(broker: EmbeddedBroker, tmp_path: Path) -> None:
    ins = parse(DOCKERFILE)
    by_name = {i.name: i for i in ins}
    etc, state = tmp_path / "etc", tmp_path / "state"
    mapping = {ETC: etc, str(DEFAULT_STATE_DIR): state}
    # the volumes: the compose example's config and a reference beside it
    etc.mkdir()
    shutil.copy(COMPOSE_DIR / "config.toml", etc / "config.toml")
    (etc / "reference").mkdir()
    write_reference_csv(str(etc / "reference" / "churn.csv"), n=3000, seed=7)

    compose = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())["services"]["driftwarden"]
    topic = f"image-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    port = free_port()
    with SlackStandIn(token="xoxb-image") as slack:
        run_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"},
            **{k: _mapped(v, mapping) for k, v in env(ins).items()},
            **{k: str(v) for k, v in compose["environment"].items() if k.startswith("DRIFTWARDEN_")},
            "SLACK_BOT_TOKEN": "xoxb-image",
            # what `docker run -e` would change here: the broker's address on this host, a
            # fresh topic, a free port, Slack's stand-in, the embedded broker's short session
            "DRIFTWARDEN_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
            "DRIFTWARDEN_KAFKA__PREDICTIONS_TOPIC": topic,
            "DRIFTWARDEN_KAFKA__GROUP_ID": f"g-{topic}",
            "DRIFTWARDEN_KAFKA__SESSION_TIMEOUT": "6s",
            "DRIFTWARDEN_KAFKA__HEARTBEAT_INTERVAL": "1s",
            "DRIFTWARDEN_DAEMON__HTTP_LISTEN": f"0.0.0.0:{port}",
            "DRIFTWARDEN_NOTIFIERS__SLACK__BASE_URL": slack.url,
            **state_env(state),  # DRIFTWARDEN_TEST_STORE=postgres: -e DRIFTWARDEN_STORAGE__URL
        }
        workdir = Path(_mapped([i.args for i in ins if i.name == "WORKDIR"][-1], mapping))
        workdir.mkdir(parents=True, exist_ok=True)
        argv = _argv([*(by_name["ENTRYPOINT"].exec_form() or []), *(by_name["CMD"].exec_form() or [])])
        health = _argv(healthcheck_command(by_name["HEALTHCHECK"]))

        def healthy() -> bool:
            return subprocess.run(health, env=run_env, capture_output=True, timeout=30).returncode == 0

        out, err = tmp_path / "stdout", tmp_path / "stderr"
        assert not healthy()  # nothing listens yet
        with out.open("wb") as fo, err.open("wb") as fe:
            proc = subprocess.Popen(argv, env=run_env, cwd=workdir, stdout=fo, stderr=fe)
        try:
            assert wait_for(healthy, timeout=60, interval=0.5), err.read_text()[-2000:]
            # 16 one-minute slices of 20 events: the first 15-minute window closes
            produce(broker.bootstrap, topic, with_sentinel(stream(windows=16, per_window=20, shift_from=99)))
            db = state / "driftwarden.db"
            assert wait_for(lambda: _windows(db) >= 1, timeout=60), out.read_text()[-2000:]
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=60)
        assert rc == 0, err.read_text()[-2000:]
        assert not healthy()

    # JSON lines on stdout, nothing on stderr
    lines = [line for line in out.read_text().splitlines() if line.strip()]
    assert lines, "no log lines"
    for line in lines:
        rec = json.loads(line)
        assert {"ts", "level", "logger", "msg"} <= set(rec)
    assert err.read_text() == ""
    # the state volume: private
    assert state.stat().st_mode & 0o777 == 0o700
    if not PG_MODE:
        assert (state / "driftwarden.db").stat().st_mode & 0o777 == 0o600


def _windows(db: Path) -> int:
    if PG_MODE:
        return count_windows(db)
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM windows WHERE segment = ''").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0
