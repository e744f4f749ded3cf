"""Uploads to the retraining callback are validated: an unfit reference is a 422 naming the
column, and the reference in force stays in force (in memory, in the table, on disk)."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitor.config import load_config
from monitor.demo.data import sample
from monitor.service.daemon import Daemon
from storage.references import list_references
from tests.monitor.daemon_helpers import wait_for
from tests.monitor.web.http_helpers import AUTH, Api, http, running_api
from tests.store_targets import StoreTarget

URL = "/api/v1/models/churn/references?version=v2"
HEADER = "age,tenure_days,monthly_charges,plan,region,prediction\n"


def _csv(n: int, seed: int = 3) -> bytes:
    return pd.DataFrame(sample(n, np.random.default_rng(seed), shifted=True)).to_csv(index=False).encode()


def _in_force(api: Api) -> tuple[str, str, int]:
    ref = http(api.port, "GET", "/api/v1/models").json()["models"][0]["reference"]
    return ref["version"], ref["sha256"], ref["rows"]


def _refs_on_disk(api: Api) -> list[str]:
    folder = api.daemon.config.daemon.state_dir / "references" / "churn"
    return sorted(p.name for p in folder.glob("*")) if folder.exists() else []


BAD: list[tuple[str, bytes, str]] = [
    ("header-only", HEADER.encode(), "has 0 row(s); at least 50 are needed"),
    ("one-row", (HEADER + "40,300,70.5,pro,eu,0.4\n").encode(), "has 1 row(s); at least 50 are needed"),
    ("missing-column", _csv(200).replace(b"monthly_charges", b"charges"),
     "lacks the configured feature column(s) 'monthly_charges'"),
    ("missing-prediction", pd.DataFrame(sample(200, np.random.default_rng(1))).drop(columns="prediction")
     .to_csv(index=False).encode(), "lacks the prediction column 'prediction'"),
    ("non-numeric-column", (HEADER + "40,300,70.5,pro,eu,0.4\n" * 99 + "forty,300,70.5,pro,eu,0.4\n").encode(),
     "column 'age' is numerical but row 100 holds 'forty' (1 such value(s))"),
    ("infinite-number", (HEADER + "40,300,inf,pro,eu,0.4\n" * 60).encode(),
     "column 'monthly_charges' is numerical but row 1 holds 'inf' (60 such value(s))"),
    ("empty-column", (HEADER + "40,300,70.5,,eu,0.4\n" * 60).encode(), "column 'plan' holds no values"),
    ("binary-garbage", b"\x00\x01\x02 garbage", "lacks the configured feature column(s) 'age'"),
    ("unterminated-quote", (HEADER + '40,300,"70.5,pro,eu,0.4\n').encode(),
     "is not readable as CSV: Error tokenizing data. C error: EOF inside string"),
    ("empty-file-as-csv", b"\n", "is not readable as CSV: No columns to parse from file"),
    ("not-parquet", b"PAR1" + b"\x00" * 100, "is not readable as PARQUET"),
]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with pytest.MonkeyPatch.context() as mp, running_api(tmp_path_factory.mktemp("up"), mp) as a:
        yield a


@pytest.mark.parametrize(("body", "problem"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_an_unfit_reference_is_refused_and_the_old_one_stays(api: Api, body: bytes, problem: str) -> None:
    before, files, table = _in_force(api), _refs_on_disk(api), list_references(api.daemon.store, "churn")
    r = http(api.port, "POST", URL, body, {**AUTH, "Content-Type": "text/csv"})
    assert r.status == 422, r.body
    error = r.json()["error"]
    assert error.startswith(f"reference refused: {problem}"), error
    assert str(api.daemon.config.daemon.state_dir) not in error and ".part" not in error
    assert _in_force(api) == before
    assert _refs_on_disk(api) == files  # no temp file left, nothing renamed
    assert list_references(api.daemon.store, "churn") == table


def test_a_fit_reference_is_renamed_private_and_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_target: StoreTarget
) -> None:
    """Registered in the store (SQLite or the shared PostgreSQL), the file in the state dir."""
    with running_api(tmp_path, monkeypatch, storage=store_target.storage_toml()) as a:
        body = _csv(500)
        r = http(a.port, "POST", URL, body, {**AUTH, "Content-Type": "text/csv"})
        assert r.status == 201, r.body
        got = r.json()
        assert (got["model"], got["version"], got["rows"]) == ("churn", "v2", 500)
        assert _in_force(a) == ("v2", got["sha256"], 500)
        assert _refs_on_disk(a) == [f"v2-{got['sha256'][:12]}.csv"]
        path = a.daemon.config.daemon.state_dir / "references" / "churn" / _refs_on_disk(a)[0]
        assert path.read_bytes() == body
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        # Parquet, recognised by its magic bytes without a Content-Type
        buf = io.BytesIO()
        pd.DataFrame(sample(400, np.random.default_rng(5))).to_parquet(buf)
        r = http(a.port, "POST", "/api/v1/models/churn/references?version=v3", buf.getvalue(), AUTH)
        assert r.status == 201, r.body
        assert _in_force(a)[0::2] == ("v3", 400)
        assert any(n.startswith("v3-") and n.endswith(".parquet") for n in _refs_on_disk(a))


def test_reference_min_rows_sets_the_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the configured reference has 3000 rows; uploads need reference_min_rows = 1000
    with running_api(tmp_path, monkeypatch, model_extra="reference_min_rows = 1000") as a:
        r = http(a.port, "POST", URL, _csv(999), AUTH)
        assert r.status == 422
        assert r.json()["error"].startswith("reference refused: has 999 row(s); at least 1000 are needed")
        assert http(a.port, "POST", URL, _csv(1000), AUTH).status == 201


def test_a_partial_upload_of_an_earlier_run_is_removed_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "state" / "references" / "churn"
    folder.mkdir(parents=True)
    (folder / ".upload-abc123.part").write_bytes(b"half a file")
    (folder / "v1-0123456789ab.csv").write_bytes(b"kept")
    with running_api(tmp_path, monkeypatch) as a:
        assert _refs_on_disk(a) == ["v1-0123456789ab.csv"]


def test_a_registered_reference_that_is_unfit_falls_back_to_the_configured_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_target: StoreTarget
) -> None:
    """A header-only reference registered by an older release must not survive a restart."""
    from datetime import UTC, datetime

    from storage.references import register_reference

    with running_api(tmp_path, monkeypatch, storage=store_target.storage_toml()) as a:
        configured = _in_force(a)
        bad = a.daemon.config.daemon.state_dir / "references" / "churn" / "v9-000000000000.csv"
        bad.parent.mkdir(parents=True, exist_ok=True)
        bad.write_text(HEADER)
        with a.daemon.store.transaction():
            register_reference(a.daemon.store, model="churn", version="v9", source="callback", sha256="0" * 64,
                               rows=0, path=str(bad), registered_at=datetime(2030, 1, 1, tzinfo=UTC))
        cfg = a.config
    d = Daemon(load_config(cfg), http=False)
    try:
        rt = d.pipeline.models["churn"]
        assert (rt.prepared.version, rt.prepared.reference.sha256, rt.prepared.reference.rows) == configured
    finally:
        d.close()


def test_a_small_file_of_too_many_values_is_refused_before_it_is_read(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A few KB of Parquet can hold millions of equal values (a 483 KB file of 20M rows took
    the daemon from 0.5 to 3.6 GB): the upload cap counted bytes on the wire only. Now a file
    of more than max_reference_bytes / 4 values is refused from its metadata; a CSV is read
    no further than that."""
    with running_api(tmp_path, monkeypatch, daemon_extra="max_reference_bytes = 200000\n") as a:
        before = _in_force(a)
        rows = 9_000  # x 6 columns = 54,000 values > 200,000 / 4
        frame = pd.DataFrame({"age": [42.0] * rows, "tenure_days": [3.0] * rows, "monthly_charges": [70.0] * rows,
                              "plan": ["pro"] * rows, "region": ["eu"] * rows, "prediction": [0.5] * rows})
        buf = io.BytesIO()
        frame.to_parquet(buf, compression="zstd")
        assert len(buf.getvalue()) < 10_000
        r = http(a.port, "POST", URL, buf.getvalue(), {**AUTH, "Content-Type": "application/vnd.apache.parquet"})
        assert r.status == 422, r.body
        assert r.json()["error"] == ("reference refused: holds 9000 rows x 6 columns, more than the 50000 values an"
                                     " upload may hold (daemon.max_reference_bytes / 4)")
        small = frame.head(8_400).astype({"age": int, "tenure_days": int, "monthly_charges": int, "prediction": int})
        csv = small.to_csv(index=False).encode()  # 50,400 values in under 200 KB
        assert len(csv) <= 200_000
        r = http(a.port, "POST", URL, csv, {**AUTH, "Content-Type": "text/csv"})
        assert r.status == 422 and "holds more than 8333 rows x 6 columns" in r.json()["error"], r.body
        assert _in_force(a) == before
        ok = http(a.port, "POST", URL, _csv(300), {**AUTH, "Content-Type": "text/csv"})
        assert ok.status == 201, ok.body


