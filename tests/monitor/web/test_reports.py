"""Evidently reports of stored windows over real HTTP: from the Slack link, the API, and their errors."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import orjson
import pytest

from storage.records import window_url_id
from tests.monitor.web.http_helpers import AUTH, http
from tests.monitor.web.seed_helpers import Seeded, report_links, seeded_daemon
from tests.store_targets import StoreTarget

pytestmark = [pytest.mark.evidently]

#: a category value that would end Evidently's inline data script and run its own
EVIL = "</script><script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>"
COLUMNS = ("age", "tenure_days", "monthly_charges", "plan", "region", "prediction")


def poison_last_window(payloads: list[bytes]) -> list[bytes]:
    """Every 5th event of the last minute gets the hostile plan value."""
    out = []
    for i, p in enumerate(payloads):
        ev = orjson.loads(p)
        if i >= len(payloads) - 300 and i % 5 == 0:
            ev["features"]["plan"] = EVIL
        out.append(orjson.dumps(ev))
    return out


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, module_store_target: StoreTarget) -> Iterator[Seeded]:
    """On SQLite and on PostgreSQL: reports are made from the window samples kept in the store."""
    with pytest.MonkeyPatch.context() as mp, seeded_daemon(
        tmp_path_factory.mktemp("reports"), mp, reports="sample_rows = 500\nsample_windows = 20",
        transform=poison_last_window, storage=module_store_target.storage_toml(),
    ) as s:
        yield s


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def windows(s: Seeded, segment: str | None = None) -> list[dict]:
    q = "" if segment is None else f"&segment={segment}"
    status, _, body = get(f"{s.url}/api/v1/models/churn/windows?limit=100{q}")
    assert status == 200
    return json.loads(body)["windows"]


def test_the_report_link_in_the_slack_alert_resolves_to_the_windows_report(seeded: Seeded) -> None:
    links = report_links(seeded.slack)
    assert len(links) == 2  # dataset-drift and age-drift fired, one message each
    for link in links:
        assert link.startswith(f"{seeded.url}/api/v1/models/churn/windows/") and link.endswith("/report")
        assert "|" not in link and "%" not in link
        status, headers, body = get(link, {"Accept": "text/html"})
        assert status == 200, body[:300]
        assert headers["content-type"] == "text/html; charset=utf-8"  # once (it was there twice)
        assert headers["content-security-policy"].startswith("sandbox allow-scripts")
        page = body.decode()
        wid = link.rsplit("/", 2)[-2]
        from storage.records import window_id_from_url

        window_id = window_id_from_url(wid)
        assert f"window id: <code>{window_id}</code>" in page
        assert "driftwarden · window report" in page and "300 rows; this report is made from a sample of 300 of them" in page
        for col in COLUMNS:
            assert f"<td>{col}</td>" in page  # our banner: the stored figure of every column
            assert f'"{col}"' in page or f"Drift in column '{col}'" in page  # and in Evidently's
        assert page.count("<script") > 3  # Evidently's report scripts came along
        # the sample is the whole window here (300 rows <= 500): with the same tests and share,
        # Evidently's verdict equals the stored one
        from storage.windows import metric_value

        drifted = metric_value(seeded.daemon.store, window_id, "drifted_columns")
        share = metric_value(seeded.daemon.store, window_id, "drift_share")
        assert drifted is not None and share is not None
        assert f"Drift is detected for {share * 100:.1f}% of columns ({int(drifted)} out of 5)." in page


def test_every_listed_window_names_its_report_and_segment_windows_have_one_too(seeded: Seeded) -> None:
    listed = windows(seeded, "region=eu")
    assert listed and all(w["url_id"] == window_url_id(w["id"]) for w in listed)
    newest = listed[0]
    assert newest["report"] == f"/api/v1/models/churn/windows/{newest['url_id']}/report"
    status, _, body = get(seeded.url + newest["report"])
    assert status == 200 and "segment</b> region=eu" in body.decode()


def test_a_window_whose_sample_is_gone_says_so(seeded: Seeded) -> None:
    oldest = windows(seeded)[-1]  # 32 windows stored, the newest 20 keep a sample
    status, headers, body = get(seeded.url + oldest["report"])
    assert status == 410 and headers["content-type"] == "application/json"
    msg = json.loads(body)["error"]
    assert msg.startswith("the sample of this window's rows is gone: reports can be made for the newest"
                          " [reports] sample_windows windows")
    status, headers, body = get(seeded.url + oldest["report"], {"Accept": "text/html,*/*"})
    assert status == 410 and headers["content-type"].startswith("text/html")
    assert "the sample of this window&#x27;s rows is gone" in body.decode()


@pytest.mark.parametrize("module_store_target", ["sqlite"], indirect=True)  # the blob is the same on both
def test_a_window_whose_sample_cannot_be_read_says_so(seeded: Seeded) -> None:
    """A sample blob damaged or written by another program: a short error, not a 500."""
    target = windows(seeded)[10]
    store = seeded.daemon.store
    [kept] = store.query("SELECT payload FROM window_samples WHERE window_id = ?", (target["id"],))
    try:
        with store.transaction():
            store.execute("UPDATE window_samples SET payload = ? WHERE window_id = ?", (b"not a payload", target["id"]))
        status, headers, body = get(seeded.url + target["report"])
        assert status == 422 and headers["content-type"] == "application/json"
        assert json.loads(body)["error"].startswith("the sample of this window cannot be read: stored payload is not readable")
    finally:
        with store.transaction():
            store.execute("UPDATE window_samples SET payload = ? WHERE window_id = ?", (kept["payload"], target["id"]))


@pytest.mark.parametrize("module_store_target", ["sqlite"], indirect=True)  # refused before or at one lookup by id
@pytest.mark.parametrize(("path", "status", "error"), [
    ("/api/v1/models/churn/windows/not|an|id/report", 400,
     "not a window id: give the URL-safe id of the window (its url_id in the API)"),
    ("/api/v1/models/churn/windows/" + window_url_id("fraud|v1||a|b") + "/report", 404, "no such window of this model"),
    ("/api/v1/models/churn/windows/" + window_url_id("churn|v1||2026-01-01T00:00:00.000Z|x") + "/report", 404,
     "no such window: it was never stored, or the retention prune deleted it"),
    ("/api/v1/models/fraud/windows/" + window_url_id("fraud|v1||a|b") + "/report", 404, "unknown model fraud"),
])
def test_bad_report_requests_get_a_short_json_error(seeded: Seeded, path: str, status: int, error: str) -> None:
    r = http(seeded.server.port, "GET", path)
    assert (r.status, r.json()) == (status, {"error": error})


@pytest.mark.parametrize("module_store_target", ["sqlite"], indirect=True)  # the page's escaping: one store is enough
def test_a_hostile_category_value_cannot_close_evidentlys_script(seeded: Seeded) -> None:
    newest = windows(seeded, "")[0]
    status, _, body = get(seeded.url + newest["report"])
    page = body.decode()
    assert status == 200
    assert EVIL not in page and "</script><script>window.__pwned" not in page
    # shown as look-alikes (in Evidently's JSON, as \u escapes)
    assert "\\uff1c/script\\uff1e\\uff1cscript\\uff1ewindow.__pwned=1" in page


def test_reports_and_reads_need_the_token_when_reads_are_protected(tmp_path, monkeypatch) -> None:
    with seeded_daemon(tmp_path, monkeypatch, windows=3, shift_from=9, daemon_extra="protect_reads = true") as s:
        report = windows_with_token(s)[0]["report"]
        for path in ("/", "/metrics", "/api/v1/models", "/api/v1/alerts", report):
            r = http(s.server.port, "GET", path)
            assert (r.status, r.json()) == (401, {"error": "missing or wrong bearer token"}), path
            # a report renders in seconds, the first in a process in tens on a busy machine
            assert http(s.server.port, "GET", path, headers=AUTH, timeout=120).status == 200, path
        assert http(s.server.port, "GET", "/healthz").status == 200
        js = http(s.server.port, "GET", "/static/dashboard.js")
        assert (js.status, js.headers["content-type"]) == (200, "text/javascript; charset=utf-8")
        assert http(s.server.port, "GET", "/", headers=AUTH).headers["content-type"] == "text/html; charset=utf-8"


def windows_with_token(s: Seeded) -> list[dict]:
    r = http(s.server.port, "GET", "/api/v1/models/churn/windows", headers=AUTH)
    assert r.status == 200
    return r.json()["windows"]


def test_the_webhook_payload_links_to_the_same_report(tmp_path, monkeypatch) -> None:
    from monitor.demo.sinks import WebhookSink
    from storage.records import window_id_from_url
    from tests.monitor.web.seed_helpers import HOOK_SECRET

    with WebhookSink(secret=HOOK_SECRET) as sink, seeded_daemon(
        tmp_path, monkeypatch, windows=6, shift_from=3, hook_url=sink.url,
    ) as s:
        assert sink.wait_for(1, timeout=20)
        [req] = sink.accepted()
        body = json.loads(req.body)
        assert body["type"] == "alert.firing" and req.verified
        link = body["links"]["report"]
        wid = link.rsplit("/", 2)[-2]
        assert window_id_from_url(wid) == body["window"]["id"]
        assert link == f"{s.url}/api/v1/models/churn/windows/{wid}/report"
        assert link in report_links(s.slack)  # the same window's report as in Slack
        status, _, page = get(link)
        assert status == 200 and f"window id: <code>{body['window']['id']}</code>" in page.decode()


def test_a_numerical_column_judged_by_z_or_chisquare_renders() -> None:
    """driftwarden's auto test (as Evidently's) is z or chisquare for a numerical column of at
    most 5 values with a reference of at most 1,000 rows (a 0/1 flag, a constant
    prediction); Evidently refuses those names for a numerical column, so every report of
    such a model was a 500. Left to Evidently's own choice, which is the same test."""
    import numpy as np

    from monitor.web.reports import ReportInputs, render

    rng = np.random.default_rng(0)
    sample = {"age": rng.normal(40, 10, 300), "is_premium": rng.integers(0, 2, 300).astype(float),
              "plan": rng.choice(np.array(["a", "b", "c"], dtype=object), 300)}
    reference = {"age": rng.normal(40, 10, 800), "is_premium": rng.integers(0, 2, 800).astype(float),
                 "plan": rng.choice(np.array(["a", "b", "c"], dtype=object), 800)}
    figures = [
        {"metric": "drift_score", "column": "age", "test": "ks", "value": 0.5, "threshold": 0.05, "drifted": 0},
        {"metric": "drift_score", "column": "is_premium", "test": "z", "value": 0.5, "threshold": 0.05, "drifted": 0},
        {"metric": "drift_score", "column": "plan", "test": "chisquare", "value": 0.5, "threshold": 0.05, "drifted": 0},
    ]
    window = {"id": "m|v||a|b", "model": "m", "version": "v", "segment": "", "start": "a", "end": "b",
              "status": "ok", "rows": 300}
    page = render(ReportInputs(window=window, figures=figures, sample=sample, sample_rows=300,
                               reference=reference, reference_note="the reference file"))
    assert "Z-test" in page and "chi-square" in page.lower() and "K-S" in page


