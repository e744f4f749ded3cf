"""A CSV or Parquet row becomes its message in one pass over its cells
(``MessageShaper.csv_message``, ``table_message``) where the columns allow: the same
message as the generic path (a dict of the row, routed, then typed), keys in the same
order, so the same bytes, for every header, layout and option; and a cell is a number by the one-match ``text_number`` exactly when
it was before."""

from __future__ import annotations

import math
import re
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from monitor.config import Config, load_config
from monitor.demo.data import write_reference_csv
from monitor.service.replay_messages import MessageShaper, text_number

MODELS = """
[daemon]
state_dir = "state"

[kafka]
bootstrap_servers = ["127.0.0.1:9"]
predictions_topic = "t"

[[models]]
name = "churn"
reference = "reference.csv"
segments = ["region"]
[models.fields]
latency = "lat"
[models.features]
numerical = ["age", "tenure_days", "monthly_charges"]
categorical = ["plan", "region"]

[[models]]
name = "flat"
reference = "reference.csv"
layout = "flat"
[models.fields]
latency = "lat"
[models.features]
numerical = ["age", "tenure_days", "monthly_charges"]
categorical = ["plan", "region"]
"""

#: column names: envelope fields, nested and flat features, segments, the object columns
#: the one-pass path leaves to the generic one, a prefixed envelope name, unknown ones
NAMES = ["model", "event_id", "ts", "prediction", "lat", "version", "age", "plan", "region", "features.age",
         "features.plan", "features.region", "features.ts", "features.model", "segment.region", "features",
         "segment", "meta.at", "other"]
#: cells: empty (absent), numbers in every form, text, the models (and one not configured)
CELLS = ["", "12", "1.5", "-0", "007", " 3 ", "1e999", "1_000", "nan", "abc", "churn", "flat", "nope",
         "99999999999999999999", "2026-01-05T12:00:00Z"]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    folder = tmp_path_factory.mktemp("conf")
    write_reference_csv(str(folder / "reference.csv"), n=200, seed=7)
    (folder / "config.toml").write_text(MODELS)
    return load_config(folder / "config.toml")


def _shaper(config: Config, force: str | None, default: str | None, time_column: str | None) -> MessageShaper:
    return MessageShaper(config, model_field=config.model_field, time_column=time_column, force_model=force,
                         default_model=default)


@st.composite
def _rows(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    header = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=9, unique=draw(st.booleans())))
    rows = draw(st.lists(st.lists(st.sampled_from(CELLS), min_size=len(header), max_size=len(header)),
                         min_size=1, max_size=4))
    return header, rows


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# unprefixed features before the model column, out of the config's order, beside prefixed ones
@example((["plan", "age", "model", "features.age", "lat", "segment.region"],
          [["pro", " 3 ", "churn", "12", "1.5", "us"], ["", "007", "", "", "x", ""]]), None, "churn", None)
@example((["features.ts", "features.model", "age", "prediction", "region"],
          [["12", "churn", "1.5", "0.5", "eu"], ["", "", "", "", ""]]), "flat", None, None)
@given(_rows(), st.sampled_from([None, "churn", "flat", "nope"]), st.sampled_from([None, "churn", "flat"]),
       st.sampled_from([None, "ts", "meta.at"]))
def test_the_one_pass_csv_message_is_the_generic_one(
    config: Config, header_rows: tuple[list[str], list[list[str]]], force: str | None, default: str | None,
    time_column: str | None,
) -> None:
    header, rows = header_rows
    fast = _shaper(config, force, default, time_column)
    generic = _shaper(config, force, default, time_column)
    for cells in rows:
        want = generic.message({k: v for k, v in zip(header, cells, strict=True) if v != ""}, table=True, text=True)
        got = fast.csv_message(header, cells)
        assert list(got) == list(want)  # the same keys in the same order
        assert orjson.dumps(got) == orjson.dumps(want)  # the same message, byte for byte


#: Parquet values: nulls, numbers, text, the models (one not configured, one not text),
#: struct values (for the features and segment columns, or anywhere)
VALUES = [None, 12, 1.5, "abc", "churn", "flat", "nope", 5, {"age": 3, "plan": "pro"}, {}, {"region": "eu"}]


