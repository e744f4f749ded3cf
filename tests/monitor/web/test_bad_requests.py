"""Every bad request gets a 4xx and a short JSON error: never a traceback, a path or a 500.

Real HTTP through sockets against the daemon's real server; requests are written
by hand so they can be malformed the way a hostile or careless client would.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.monitor.web.http_helpers import AUTH, Api, http, request, running_api

DEEP = 30_000  # nesting levels, under max_json_bytes


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with pytest.MonkeyPatch.context() as mp, running_api(tmp_path_factory.mktemp("api"), mp) as a:
        yield a


def _is_short_error(body: bytes, state_dir: Path) -> dict[str, str]:
    doc = json.loads(body)
    assert isinstance(doc, dict) and set(doc) == {"error"}, doc
    text = doc["error"]
    assert isinstance(text, str) and 0 < len(text) <= 300, text
    for leak in ("Traceback", "File \"", str(state_dir), "driftwarden.db", "Exception"):
        assert leak not in text, text
    return doc


# (id, method, path, extra headers, body, expected status, expected error text)
SILENCES = "/api/v1/silences"
CASES: list[tuple[str, str, str, dict[str, str | None], bytes, int, str]] = [
    ("content-length-not-a-number", "POST", SILENCES, {**AUTH, "Content-Length": "abc"}, b"",
     400, "malformed HTTP request (framing, headers or Content-Length)"),
    ("content-length-negative", "POST", SILENCES, {**AUTH, "Content-Length": "-1"}, b"",
     400, "malformed HTTP request (framing, headers or Content-Length)"),
    ("content-length-twice-different", "POST", SILENCES, {**AUTH, "Content-Length": "2", "content-length": "3"},
     b"{}", 400, "malformed HTTP request (framing, headers or Content-Length)"),
    ("content-length-missing", "POST", SILENCES, {**AUTH, "Content-Length": None}, b"",
     411, "Content-Length required"),
    ("chunked-body", "POST", SILENCES, {**AUTH, "Transfer-Encoding": "chunked"}, b"2\r\n{}\r\n0\r\n\r\n",
     411, "send the body with a Content-Length; chunked bodies are not accepted"),
    ("limit-not-a-number", "GET", "/api/v1/models/churn/windows?limit=abc", {}, b"",
     400, "limit must be an integer (1..1000)"),
    ("limit-float", "GET", "/api/v1/alerts?limit=1e3", {}, b"", 400, "limit must be an integer (1..1000)"),
    ("limit-huge-digits", "GET", "/api/v1/silences?limit=" + "9" * 5000, {}, b"",
     400, "limit must be an integer (1..1000)"),
    ("deep-json-list", "POST", SILENCES, AUTH, b"[" * DEEP + b"]" * DEEP,
     400, "bad silence: Expected `object`, got `array`"),
    ("deep-json-in-a-field", "POST", SILENCES, AUTH, b'{"comment": ' + b"[" * DEEP + b"]" * DEEP + b"}",
     400, "bad silence: Expected `str`, got `array` - at `$.comment`"),
    ("deep-json-unterminated", "POST", SILENCES, AUTH, b'{"duration": "2h", "x": ' + b"{\"a\":" * (DEEP // 3),
     400, "bad silence: Object contains unknown field `x`"),
    ("body-a-list", "POST", SILENCES, AUTH, b'[{"duration": "2h"}]', 400, "bad silence: Expected `object`, got `array`"),
    ("rule-a-list", "POST", SILENCES, AUTH, b'{"rule": ["feature-drift"], "duration": "2h"}',
     400, "bad silence: Expected `str | null`, got `array` - at `$.rule`"),
    ("model-a-number", "POST", SILENCES, AUTH, b'{"model": 7, "duration": "2h"}',
     400, "bad silence: Expected `str | null`, got `int` - at `$.model`"),
    ("comment-an-object", "POST", SILENCES, AUTH, b'{"comment": {"a": 1}, "duration": "2h"}',
     400, "bad silence: Expected `str`, got `object` - at `$.comment`"),
    ("until-a-number", "POST", SILENCES, AUTH, b'{"until": 1700000000}',
     400, "bad silence: Expected `str | null`, got `int` - at `$.until`"),
    ("comment-too-long", "POST", SILENCES, AUTH, b'{"duration": "2h", "comment": "' + b"x" * 2001 + b'"}',
     400, "bad silence: Expected `str` of length <= 2000 - at `$.comment`"),
    ("unknown-field", "POST", SILENCES, AUTH, b'{"duration": "2h", "colour": "red"}',
     400, "bad silence: Object contains unknown field `colour`"),
    ("not-json", "POST", SILENCES, AUTH, b"{duration: 2h", 400, "body must be a JSON object"),
    ("empty-json-body", "POST", SILENCES, AUTH, b"", 400, "body must be a JSON object"),
    ("no-until-nor-duration", "POST", SILENCES, AUTH, b'{"model": "churn"}',
     400, 'bad silence: give "until" (RFC 3339) or "duration" (like "2h")'),
    ("bad-duration", "POST", SILENCES, AUTH, b'{"duration": "fast"}',
     400, 'bad silence: "duration" must be a duration like "2h" (and not absurdly long)'),
    ("absurd-duration", "POST", SILENCES, AUTH, b'{"duration": "99999999999999999w"}',
     400, 'bad silence: "duration" must be a duration like "2h" (and not absurdly long)'),
    ("bad-until", "POST", SILENCES, AUTH, b'{"until": "tomorrow"}',
     400, 'bad silence: "until" must be an RFC 3339 time like "2026-11-24T09:00:00Z"'),
    # each of these was stored (a silence of everything, an unknown model, both end times
    # with one dropped) or answered 500 (an end in the past, an unknown rule)
    ("silence-of-everything", "POST", SILENCES, AUTH, b'{"duration": "2h"}',
     400, 'bad silence: give "model" and/or "rule" (a silence of everything is not allowed)'),
    ("silence-ends-in-the-past", "POST", SILENCES, AUTH, b'{"model": "churn", "until": "2020-01-01T00:00:00Z"}',
     400, 'bad silence: it ends in the past; give a later "until" or a positive "duration"'),
    ("silence-of-zero-seconds", "POST", SILENCES, AUTH, b'{"model": "churn", "duration": "0s"}',
     400, 'bad silence: it ends in the past; give a later "until" or a positive "duration"'),
    ("silence-both-ends", "POST", SILENCES, AUTH, b'{"model": "churn", "duration": "2h", "until": "2099-01-01T00:00:00Z"}',
     400, 'bad silence: give either "until" or "duration", not both'),
    ("silence-unknown-model", "POST", SILENCES, AUTH, b'{"model": "nope\\u001b[2J", "duration": "2h"}',
     400, "bad silence: unknown model \"nope\\x1b[2J\"; the config's models: churn"),
    ("silence-unknown-rule", "POST", SILENCES, AUTH, b'{"rule": "nope", "duration": "2h"}',
     400, "bad silence: unknown rule \"nope\"; the config's rules: (none)"),
    ("alerts-unknown-state", "GET", "/api/v1/alerts?state=fring", {}, b"",
     400, "query parameter state must be one of inactive, pending, firing, resolved"),
    ("json-over-the-cap", "POST", SILENCES, AUTH, b'{"comment": "' + b"x" * 70_000 + b'"}',
     413, "body larger than 65536 bytes"),
    ("no-token", "POST", SILENCES, {}, b'{"duration": "2h"}', 401, "missing or wrong bearer token"),
    ("wrong-token", "POST", SILENCES, {"Authorization": "Bearer nope"}, b'{"duration": "2h"}',
     401, "missing or wrong bearer token"),
    ("token-not-bearer", "POST", SILENCES, {"Authorization": "Basic dXNlcjpwYXNz"}, b'{"duration": "2h"}',
     401, "missing or wrong bearer token"),
    ("reference-no-version", "POST", "/api/v1/models/churn/references", AUTH, b"age\n1\n",
     400, "query parameter version is required (1-64 letters, digits, . _ -)"),
    ("reference-bad-version", "POST", "/api/v1/models/churn/references?version=../../etc", AUTH, b"age\n1\n",
     400, "query parameter version is required (1-64 letters, digits, . _ -)"),
    ("reference-empty", "POST", "/api/v1/models/churn/references?version=v2", AUTH, b"",
     400, "empty body: send the reference data as CSV or Parquet"),
    ("reference-over-the-cap", "POST", "/api/v1/models/churn/references?version=v2",
     {**AUTH, "Content-Length": str(128 * 1024 * 1024 + 1)}, b"", 413, "body larger than 134217728 bytes"),
    ("reference-unknown-model", "POST", "/api/v1/models/nope/references?version=v2", AUTH, b"age\n1\n",
     404, "unknown model nope"),
    ("windows-unknown-model", "GET", "/api/v1/models/nope/windows", {}, b"", 404, "unknown model nope"),
    ("unknown-route", "GET", "/api/v2/whatever", {}, b"", 404, "not found"),
    ("wrong-method", "DELETE", SILENCES, AUTH, b"", 405, "method not allowed"),
    ("headers-too-large-in-one-read", "GET", "/healthz", {"X-Big": "a" * 20_000}, b"",
     431, "request line and headers larger than 16384 bytes"),
    ("url-too-large-in-one-read", "GET", "/healthz?x=" + "a" * 20_000, {}, b"",
     431, "request line and headers larger than 16384 bytes"),
]


@pytest.mark.parametrize(("method", "path", "headers", "body", "status", "message"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request_gets_4xx_and_a_short_json_error(
    api: Api, method: str, path: str, headers: dict[str, str | None], body: bytes, status: int, message: str
) -> None:
    r = http(api.port, method, path, body, headers)
    assert r.status == status, r.body
    assert r.headers["content-type"].startswith("application/json")
    assert _is_short_error(r.body, api.daemon.config.daemon.state_dir) == {"error": message}


def test_a_good_silence_still_works(api: Api) -> None:
    r = http(api.port, "POST", SILENCES, b'{"model": "churn", "duration": "2h", "comment": "deploy"}', AUTH)
    assert r.status == 201, r.body
    sid = r.json()["id"]
    listed = http(api.port, "GET", SILENCES).json()["silences"]
    assert [s["id"] for s in listed if s["comment"] == "deploy"] == [sid]


def test_mutations_without_a_configured_token_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_api(tmp_path, monkeypatch, token=False) as a:
        r = http(a.port, "POST", SILENCES, b'{"duration": "2h"}', AUTH)
        assert r.status == 403
        assert r.json() == {
            "error": "mutations are disabled: set daemon.api_token_env or daemon.api_token_file"
        }


def test_a_server_failure_is_a_generic_500_with_details_only_in_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import storage.alerts

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug, with details for the log only")

    with running_api(tmp_path, monkeypatch) as a:
        monkeypatch.setattr(storage.alerts, "list_alerts", broken)
        with caplog.at_level(logging.ERROR, logger="driftwarden.http"):
            r = http(a.port, "GET", "/api/v1/alerts")
        assert r.status == 500
        assert r.json() == {"error": "internal error"}
        assert any("GET /api/v1/alerts failed" in rec.getMessage() and rec.exc_info for rec in caplog.records)


@pytest.mark.sqlite_only("the failure is a closed SQLite connection; a closed PostgreSQL pool is another test's")
def test_a_store_that_cannot_be_read_is_a_503(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store goes away under the server (what a crashed disk looks like to a query): a
    storage error the client may retry, 503, not an internal error."""
    with running_api(tmp_path, monkeypatch) as a:
        a.daemon.reads.close()  # the connection the HTTP layer reads through
        r = http(a.port, "GET", "/api/v1/alerts")
        assert r.status == 503
        assert r.json()["error"].startswith("storage"), r.json()


