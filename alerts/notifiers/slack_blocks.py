"""Block Kit rendering of alert notifications, within Slack's limits.

Limits respected (https://docs.slack.dev/reference/block-kit/blocks): at most
50 blocks per message, section text <= 3000 characters, header text <= 150,
at most 10 section fields of <= 2000 characters, at most 10 context elements.
The plain ``text`` fallback (notifications, screen readers) stays under 3000.

Every value that comes from the stream or the store is escaped where it is
rendered (values from the stream are hostile): model, version, segment and
column names go into code spans (:func:`code`), other text is made inert
(:func:`inert`), links are built by :func:`link`. Nothing a producer sends can
become a mention (``<!channel>``), a link, or formatting outside its own span.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from storage.records import parse_iso
from storage.scores import duration_text, score_text
from storage.text import CONTROL

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_FALLBACK_TEXT = 3000
#: alerts listed one per line in a message; the rest are counted
MAX_ALERT_LINES = 50
#: versions named in the Version field; the rest are counted
MAX_VERSIONS = 10

#: longest value from the stream shown in a message (characters); longer ones end in "…"
MAX_VALUE_CHARS = 200

LINK_NAMES = {"report": "HTML report", "api": "HTTP API"}
_LOOKALIKES = str.maketrans({"*": "∗", "~": "∼", "`": "ˋ"})
_EDGE_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")
# kept as they are in link URLs; everything else (<, >, |, space, ", `, ...) is %-encoded
_URL_SAFE = ":/?#[]@!$&'()*+,;=%-._~"
_ICON = {"critical": ":red_circle:", "warning": ":large_orange_circle:"}


def _clean(value: object) -> str:
    """``value`` as one line of printable text, at most :data:`MAX_VALUE_CHARS` long."""
    text = CONTROL.sub(" ", str(value))
    return _cut(text, MAX_VALUE_CHARS)


def esc(text: object) -> str:
    """Escape Slack's control characters ``&``, ``<``, ``>`` (so no value becomes a
    link, a mention such as ``<!channel>``, or a broken tag), one line."""
    return (
        CONTROL.sub(" ", str(text)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    )


def code(value: object) -> str:
    """A value from the stream (model, version, segment, column) as an inline code
    span, where ``*``, ``_``, ``~`` and ``:emoji:`` are shown as typed. A backtick
    would end the span early: it is shown as the look-alike ``ˋ`` (U+02CB).
    Cut to :data:`MAX_VALUE_CHARS`; an empty value shows as ``(empty)``."""
    text = _clean(value).replace("`", "ˋ")
    return f"`{esc(text)}`" if text.strip() else "`(empty)`"


def inert(value: object) -> str:
    """A value shown outside a code span (e.g. in bold): escaped, and with the
    mrkdwn formatting characters replaced by look-alikes (``*`` ``∗``, ``~`` ``∼``,
    a backtick ``ˋ``, and ``_`` ``ˍ`` where it could start or end italics, i.e.
    not between two letters or digits), so it can neither format nor unbalance
    the text around it. ``feature_drift`` stays as it is."""
    text = esc(_clean(value)).translate(_LOOKALIKES)
    return _EDGE_UNDERSCORE.sub("ˍ", text)


def link(url: object, label: object) -> str:
    """``<url|label>``: characters that would end or split the link (``<``, ``>``,
    ``|``, spaces, quotes, backticks) are percent-encoded in the URL; the label
    is :func:`inert` with ``|`` shown as ``¦``."""
    safe_url = quote(CONTROL.sub("", str(url)), safe=_URL_SAFE)
    return f"<{safe_url.replace('&', '&amp;')}|{inert(label).replace('|', '¦')}>"


def fmt(value: object) -> str:
    """A number for display (floats to 4 significant digits); anything else :func:`inert`."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return str(value)
    return inert(value)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _severity(alerts: Sequence[Mapping[str, Any]]) -> str:
    return "critical" if any(a.get("severity") == "critical" for a in alerts) else "warning"


