"""What :mod:`storage.redaction` takes as a URL's secrets: its token-like path, its query,
its password; never what is no secret (a user name alone, ``/hook``), which would garble
every text that happens to hold it (``driftwarden stopped after …``)."""

from __future__ import annotations

import pytest

from storage import redaction
from storage.redaction import shown_url, url_secrets


def test_a_url_without_a_secret_part_registers_nothing() -> None:
    for url in ("postgresql://driftwarden@db.example/driftwarden", "http://127.0.0.1:9/hook",
                "https://slack.com/api/chat.postMessage"):
        assert url_secrets(url) == {}, url
    # libpq's forms without a host; a query value like "require" is no secret
    got = url_secrets("postgresql:///dw?host=/run/postgresql&sslmode=require")
    assert "require" not in got and "/run/postgresql" not in got


def test_a_url_s_secret_parts_and_what_they_become() -> None:
    got = url_secrets("https://ops:pa55w0rd@hooks.example.com/services/T0123ABCD/x?token=abc123def")
    assert got["https://ops:pa55w0rd@hooks.example.com/services/T0123ABCD/x?token=abc123def"] == "https://hooks.example.com/…"
    assert got["/services/T0123ABCD/x?token=abc123def"] == "/…"
    assert {got[k] for k in ("T0123ABCD", "abc123def", "pa55w0rd", "ops:pa55w0rd")} == {"***"}
    assert "services" not in got and "ops" not in got


def test_shown_url_keeps_scheme_host_and_port_only() -> None:
    assert shown_url("https://u:p@hooks.slack.com/services/T0/B0/XX") == "https://hooks.slack.com/…"
    assert shown_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert shown_url("http://127.0.0.1:8080/?token=x") == "http://127.0.0.1:8080/…"
    assert shown_url("not a url") == "<url not shown>"


def test_the_registry_is_bounded_and_says_so_once(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # registering is per request: a receiver URL that changed with every request would
    # otherwise grow the registry (and the cost of every redact) without bound
    monkeypatch.setattr(redaction, "_known", {})
    monkeypatch.setattr(redaction, "_pairs", ())
    monkeypatch.setattr(redaction, "_full", False)
    monkeypatch.setattr(redaction, "MAX_SECRETS", 3)
    with caplog.at_level("WARNING", logger="storage.redaction"):
        redaction.register(["alpha-secret", "beta-secret"])
        redaction.register(["gamma-secret", "delta-secret"])
        redaction.register(["epsilon-secret"])
    assert len(redaction._known) == 3
    assert redaction.redact("alpha-secret gamma-secret delta-secret") == "*** *** delta-secret"
    assert [r.getMessage() for r in caplog.records] == [
        "more than 3 secret values to redact: the newest are not redacted"]


def test_quoted_redacts_before_it_cuts(monkeypatch: pytest.MonkeyPatch) -> None:
    # texts were cut to 500 characters where they were made and redacted where they were
    # stored: a secret across character 500 was stored as its first part
    monkeypatch.setattr(redaction, "_known", {})
    monkeypatch.setattr(redaction, "_pairs", ())
    redaction.register(["hunter2-very-secret-9"])
    text = "x" * 490 + "hunter2-very-secret-9 and more"
    assert redaction.quoted(text, 500) == "x" * 490 + "*** and mo"
    assert redaction.redact(text[:500]).endswith("hunter2-ve")  # what the old order stored
