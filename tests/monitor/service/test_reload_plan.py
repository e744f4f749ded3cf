"""Which config changes a reload applies and which need a restart (named, first one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from monitor.config import Config, parse_config
from monitor.service.reload import restart_only_change


def _cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **changes: Any) -> Config:
    (tmp_path / "ref.csv").write_text("a,b,prediction\n1,x,0.5\n")
    monkeypatch.setenv("DW_PLAN_SECRET", changes.pop("secret", "s1"))
    doc: dict[str, Any] = {
        "daemon": {"log_level": "info"},
        "kafka": {"group_id": "g", "sasl_mechanism": "PLAIN", "security_protocol": "SASL_SSL",
                  "sasl_username": "u", "sasl_password_env": "DW_PLAN_SECRET"},
        "models": [{"name": "m", "reference": "ref.csv",
                    "features": {"numerical": ["a"], "categorical": ["b"]}, "drift": {"share": 0.5}}],
        "rules": [{"name": "r", "metric": "drift_share", "threshold": 0.5}],
    }
    for path, value in changes.items():
        node = doc
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node[k]
        node[keys[-1]] = value
    return parse_config(doc, base_dir=tmp_path)


def test_reloadable_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _cfg(tmp_path, monkeypatch)
    assert restart_only_change(old, _cfg(tmp_path, monkeypatch, rules=[])) is None
    assert restart_only_change(old, _cfg(tmp_path, monkeypatch, models__0__drift={"share": 0.2})) is None
    assert restart_only_change(old, _cfg(tmp_path, monkeypatch, daemon__log_level="debug")) is None
    assert restart_only_change(old, _cfg(tmp_path, monkeypatch, alerting={"repeat_interval": "1h"})) is None


def test_changes_that_need_a_restart_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _cfg(tmp_path, monkeypatch)
    cases = {
        "kafka.group_id": {"kafka__group_id": "h"},
        "models[0].window.size": {"models__0__window": {"size": "5m"}},
        "models[0].features.categorical[0]": {"models__0__features": {"numerical": ["b"], "categorical": ["a"]}},
        "daemon.http_listen": {"daemon__http_listen": "0.0.0.0:9308"},
        "retention.metrics": {"retention": {"metrics": "1d"}},
        "kafka.sasl_password": {"secret": "s2"},  # the Kafka password is read once
    }
    for expected, change in cases.items():
        assert restart_only_change(old, _cfg(tmp_path, monkeypatch, **change)) == expected, change


def test_new_drift_settings_refuse_a_reference_file_changed_on_disk(tmp_path: Path) -> None:
    """New drift settings are prepared from the reference's rows, read again from its file.
    An edited file was taken in silently: windows judged against a reference never recorded.
    The reload is now refused, naming the file; the same file is reloaded fine."""
    from monitor.config import load_config
    from monitor.service.daemon import Daemon
    from monitor.service.reload import ReloadRefused, prepare_reload
    from tests.monitor.daemon_helpers import write_config

    path = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="predictions", http_port=1)
    daemon = Daemon(load_config(path), http=False)
    try:
        text = path.read_text()
        path.write_text(text.replace("[models.features]", "[models.drift]\nshare = 0.2\n[models.features]", 1))
        assert "drift settings of churn" in prepare_reload(daemon, path).summary
        ref = tmp_path / "reference.csv"
        lines = ref.read_text().splitlines()
        ref.write_text("\n".join([lines[0], *lines[1:][::-1]]) + "\n")  # the same rows, another file
        with pytest.raises(ReloadRefused, match=rf"the reference file {ref} changed on disk since it was loaded"):
            prepare_reload(daemon, path)
    finally:
        daemon.close()


def test_a_reference_swapped_while_a_reload_is_prepared_stays_in_use(tmp_path: Path) -> None:
    """New drift settings are prepared (on the consumer thread, seconds for a calibrated
    model) from the reference in use; an upload landing meanwhile (the HTTP worker thread)
    was undone by the reload, which put back the reference it had prepared: windows were
    judged against the old file while the store, the label join and the decoder had the
    new one, until a restart. The reload now prepares the new settings on the new file."""
    import pandas as pd

    from monitor.config import load_config
    from monitor.service.daemon import Daemon
    from monitor.service.reload import prepare_reload
    from tests.monitor.daemon_helpers import write_config

    path = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="predictions", http_port=1)
    daemon = Daemon(load_config(path), http=False)
    try:
        text = path.read_text()
        path.write_text(text.replace("[models.features]", "[models.drift]\nshare = 0.2\n[models.features]", 1))
        reload = prepare_reload(daemon, path)
        ref = pd.read_csv(tmp_path / "reference.csv")
        ref.iloc[: len(ref) // 2].to_csv(tmp_path / "v2.csv", index=False)
        uploaded = daemon.pipeline.swap_reference("churn", str(tmp_path / "v2.csv"), "v2")
        reload.apply(daemon)
        rt = daemon.pipeline.models["churn"]
        assert rt.prepared.reference.sha256 == uploaded.reference.sha256
        assert rt.prepared.version == "v2"
        assert rt.config.drift.share == 0.2 and rt.prepared.config.drift.share == 0.2
    finally:
        daemon.close()