def headline(
    payload: Mapping[str, Any], kind: str, show: Callable[[object], str] = _clean
) -> str:
    """``CRITICAL · churn · feature-drift`` style title; ``show`` renders the model
    and rule (plain text for the header block, :func:`inert` for mrkdwn)."""
    alerts = payload.get("alerts") or []
    sev = _severity(alerts).upper()
    group = payload.get("group") or {}
    model = group.get("model") or (alerts[0].get("model") if alerts else "")
    rules = sorted({str(a.get("rule")) for a in alerts})
    rule = show(rules[0]) if len(rules) == 1 else f"{len(rules)} rules"
    if kind == "resolved":
        prefix = f"RESOLVED ({sev.lower()})"
    elif kind == "reminder":
        prefix = f"STILL FIRING ({sev.lower()})"
    else:
        prefix = sev
    return f"{prefix} · {show(model)} · {rule}" + (
        f" · {len(alerts)} alerts" if len(alerts) > 1 else ""
    )


def alert_line(alert: Mapping[str, Any], resolved: bool = False, kind: str = "firing") -> str:
    """One alert as a mrkdwn line: rule, metric (column, segment), value vs threshold.

    ``kind="resolved"`` words it as a recovery; ``resolved=True`` strikes the
    line through (an updated firing message)."""
    where = []
    if alert.get("column"):
        where.append(f"column {code(alert['column'])}")
    if alert.get("segment"):
        where.append(f"segment {code(alert['segment'])}")
    version = (alert.get("labels") or {}).get("version")
    if version:
        where.append(f"version {code(version)}")
    place = f" ({', '.join(where)})" if where else ""
    metric = alert.get("metric")
    op = inert(alert.get("op") or "vs")
    if metric == "no_data":
        if kind == "resolved":
            cmp = "data is flowing again"
        else:
            cmp = (
                f"no data for *{duration_text(alert.get('value'))}*"
                f" (limit {duration_text(alert.get('threshold'))})"
            )
    elif metric == "drifted":
        cmp = "no longer drifted" if kind == "resolved" else "drift detected"
    elif kind == "resolved":
        cmp = (
            f"{code(metric)} back to *{fmt(alert.get('value'))}*"
            f" (fires when {op} {fmt(alert.get('threshold'))})"
        )
    else:
        cmp = f"{code(metric)} = *{fmt(alert.get('value'))}* {op} {fmt(alert.get('threshold'))}"
    line = f"*{inert(alert.get('rule'))}*{place}: {cmp}{reference_text(alert)}"
    if resolved:
        line = f":white_check_mark: ~{line}~ resolved"
    return line


def reference_text(alert: Mapping[str, Any]) -> str:
    """`` · reference 0.83``: the reference data's own value of the alert's figure (the
    payload's ``reference``), the baseline its value is read against; empty when there is
    none (drift scores, no-data alerts) or it is not a finite number."""
    ref = alert.get("reference")
    if isinstance(ref, bool) or not isinstance(ref, int | float) or not math.isfinite(ref):
        return ""
    return f" · reference {fmt(float(ref))}"


def _when_field(alerts: Sequence[Mapping[str, Any]], kind: str) -> str | None:
    """The *Firing since* field (the earliest ``fired_at`` of the message's alerts, UTC as
    stored); for a resolution *Fired* with when it resolved and after how long. None when
    no alert has fired (a payload from elsewhere)."""
    fired = sorted(str(a["fired_at"]) for a in alerts if a.get("fired_at"))
    if not fired:
        return None
    if kind != "resolved":
        return f"*Firing since*\n{inert(fired[0])}"
    resolved = sorted(str(a["resolved_at"]) for a in alerts if a.get("resolved_at"))
    if not resolved:
        return f"*Fired*\n{inert(fired[0])}"
    try:
        lasted = (parse_iso(resolved[-1]) - parse_iso(fired[0])).total_seconds()
    except ValueError:
        return f"*Fired*\n{inert(fired[0])}\nresolved {inert(resolved[-1])}"
    return f"*Fired*\n{inert(fired[0])}\nresolved {inert(resolved[-1])} (after {duration_text(lasted)})"


