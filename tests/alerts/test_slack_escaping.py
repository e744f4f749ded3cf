"""Values from the stream render inert in Slack: no mention, no link, no formatting
outside their own code span, whatever a producer puts in a version or segment."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from alerts.notifiers.slack import SlackNotifier
from alerts.notifiers.slack_blocks import code, inert, link, render_blocks, render_text
from alerts.outbox import DeliveryWorker
from alerts.payloads import WindowContext
from alerts.rules import Rule
from monitor.demo.sinks import SlackStandIn
from tests.alerts.conftest import Feed, make_engine, rng

VERSION = "v1`<!channel>`"
SEGMENT = "region=<http://evil|x>"
COLUMN = "*age*_~x~&`"
WINDOW_ID = f"churn|{VERSION}|{SEGMENT}|2026-11-23T14:00:00.000Z|2026-11-23T14:15:00.000Z"
RULE = Rule("col-drift", "drifted", "==", 1, column="*", segment="*", version="*")


def hostile_message(store, clock):
    with SlackStandIn() as slack:
        n = SlackNotifier("slack", "xoxb-test", "C0ML", base_url=slack.url)
        f = Feed(make_engine(store, clock, (RULE,), {"slack": n}), store, clock)
        f.context = WindowContext(
            links={"report": f"http://127.0.0.1:9308/api/v1/models/churn/windows/{WINDOW_ID}/report"}
        )
        f.window(
            columns={COLUMN: (0.3, True)},
            drifted=[(COLUMN, "wasserstein", 0.3)],
            version=VERSION,
            segment=SEGMENT,
        )
        DeliveryWorker(store, {"slack": n}, clock, rng()).run_once()
        [msg] = slack.messages
        return msg


def test_hostile_version_segment_and_column_render_inert(store, clock):
    msg = hostile_message(store, clock)
    header, fields, line, drifted, links, context = msg.blocks
    # plain_text is never parsed for mentions or links
    assert header["text"] == {
        "type": "plain_text",
        "text": ":large_orange_circle: WARNING · churn · col-drift",
        "emoji": True,
    }
    assert [f["text"] for f in fields["fields"]] == [
        "*Model*\n`churn`",
        "*Version*\n`v1ˋ&lt;!channel&gt;ˋ`",
        "*Severity*\nwarning",
        "*Window*\n2026-11-23T14:00:00.000Z → 2026-11-23T14:15:00.000Z\n1000 rows",
        "*Firing since*\n2026-11-23T14:15:00.000Z",
    ]
    assert line["text"]["text"] == (
        "*col-drift* (column `*age*_~x~&amp;ˋ`, segment `region=&lt;http://evil|x&gt;`,"
        " version `v1ˋ&lt;!channel&gt;ˋ`): drift detected"
    )
    assert drifted["text"]["text"] == "*Top drifted columns*\n• `*age*_~x~&amp;ˋ` — wasserstein 0.3"
    # the window id inside the report URL can neither end nor split the link
    assert links["text"]["text"] == (
        "<http://127.0.0.1:9308/api/v1/models/churn/windows/churn%7Cv1%60%3C!channel%3E%60"
        "%7Cregion=%3Chttp://evil%7Cx%3E%7C2026-11-23T14:00:00.000Z%7C2026-11-23T14:15:00.000Z"
        "/report|HTML report>"
    )
    assert context["elements"][0]["text"].startswith("driftwarden · msg_")
    # the fallback text (rendered as mrkdwn by clients without blocks) is inert too
    assert msg.text == "WARNING · churn · col-drift\n- col-drift [∗age∗ˍ∼x∼&amp;ˋ]: drift detected"


def mrkdwn_texts(blocks) -> list[str]:
    out = []
    for b in blocks:
        if b["type"] == "header":
            continue
        if "text" in b:
            out.append(b["text"]["text"])
        out += [f["text"] for f in b.get("fields", [])]
        out += [e["text"] for e in b.get("elements", [])]
    return out


def test_helpers_exact():
    assert code("a`b") == "`aˋb`"
    assert code("<!here>") == "`&lt;!here&gt;`"
    assert code("") == "`(empty)`"
    assert code("x\ny\x1b[2J") == "`x y [2J`"
    assert code("v" * 500) == "`" + "v" * 199 + "…`"
    assert inert("feature_drift") == "feature_drift"
    assert inert("_x_ *y* ~z~ `w`") == "ˍxˍ ∗y∗ ∼z∼ ˋwˋ"
    assert inert("<@U123> & <#C1|general>") == "&lt;@U123&gt; &amp; &lt;#C1|general&gt;"
    assert link("http://h/a b|c>d", "x|y*") == "<http://h/a%20b%7Cc%3Ed|x¦y∗>"
    assert link("http://h/?a=1&b=2", "API") == "<http://h/?a=1&amp;b=2|API>"


SPECIALS = "`*_~<>&|:!@#\n\x1b"


@given(
    version=st.text(alphabet=st.sampled_from(SPECIALS + "ab"), max_size=30),
    segment=st.text(alphabet=st.sampled_from(SPECIALS + "cd"), max_size=30),
    column=st.text(alphabet=st.sampled_from(SPECIALS + "ef"), min_size=1, max_size=30),
)
def test_no_value_can_open_a_link_mention_or_unbalance_a_span(version, segment, column):
    alert = {
        "id": "alr_1", "rule": "r", "model": "churn", "version": version, "segment": segment,
        "column": column, "metric": "drifted", "op": "==", "value": 1.0, "threshold": 1.0,
        "severity": "warning", "labels": {"version": version},
    }  # fmt: skip
    payload = {
        "id": "msg_1",
        "alerts": [alert],
        "window": {"start": segment, "end": version, "rows": 10},
        "drifted_columns": [{"column": column, "test": segment, "score": 0.5}],
        "links": {"report": f"http://h/{version}/{segment}"},
    }
    blocks = render_blocks(payload, "firing")
    assert "\n" not in blocks[2]["text"]["text"]  # one alert, one line: no value adds lines
    for text in [*mrkdwn_texts(blocks), render_text(payload, "firing")]:
        # only the link we build has < and >: exactly one pair, around our own URL
        assert text.count("<") == text.count(">") == (1 if text.startswith("<http://h/") else 0)
        assert "\x1b" not in text
        for line in text.split("\n"):
            assert line.count("`") % 2 == 0  # every code span is closed where it was opened