def test_a_second_upload_meanwhile_is_told_to_retry() -> None:
    """Uploads waited for each other inside the worker threads every API read needs: 20 of
    them held /metrics for 11 s. One at a time now, on the event loop; one that comes
    meanwhile is answered 503 before its body is read."""
    import asyncio

    from monitor.web.requests import ApiError
    from monitor.web.uploads import receive_reference

    async def second_while_first_runs() -> ApiError:
        lock = asyncio.Lock()
        async with lock:  # the first upload, parsing
            try:
                await receive_reference(None, "churn", "v2", {}, _never_read, lock)  # type: ignore[arg-type]
            except ApiError as exc:
                return exc
        raise AssertionError("not refused")

    exc = asyncio.run(second_while_first_runs())
    assert (exc.status, exc.message, exc.headers) == (
        503, "another reference upload is being processed; retry", {"Retry-After": "5"})


async def _never_read() -> dict[str, object]:
    raise AssertionError("the body of a refused upload is not read")


def test_an_upload_while_another_streams_its_body_is_told_to_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one-at-a-time lock was taken only once a body had arrived: a second upload while
    the first streamed its body (up to max_reference_bytes each, from every connection a
    client may hold) read its whole body to disk too, then waited, instead of the 503."""
    import socket

    from tests.monitor.web.http_helpers import read_reply

    with running_api(tmp_path, monkeypatch) as a:
        body = _csv(500)
        head = (f"POST {URL} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {AUTH['Authorization']}\r\n"
                f"Content-Type: text/csv\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", a.port), timeout=20) as first:
            first.sendall(head + body[:100])  # streaming its body
            folder = a.daemon.config.daemon.state_dir / "references" / "churn"
            assert wait_for(lambda: folder.exists() and any(folder.glob(".upload-*")), timeout=10)
            r = http(a.port, "POST", "/api/v1/models/churn/references?version=v3", _csv(400), AUTH)
            assert (r.status, r.json()) == (503, {"error": "another reference upload is being processed; retry"})
            assert r.headers["retry-after"] == "5" and r.headers["connection"] == "close"
            assert len(list(folder.glob(".upload-*"))) == 1  # the second one's body was never read
            first.sendall(body[100:])
            got = read_reply(first)
        assert got.status == 201, got.body
        assert _in_force(a)[0::2] == ("v2", 500)
        assert _refs_on_disk(a) == [f"v2-{got.json()['sha256'][:12]}.csv"]


def test_a_reference_whose_labels_are_refused_is_a_422_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model joining labels: an upload whose label column lacks ``class_of_interest``
    (labelled "no"/"yes" where the config says 1) is refused like any unfit reference. The
    labels were read only after the drift reference was registered and put in use, so the
    upload was answered 500 while the daemon judged against the refused file, its
    registration left behind and the file deleted."""
    from monitor.demo.data import write_reference_csv  # noqa: PLC0415

    tmp_path.mkdir(parents=True, exist_ok=True)
    write_reference_csv(str(tmp_path / "reference.csv"), n=3000, seed=7, label=True)
    with running_api(tmp_path, monkeypatch, model_extra="performance = { enabled = true }") as a:
        before, files, table = _in_force(a), _refs_on_disk(a), list_references(a.daemon.store, "churn")
        ref = pd.read_csv(tmp_path / "reference.csv")
        ref["label"] = ref["label"].map({0: "no", 1: "yes"})
        r = http(a.port, "POST", URL, ref.to_csv(index=False).encode(), {**AUTH, "Content-Type": "text/csv"})
        assert r.status == 422, r.body
        error = r.json()["error"]
        assert error.startswith("reference refused: models.class_of_interest = 1 is none of the classes"), error
        assert str(a.daemon.config.daemon.state_dir) not in error
        assert _in_force(a) == before
        assert _refs_on_disk(a) == files
        assert list_references(a.daemon.store, "churn") == table


