"""A reload to or from ``log_level = "debug"`` ends as a start at that level would: above
debug kafka-python's repeated lines are collapsed, at debug every one shows. The reload
goes through the daemon's own path (:func:`monitor.service.reload.prepare_reload` and
``apply``, what SIGHUP runs between polls) on a real daemon; the lines through the real
handler :func:`monitor.logs.setup_logging` installs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.config import load_config
from monitor.logs import setup_logging
from monitor.service.daemon import Daemon
from monitor.service.reload import prepare_reload
from tests.store_targets import state_storage_toml

#: one kind of line, as the client writes it at every failed attempt
REFUSED = "Connection failed: KafkaConnectionError: 111 ECONNREFUSED"


def _config(folder: Path, level: str) -> Path:
    (folder / "ref.csv").write_text("x,prediction\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    path = folder / "driftwarden.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "state"\nlog_level = "{level}"\n'
        '[kafka]\nbootstrap_servers = ["127.0.0.1:9"]\npredictions_topic = "p"\n'
        '[[models]]\nname = "m"\nreference = "ref.csv"\n[models.features]\nnumerical = ["x"]\n'
        + state_storage_toml(folder / "state")
    )
    return path


@pytest.fixture
def saved_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("kafka").level
    try:
        yield
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("kafka").setLevel(saved[2])


def _shown_of_three(capsys: pytest.CaptureFixture[str]) -> int:
    """How many of three identical client warnings reach the output."""
    capsys.readouterr()
    for _ in range(3):
        logging.getLogger("kafka.net.manager").warning(REFUSED)
    return capsys.readouterr().err.count(REFUSED)


def _reload(daemon: Daemon, path: Path, level: str) -> None:
    text = path.read_text()
    start = text.index("log_level = ")
    path.write_text(text[:start] + f'log_level = "{level}"' + text[text.index("\n", start):])
    prepare_reload(daemon, path).apply(daemon)
    assert daemon.config.daemon.log_level == level


@pytest.mark.parametrize(("start", "then"), [("info", "debug"), ("debug", "warning")])
def test_a_reload_to_or_from_debug_does_what_a_start_at_that_level_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], saved_logging: None, start: str, then: str
) -> None:
    """Before, the collapsing was decided at start-up only: a reload to debug still held
    back the repeats, a reload from debug never started collapsing them."""
    path = _config(tmp_path, start)
    setup_logging(start, "text")
    daemon = Daemon(load_config(path), http=False, config_path=path)
    try:
        expected = {"debug": 3, "info": 1, "warning": 1}
        assert _shown_of_three(capsys) == expected[start]
        _reload(daemon, path, then)
        assert _shown_of_three(capsys) == expected[then]
        _reload(daemon, path, start)  # and back again
        assert _shown_of_three(capsys) == expected[start]
    finally:
        daemon.close()
    (handler,) = logging.getLogger().handlers
    # the collapsing stays ahead of the redaction, which sees the line it writes
    assert [type(f).__name__ for f in handler.filters] == (
        ["RedactingFilter"] if start == "debug" else ["RepeatFilter", "RedactingFilter"]
    )