@st.composite
def _table(draw: st.DrawFn) -> tuple[list[str], list[tuple[Any, ...]]]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=9, unique=draw(st.booleans())))
    rows = draw(st.lists(st.tuples(*[st.sampled_from(VALUES)] * len(names)), min_size=1, max_size=4))
    return names, rows


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# the usual nested export: struct columns; a flattened one beside unprefixed features
@example((["event_id", "model", "ts", "features", "prediction", "segment"],
          [("e", "churn", 12, {"age": 3, "plan": "pro"}, 1.5, {"region": "eu"}), ("e", None, 12, None, None, None)]),
         None, "churn", None)
@example((["plan", "age", "model", "features.age", "lat", "segment.region", "features.plan"],
          [("pro", 12, "churn", 1.5, None, "us", None), (None, 5, None, None, "x", None, "abc")]), None, "flat", None)
# a features struct beside an unprefixed feature it holds too; a segment struct and a segment column
@example((["features", "age", "model", "segment", "segment.region"],
          [({"age": 3}, 12, "churn", {"region": "eu", "x": 1}, "us"), ({}, 12, "churn", "abc", "us")]), None, None, None)
@example((["segment", "segment.region", "model", "features.age"],
          [({"region": "eu", "x": 1}, "us", "churn", 3), ("abc", "us", "churn", None)]), None, None, None)
@given(_table(), st.sampled_from([None, "churn", "flat", "nope"]), st.sampled_from([None, "churn", "flat"]),
       st.sampled_from([None, "ts", "meta.at"]))
def test_the_one_pass_parquet_message_is_the_generic_one(
    config: Config, table: tuple[list[str], list[tuple[Any, ...]]], force: str | None, default: str | None,
    time_column: str | None,
) -> None:
    names, rows = table
    fast = _shaper(config, force, default, time_column)
    generic = _shaper(config, force, default, time_column)
    for values in rows:
        want = generic.message(dict(zip(names, values, strict=True)), table=True)
        got = fast.table_message(names, values)
        assert orjson.dumps(got) == orjson.dumps(want)  # the same message, keys in the same order


def test_the_usual_header_takes_the_one_pass_path(config: Config) -> None:
    """The premise of the comparison above: a flattened export's header is built in one pass."""
    header = ["event_id", "model", "ts", "prediction", "features.age", "features.plan", "segment.region"]
    shaper = _shaper(config, None, None, None)
    msg = shaper.csv_message(header, ["e1", "churn", "1767614400000", "0.25", "51", "pro", "us"])
    assert shaper._csv is not None and shaper._csv._columns["churn"] is not None
    assert msg == {"event_id": "e1", "model": "churn", "ts": 1767614400000, "prediction": 0.25,
                   "features": {"age": 51, "plan": "pro"}, "segment": {"region": "us"}}
    nested = ["event_id", "model", "ts", "prediction", "features", "segment"]
    msg = shaper.table_message(nested, ["e1", "churn", 1, 0.5, {"age": 51.0}, {"region": "us"}])
    assert shaper._table is not None and shaper._table._columns["churn"] is not None
    assert msg == {"event_id": "e1", "model": "churn", "ts": 1, "prediction": 0.5, "features": {"age": 51.0},
                   "segment": {"region": "us"}}


# the definition before the one-match version: the oracle
_OLD_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")


def _old_text_number(text: str) -> Any:
    s = text.strip()
    if not _OLD_NUMBER.fullmatch(s):
        return text
    if "." not in s and "e" not in s and "E" not in s:
        n = int(s)
        return n if -(1 << 63) <= n < (1 << 63) else float(n)
    v = float(s)
    return v if math.isfinite(v) else text


@settings(max_examples=1000)
@given(st.text(alphabet=st.sampled_from(list("0123456789-+.eE _xnaif \t\n\r\u00a0\u2003\u0663")), max_size=12))
def test_text_number_reads_what_it_read_before(text: str) -> None:
    want, got = _old_text_number(text), text_number(text)
    assert type(got) is type(want) and got == want


@pytest.mark.parametrize("text", ["1", "-0", "007", "1.", ".5", "1e5", "1E+5", "-1.5e-3", "nan", "inf", " 12 ",
                                  "\u00a012\u2003", "1_000", "+1", "1e999", "99999999999999999999", "12\n", "1 2"])
def test_text_number_cases(text: str) -> None:
    want, got = _old_text_number(text), text_number(text)
    assert type(got) is type(want) and got == want