def test_an_upload_without_the_label_column_the_config_names_says_so_in_its_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accepted (no rule needs the labels), but the uploader learns what the daemon's log
    says: no label drift, estimates or reference figures; the answer names the file, not
    the state dir's path. A reference with labels answers no warning."""
    extra = 'label = "label"\nperformance = { enabled = true }'
    with running_api(tmp_path, monkeypatch, model_extra=extra) as a:
        r = http(a.port, "POST", URL, _csv(500), {**AUTH, "Content-Type": "text/csv"})
        assert r.status == 201, r.body
        got = r.json()
        name = f"v2-{got['sha256'][:12]}.csv"
        assert got["warnings"] == [
            f"model churn: reference {name} has no column 'label' (models.label): no label drift, estimated"
            " performance or reference figures; name a column the file holds, add the labels to it, or drop"
            " models.label"
        ]
        assert str(a.daemon.config.daemon.state_dir) not in r.body.decode()
        frame = pd.DataFrame(sample(500, np.random.default_rng(4)))
        frame["label"] = (np.random.default_rng(5).random(500) < frame["prediction"]).astype(int)
        r = http(a.port, "POST", "/api/v1/models/churn/references?version=v3", frame.to_csv(index=False).encode(),
                 {**AUTH, "Content-Type": "text/csv"})
        assert r.status == 201, r.body
        assert r.json()["warnings"] == []


