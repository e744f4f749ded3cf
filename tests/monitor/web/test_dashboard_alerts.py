"""The dashboard's alerts table shows a figure as the command line and Slack do."""

from __future__ import annotations

from monitor.web.dashboard import _alerts_table


def test_a_no_data_alert_shows_how_long_without_data_not_bare_seconds() -> None:
    # it showed "no_data 64.3 vs 3600" where Slack said "no data for 1m 04s (limit 1h 00m)"
    alerts = [
        {"state": "firing", "severity": "critical", "rule": "no-predictions", "model": "churn",
         "metric": "no_data", "value": 64.3, "threshold": 3600.0, "fired_at": "2026-11-23T14:00:00.000Z"},
        {"state": "firing", "severity": "warning", "rule": "charges-missing", "model": "churn",
         "metric": "missing_share", "column": "monthly_charges", "value": 0.30254, "threshold": 0.1,
         "fired_at": "2026-11-23T14:00:00.000Z"},
    ]
    html = _alerts_table(alerts)
    assert "no_data 1m 04s vs 1h 00m" in html
    assert "missing_share 0.3025 vs 0.1" in html
