"""A reference unfit to judge windows stops ``run`` and ``check`` with exit 2, naming the file
and the column, before Kafka is touched and without a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.monitor.daemon_helpers import run_cli, write_config

HEADER = "age,tenure_days,monthly_charges,plan,region,prediction\n"


@pytest.mark.parametrize(("reference", "problem"), [
    (HEADER.replace("monthly_charges,", ""), "lacks the configured feature column(s) 'monthly_charges';"
     " its columns: 'age', 'tenure_days', 'plan', 'region', 'prediction'"),
    (HEADER + "40,300,70.5,pro,eu,0.4\n",
     "has 1 row(s); at least 50 are needed (models.reference_min_rows, by default the window's min_rows)"),
    (HEADER + "40,300,70.5,pro,eu,0.4\n" * 59 + "40,300,n/a?,pro,eu,0.4\n",
     "column 'monthly_charges' is numerical but row 60 holds 'n/a?' (1 such value(s))"),
], ids=["missing-column", "one-row", "non-numeric"])
@pytest.mark.parametrize("command", ["run", "check"])
def test_a_bad_reference_exits_2_naming_file_and_column(
    tmp_path: Path, command: str, reference: str, problem: str
) -> None:
    cfg = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="t", http_port=1)
    ref = tmp_path / "reference.csv"
    ref.write_text(reference)
    res = run_cli(command, "-c", str(cfg))
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.strip() == f"driftwarden: model churn: reference {ref.resolve()}: {problem}"
    assert "Traceback" not in res.stdout + res.stderr


def test_check_reports_the_references_it_loaded(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="t", http_port=1)
    res = run_cli("check", "-c", str(cfg))
    first = res.stdout.splitlines()[0]
    assert first == "✓ config: 1 model(s), 0 rule(s), 0 notifier(s); reference(s): churn 3000 rows", res.stdout
    assert res.returncode == 1  # nothing listens on 127.0.0.1:9: the Kafka check fails


def test_check_warns_of_a_drift_alpha_the_columns_cannot_reach(tmp_path: Path) -> None:
    drift = '[models.drift]\nthresholds = "calibrated"\nalpha = 0.001\nalpha_column = 0.5\n'
    cfg = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="t", http_port=1, extra=drift)
    res = run_cli("check", "-c", str(cfg))
    warned = [ln for ln in res.stdout.splitlines() if "drift.alpha" in ln]
    assert len(warned) == 1, res.stdout
    assert warned[0].startswith(
        "! model churn: drift.alpha = 0.001 cannot be reached with 5 drift columns at drift.alpha_column = 0.5")
    assert res.returncode == 1  # a warning only: the Kafka check (nothing on 127.0.0.1:9) fails
    # before run (systemd's ExecStartPre) the check does not calibrate: the daemon warns
    pre = run_cli("check", "--pre-start", "-c", str(cfg))
    assert "drift.alpha" not in pre.stdout, pre.stdout


@pytest.mark.slow  # `check` waits for the absent broker (as the test above)
def test_check_names_a_heavy_tailed_column_its_calibrated_threshold_cannot_hold(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(5)
    charges = 70 + 10 * rng.standard_t(1.5, 3000)  # tail index 1.5: wasserstein (auto, 3,000 rows)
    lines = [f"{rng.integers(18, 80)},{rng.integers(1, 900)},{c:.4f},{rng.choice(['pro', 'basic'])},"
             f"{rng.choice(['eu', 'us'])},{rng.random():.3f}" for c in charges]
    (tmp_path / "reference.csv").write_text(HEADER + "\n".join(lines) + "\n")
    calibrated = '[models.drift]\nthresholds = "calibrated"\n'
    cfg = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="t", http_port=1, extra=calibrated)
    res = run_cli("check", "-c", str(cfg))
    warned = [ln for ln in res.stdout.splitlines() if "heavy tail" in ln]
    assert len(warned) == 1, res.stdout
    assert warned[0].startswith(
        "! model churn: column 'monthly_charges' (wasserstein, thresholds = \"calibrated\"): heavy tail, tail index about")
    assert not any("column 'age'" in ln or "column 'tenure_days'" in ln for ln in res.stdout.splitlines())