def _window_field(window: Mapping[str, Any], alerts: Sequence[Mapping[str, Any]], kind: str) -> str | None:
    """The *Window* field: the window judged and its rows. For a message of no-data alerts
    only, whose "window" is the silence (last data → now), *Last data* with when the model
    last sent rows; nothing on their resolution (*Fired* says how long it lasted)."""
    if alerts and all(a.get("metric") == "no_data" for a in alerts):
        if kind == "resolved":
            return None
        return f"*Last data*\n{inert(window.get('start') or 'n/a')}"
    return (
        f"*Window*\n{inert(window.get('start') or 'n/a')} → {inert(window.get('end') or 'n/a')}"
        + (f"\n{fmt(window.get('rows'))} rows" if window.get("rows") is not None else "")
    )


def _sections_from_lines(lines: Sequence[str], max_sections: int) -> list[dict[str, Any]]:
    """Pack lines into as few sections as fit 3000 characters, at most ``max_sections``."""
    blocks: list[dict[str, Any]] = []
    current: list[str] = []
    size = 0
    dropped = 0
    for i, line in enumerate(lines):
        line = _cut(line, MAX_SECTION_TEXT)
        if current and size + 1 + len(line) > MAX_SECTION_TEXT:
            if len(blocks) + 1 >= max_sections:
                dropped = len(lines) - i
                break
            blocks.append(_section("\n".join(current)))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        if dropped:
            tail = f"\n…and {dropped} more"
            text = "\n".join(current)
            blocks.append(_section(_cut(text, MAX_SECTION_TEXT - len(tail)) + tail))
        else:
            blocks.append(_section("\n".join(current)))
    return blocks


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, MAX_SECTION_TEXT)}}


def render_blocks(
    payload: Mapping[str, Any], kind: str, resolved_ids: Collection[str] = ()
) -> list[dict[str, Any]]:
    """The Block Kit blocks of a notification payload (see ``alerts.payloads``).

    ``resolved_ids`` marks alerts of a firing message as resolved (used when
    the original message is updated after a resolution)."""
    alerts = list(payload.get("alerts") or [])
    all_resolved = bool(alerts) and all(a.get("id") in resolved_ids for a in alerts)
    shown_kind = "resolved" if (kind == "resolved" or all_resolved) else kind
    icon = ":white_check_mark:" if shown_kind == "resolved" else _ICON[_severity(alerts)]
    if kind == "reminder":
        icon = ":bell:"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                # plain_text: shown as typed, never parsed for links or mentions
                "text": _cut(f"{icon} {headline(payload, shown_kind)}", MAX_HEADER_TEXT),
                "emoji": True,
            },
        }
    ]
    window = payload.get("window") or {}
    first = alerts[0] if alerts else {}
    versions = sorted({str(a.get("version")) for a in alerts if a.get("version")})
    fields = [
        f"*Model*\n{code(first.get('model', ''))}",
        f"*Version*\n{', '.join(code(v) for v in versions[:MAX_VERSIONS]) or 'n/a'}"
        + (f" and {len(versions) - MAX_VERSIONS} more" if len(versions) > MAX_VERSIONS else ""),
        f"*Severity*\n{_severity(alerts)}",
        *[f for f in (_window_field(window, alerts, shown_kind), _when_field(alerts, shown_kind)) if f],
    ]
    blocks.append(
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": _cut(f, MAX_FIELD_TEXT)} for f in fields[:MAX_FIELDS]
            ],
        }
    )
    drifted = list(payload.get("drifted_columns") or [])
    links = payload.get("links") or {}
    reserved = 2 + (1 if drifted else 0) + (1 if links else 0) + 1
    lines = [
        alert_line(a, a.get("id") in resolved_ids and kind != "resolved", kind)
        for a in alerts[:MAX_ALERT_LINES]
    ]
    if len(alerts) > MAX_ALERT_LINES:
        lines.append(f"…and {len(alerts) - MAX_ALERT_LINES} more alerts")
    blocks.extend(_sections_from_lines(lines, MAX_BLOCKS - reserved))
    if drifted:
        dl = [
            f"• {code(d.get('column'))} — {inert(_score(d))}"
            for d in drifted
        ]
        blocks.extend(_sections_from_lines(["*Top drifted columns*", *dl], 1))
    if links:
        parts = [link(url, LINK_NAMES.get(name, name)) for name, url in links.items() if url]
        if parts:
            blocks.append(_section(" · ".join(parts)))
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"driftwarden · {inert(payload.get('id', ''))}"}],
        }
    )
    return enforce_limits(blocks)


