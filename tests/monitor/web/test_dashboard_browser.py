"""The dashboard page in a real headless Chromium: it loads clean, shows what was seeded, and
nothing from the stream runs as script. A full-page screenshot is kept under the test's tmp dir
(``DRIFTWARDEN_SCREENSHOT_TO=docs/dashboard.png`` also writes it there, for the README)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from storage.overview import recent_dead_letters
from storage.windows import windows_with_verdicts
from tests.monitor.web.browser import chromium, chromium_binary
from tests.monitor.web.seed_helpers import Seeded, seeded_daemon
from tests.monitor.web.test_reports import EVIL, poison_last_window

# skipped without a browser, except where one is required (.ci/run installs it and sets this)
pytestmark = [pytest.mark.skipif(
    chromium_binary() is None and not os.environ.get("DRIFTWARDEN_REQUIRE_BROWSER"),
    reason="no chromium (apt-get install chromium)",
)]

COLUMNS = ("age", "tenure_days", "monthly_charges", "plan", "region", "prediction")
HOSTILE_VERSION = "</script><script>window.__pwned=4</script>"
HOSTILE_REGION = "<img src=x onerror=window.__pwned=3>"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    with pytest.MonkeyPatch.context() as mp, seeded_daemon(
        tmp_path_factory.mktemp("dashboard"), mp, bad=[b"not json", b'{"model": "churn"}'],
    ) as s:
        yield s


def test_the_dashboard_loads_clean_and_shows_the_seeded_windows_and_alerts(seeded: Seeded, tmp_path: Path) -> None:
    store = seeded.daemon.store
    with chromium(tmp_path / "profile") as page:
        page.goto(seeded.url + "/")
        assert page.evaluate("document.getElementById('status').textContent").startswith("not ready · ")
        # as a consuming daemon shows it
        seeded.daemon.ready.set()
        seeded.daemon.kafka_connected = True
        page.goto(seeded.url + "/")
        page.pump(1.0)
        assert page.errors() == []
        assert page.evaluate("document.getElementById('status').textContent").startswith("ready · ")
        # one chart per column (the prediction's included) and the dataset's drift share, drawn
        assert page.evaluate("document.body.dataset.charts") == str(len(COLUMNS) + 1)
        assert page.evaluate("document.querySelectorAll('#charts canvas').length") == len(COLUMNS) + 1
        captions = page.evaluate("[...document.querySelectorAll('#charts figcaption')].map(e => e.textContent)")
        assert captions[0] == "dataset drift share · drifts above the threshold"
        assert {c.split(" ")[0] for c in captions[1:]} == set(COLUMNS)
        # the caption says what the score is: a p-value and a distance read alike as numbers
        assert "age · wasserstein distance · drifts above the threshold" in captions
        # a chart holds the threshold and a score per window: its legend names them
        legend = page.evaluate("document.querySelector('#charts .u-legend').textContent")
        assert "version v1" in legend and "threshold" in legend and "drifted" in legend
        # the latest windows with their verdicts, newest first
        rows = page.evaluate("[...document.querySelectorAll('table.windows tbody tr')].map(r => r.innerText)")
        stored = windows_with_verdicts(store, model="churn", limit=20)
        assert len(rows) == len(stored) == 20
        for text, w in zip(rows, stored, strict=True):
            assert w["start"][:16].replace("T", " ") in text and f"\t{w['rows']}\t" in text
            assert ("drifted" if w["dataset_drift"] else "stable") in text
        links = page.evaluate("[...document.querySelectorAll('table.windows a')].map(a => a.href)")
        assert len(links) == 20 and all(h.startswith(seeded.url + "/api/v1/models/churn/windows/") for h in links)
        # firing alerts, sent deliveries, dead letters
        alerts = page.evaluate("document.querySelector('table.alerts').innerText")
        assert "firing\tcritical\tdataset-drift\tchurn" in alerts and "firing\twarning\tage-drift\tchurn" in alerts
        deliveries = page.evaluate("[...document.querySelectorAll('table.deliveries tbody tr')].map(r => r.innerText)")
        assert len(deliveries) == 2 and all("\tslack\tfiring\tsent\t1\t" in d for d in deliveries)
        dead = page.evaluate("document.querySelector('#dead-letters').innerText")
        assert "missing_field: 1, not_json: 1" in dead
        assert all(x["reason"][:40] in dead for x in recent_dead_letters(store))
        shot = page.screenshot(tmp_path / "dashboard.png")
    assert shot.stat().st_size > 50_000
    target = os.environ.get("DRIFTWARDEN_SCREENSHOT_TO")
    if target:
        shutil.copyfile(shot, target)


def test_values_from_the_stream_are_shown_as_text_never_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def hostile(payloads: list[bytes]) -> list[bytes]:
        out = []
        for i, p in enumerate(payloads):
            ev = orjson.loads(p)
            if i < 300:
                ev["version"] = HOSTILE_VERSION
            if i % 10 == 0:
                ev["segment"] = {"region": HOSTILE_REGION}
            out.append(orjson.dumps(ev))
        return out

    with seeded_daemon(tmp_path / "state", monkeypatch, windows=4, shift_from=2, transform=hostile) as s, \
            chromium(tmp_path / "profile") as page:
        page.goto(s.url + "/")
        page.pump(1.0)
        assert page.errors() == []
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.evaluate("document.querySelectorAll('img').length") == 0
        versions = page.evaluate("document.querySelector('#models td:nth-child(5)').textContent")
        assert HOSTILE_VERSION in versions
        segments = page.evaluate("[...document.querySelectorAll('table.windows td:nth-child(3)')].map(e => e.textContent)")
        assert f"region={HOSTILE_REGION}" in segments
        legends = page.evaluate("[...document.querySelectorAll('#charts .u-legend')].map(e => e.textContent).join(' ')")
        assert f"version {HOSTILE_VERSION}" in legends


def test_a_report_with_a_hostile_category_runs_none_of_it(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import urllib.request

    with seeded_daemon(tmp_path / "state", monkeypatch, windows=3, shift_from=9, transform=poison_last_window) as s:
        listed = json.loads(urllib.request.urlopen(s.url + "/api/v1/models/churn/windows?segment=", timeout=30).read())
        report = s.url + listed["windows"][0]["report"]
        with chromium(tmp_path / "profile") as page:
            page.goto(report, timeout=120)
            page.pump(2.0)
            assert page.evaluate("typeof window.__pwned") == "undefined"
            assert page.evaluate("document.querySelectorAll('img[src=x]').length") == 0
            assert "driftwarden · window report" in page.evaluate("document.querySelector('#driftwarden-window').textContent")
            text = page.evaluate("document.body.innerText")
            assert "plan" in text and EVIL not in text


def test_an_infinite_figure_is_a_gap_in_its_chart_and_null_in_the_api(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """One finite JSON number (1e308) makes a window's Wasserstein distance infinite: the
    store keeps it, the dashboard still draws (it answered 500 while that window was in its
    history) and the API's JSON stays JSON (it wrote a bare ``Infinity``)."""
    import json
    import math
    import urllib.request

    def huge(payloads: list[bytes]) -> list[bytes]:
        out = list(payloads)
        ev = orjson.loads(out[130])  # in the second window
        ev["features"]["age"] = 1e308
        out[130] = orjson.dumps(ev)
        return out

    def strict(raw: bytes) -> object:
        def refuse(name: str) -> object:
            raise ValueError(f"not JSON: {name}")
        return json.loads(raw, parse_constant=refuse)

    with seeded_daemon(tmp_path / "state", monkeypatch, windows=4, per_window=120, shift_from=2, transform=huge) as s:
        stored = s.daemon.store.query("SELECT value FROM metrics WHERE \"column\" = 'age' AND metric = 'drift_score'")
        assert any(math.isinf(r["value"]) for r in stored), stored
        listed = strict(urllib.request.urlopen(s.url + "/api/v1/models/churn/windows?metrics=1&segment=", timeout=30).read())
        scores = [m["value"] for w in listed["windows"] for m in w["metrics"]  # type: ignore[index]
                  if m["column"] == "age" and m["metric"] == "drift_score"]
        assert None in scores and len(scores) == 4, scores
        with chromium(tmp_path / "profile") as page:
            page.goto(s.url + "/")
            page.pump(1.0)
            assert page.errors() == []
            assert page.evaluate("document.body.dataset.charts") == str(len(COLUMNS) + 1)