def test_a_wide_window_reports_the_prediction_and_the_drifted_columns_first() -> None:
    """Evidently renders a 1,000-column window in ~74 s and ~47 MB of HTML: its part covers
    MAX_REPORT_COLUMNS columns, the prediction's and the drifted ones first, and the banner
    says so; driftwarden's own table keeps every column."""
    import numpy as np

    from monitor.web.reports import MAX_REPORT_COLUMNS, ReportInputs, banner, report_columns

    cols = [f"c{i}" for i in range(250)] + ["prediction"]
    figures = [{"metric": "drift_score", "column": c, "test": "ks", "value": 0.5, "threshold": 0.05,
                "drifted": int(c in ("c200", "c249"))} for c in cols[:-1]]
    figures.append({"metric": "prediction_drift", "column": "prediction", "test": "ks", "value": 0.5,
                    "threshold": 0.05, "drifted": 0})
    sample = {c: np.zeros(3) for c in cols}
    inputs = ReportInputs(window={"id": "m|v||a|b", "model": "m", "version": "v", "segment": "", "start": "a",
                                  "end": "b", "status": "ok", "rows": 3},
                          figures=figures, sample=sample, sample_rows=3, reference=sample, reference_note="x")
    chosen, note = report_columns(inputs, cols)
    assert len(chosen) == MAX_REPORT_COLUMNS == 100
    assert {"prediction", "c200", "c249"} <= set(chosen) and chosen[:3] == ["c0", "c1", "c2"]
    assert chosen == sorted(chosen, key=cols.index)  # in the window's order
    assert note.startswith("Evidently's part below covers 100 of the window's 251 columns")
    import html

    shown = banner(inputs, note)
    assert html.escape(note) in shown and shown.count("<tr>") == 251 + 1  # and the head row
    assert report_columns(inputs, cols[:100]) == (cols[:100], "")