def test_a_refused_upload_closes_the_connection_instead_of_reading_the_body(api: Api) -> None:
    # a JSON body the guard refuses: the answer says Connection: close
    r = http(api.port, "POST", SILENCES, b'{"duration": "2h"}', {"Authorization": "Bearer nope"})
    assert r.status == 401 and r.headers.get("connection") == "close"
    assert r.headers.get("www-authenticate") == "Bearer"
    # a bodiless refusal keeps the connection
    status, headers, _ = request(api.port, b"GET /api/v2/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status == 404 and "connection" not in headers


def test_a_new_silence_answers_its_end_as_it_is_stored_and_listed(api: Api) -> None:
    # it answered "until": "2026-11-24T07:00:00+00:00" / "…T15:26:04.524927+00:00" (Python's
    # isoformat) while `silence list`, GET /api/v1/silences and every other time say "…Z" in ms
    r = http(api.port, "POST", SILENCES, b'{"model": "churn", "until": "2099-11-24T09:00:00.250+02:00",'
             b' "comment": "until-format"}', AUTH)
    assert r.status == 201, r.body
    assert r.json()["until"] == "2099-11-24T07:00:00.250Z"
    listed = [s for s in http(api.port, "GET", SILENCES).json()["silences"] if s["comment"] == "until-format"]
    assert [s["ends_at"] for s in listed] == ["2099-11-24T07:00:00.250Z"]


def test_an_until_without_an_offset_is_utc_whatever_the_hosts_zone(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """`silence add --until 2099-11-24T09:00` ends at 09:00Z; the API took the same text as
    the daemon's local time (datetime.astimezone on a naive time): 14:00Z on a host in New York."""
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        r = http(api.port, "POST", SILENCES, b'{"model": "churn", "until": "2099-11-24T09:00:00", "comment": "naive"}', AUTH)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert r.status == 201, r.body
    assert r.json()["until"] == "2099-11-24T09:00:00.000Z"
    listed = [s for s in http(api.port, "GET", SILENCES).json()["silences"] if s["comment"] == "naive"]
    assert [s["ends_at"] for s in listed] == ["2099-11-24T09:00:00.000Z"]