def test_an_upload_whose_csv_column_would_never_match_a_message_says_so_in_its_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A category column written as decimals (``1.0``, ``2.0``: pandas' integer column with a
    gap) is read as that text while a message's ``1`` reads as ``"1"``: every live value is
    a new category and the column drifts in every window. The daemon logs a WARNING (and
    ``check`` lists it); the uploader, who does not read the log, got ``warnings: []``. The
    answer names the reference by its file name, never the upload's temp file or the state dir."""
    frame = pd.DataFrame(sample(500, np.random.default_rng(4)))
    frame["region"] = np.where(np.random.default_rng(6).random(500) < 0.5, "1.0", "2.0")
    with running_api(tmp_path, monkeypatch) as a:
        r = http(a.port, "POST", URL, frame.to_csv(index=False).encode(), {**AUTH, "Content-Type": "text/csv"})
        assert r.status == 201, r.body
        got = r.json()
        name = f"v2-{got['sha256'][:12]}.csv"
        assert len(got["warnings"]) == 1, got
        warning = got["warnings"][0]
        assert warning.startswith(f"model churn: reference {name}: column 'region' holds only whole numbers written as decimals"), warning
        body = r.body.decode()
        assert str(a.daemon.config.daemon.state_dir) not in body and ".part" not in body and ".upload-" not in body


def test_an_upload_answers_its_warnings_at_log_level_error_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``daemon.log_level = "error"`` keeps the WARNING off the log, not out of the answer:
    the uploader asked, and the log no longer says it either."""
    import logging  # noqa: PLC0415

    frame = pd.DataFrame(sample(500, np.random.default_rng(4)))
    frame["region"] = np.where(np.random.default_rng(6).random(500) < 0.5, "1.0", "2.0")
    logger = logging.getLogger("driftwarden")
    before = logger.level
    logger.setLevel(logging.ERROR)  # what the root's level at "error" makes of it
    try:
        with running_api(tmp_path, monkeypatch) as a:
            r = http(a.port, "POST", URL, frame.to_csv(index=False).encode(), {**AUTH, "Content-Type": "text/csv"})
            assert r.status == 201, r.body
            assert [w.split(": ")[2][:15] for w in r.json()["warnings"]] == ["column 'region'"], r.json()
    finally:
        logger.setLevel(before)
    assert logger.level == before