def _score(drifted: Mapping[str, Any]) -> str:
    """A drifted column's score named by its statistic (``ks p=1.1e-19``, ``wasserstein
    0.312``): a p-value and a distance read alike as bare numbers. A score that is not a
    number (a payload from elsewhere) is shown as it is."""
    test, score = drifted.get("test"), drifted.get("score")
    name = str(test) if test else None
    if score is None or (isinstance(score, int | float) and not isinstance(score, bool)):
        return score_text(name, None if score is None else float(score))
    return f"{name} {score}" if name else str(score)


def render_text(payload: Mapping[str, Any], kind: str) -> str:
    """The plain-text fallback: headline and one line per alert. Slack may render
    it as mrkdwn (clients without blocks), so values are :func:`inert` here too."""
    alerts = list(payload.get("alerts") or [])
    lines = [headline(payload, kind, show=inert)]
    for a in alerts[:20]:
        col = f" [{inert(a['column'])}]" if a.get("column") else ""
        if a.get("metric") == "no_data":
            what = (
                "data flowing again"
                if kind == "resolved"
                else f"no data for {duration_text(a.get('value'))}"
            )
        elif a.get("metric") == "drifted":
            what = "no longer drifted" if kind == "resolved" else "drift detected"
        elif kind == "resolved":
            what = f"{inert(a.get('metric'))} back to {fmt(a.get('value'))}"
        else:
            what = (
                f"{inert(a.get('metric'))} = {fmt(a.get('value'))}"
                f" {inert(a.get('op') or 'vs')} {fmt(a.get('threshold'))}{reference_text(a)}"
            )
        lines.append(f"- {inert(a.get('rule'))}{col}: {what}")
    if len(alerts) > 20:
        lines.append(f"…and {len(alerts) - 20} more")
    return _cut("\n".join(lines), MAX_FALLBACK_TEXT)


def enforce_limits(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Last line of defence: cut texts and drop blocks beyond Slack's limits
    (keeping the final context block)."""
    out = []
    for b in blocks:
        b = dict(b)
        if b.get("type") == "header":
            b["text"] = {**b["text"], "text": _cut(b["text"]["text"], MAX_HEADER_TEXT)}
        elif b.get("type") == "section":
            if "text" in b:
                b["text"] = {**b["text"], "text": _cut(b["text"]["text"], MAX_SECTION_TEXT)}
            if "fields" in b:
                b["fields"] = [
                    {**f, "text": _cut(f["text"], MAX_FIELD_TEXT)} for f in b["fields"][:MAX_FIELDS]
                ]
        elif b.get("type") == "context":
            b["elements"] = b["elements"][:MAX_CONTEXT_ELEMENTS]
        out.append(b)
    if len(out) > MAX_BLOCKS:
        out = out[: MAX_BLOCKS - 1] + [out[-1]]
    return out
