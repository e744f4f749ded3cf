"""deploy/kubernetes/driftwarden.yaml: one replica that never overlaps another on the SQLite
file, a restricted security context matching the image's user, probes on the daemon's health
endpoints, and a config (with its environment overrides) that the parser accepts."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

from monitor.config import DEFAULT_STATE_DIR, parse_config
from tests.conftest import repo_root
from tests.deploy.dockerfile import parse

MANIFEST = repo_root() / "deploy" / "kubernetes" / "driftwarden.yaml"


def docs() -> dict[str, Any]:
    return {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text())}


def test_one_replica_recreated_non_root() -> None:
    dep = docs()["Deployment"]
    spec = dep["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    user = [i.args for i in parse(repo_root() / "deploy" / "Dockerfile") if i.name == "USER"][0].split(":")[0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == user
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["terminationGracePeriodSeconds"] > 30  # more than daemon.shutdown_timeout


def test_the_migration_runs_first_without_probes_on_the_same_files() -> None:
    """A large store's migration outlasted the startup probe, which restarted the pod and
    so the migration, for ever: an init container runs it, with no probe."""
    pod = docs()["Deployment"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (c,) = pod["containers"]
    assert init["args"] == ["migrate", "--missing-ok"] and init["image"] == c["image"]  # a first install
    assert init["env"] == c["env"]
    assert not {"startupProbe", "livenessProbe", "readinessProbe"} & set(init)
    assert init["securityContext"] == c["securityContext"]
    assert init["volumeMounts"] == c["volumeMounts"]


def test_probes_and_mounts() -> None:
    c = docs()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {p["containerPort"] for p in c["ports"]} == {9308}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert str(DEFAULT_STATE_DIR) in mounts and "/etc/driftwarden/config.toml" in mounts
    assert "/tmp" in mounts  # the root file system is read-only


def test_its_config_and_overrides_parse(tmp_path: Path) -> None:
    d = docs()
    text = d["ConfigMap"]["data"]["config.toml"]
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "churn.csv").write_text("age,tenure_days,monthly_charges,plan,region\n1,2,3,a,eu\n")
    env = {e["name"]: e.get("value", "secret") for e in d["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    cfg = parse_config(tomllib.loads(text), base_dir=tmp_path, environ=env)
    assert cfg.kafka.group_id == "driftwarden-prod"  # the override won
    assert cfg.secret("daemon.api_token") == "secret" and cfg.daemon.public_url
