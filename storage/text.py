"""Text from the stream as both stores keep it, and as people are shown it.

PostgreSQL ``text`` (and ``json``/``jsonb``) cannot hold the character U+0000 (NUL),
which a Kafka message can carry as JSON's ``\\u0000``: one such value in a statement
fails the whole transaction. Text from the stream is therefore cleaned before it is
stored, the same way on both stores:

- a value (event id, version, segment value, category, label) gets U+FFFD, the
  replacement character, for each NUL (:func:`without_nul`; one character for one,
  so length caps count the same);
- a dead letter's reason, which may quote the message, is stored :func:`printable`,
  as the command line shows it: ``\\x00``, ``\\n``, ``\\x1b``;
- a segment value also gets U+FFFD for U+001F and U+FFFF (:func:`segment_text`), the
  label join's separator and missing mark inside ``label_predictions.segments``.

Whatever still carries a NUL to PostgreSQL is replaced the same way by the store
itself (:mod:`storage.postgres`), so no value can fail a transaction.
"""

from __future__ import annotations

import re

#: what a NUL in a stored value becomes (U+FFFD REPLACEMENT CHARACTER)
NUL_REPLACEMENT = "\ufffd"


def without_nul(text: str) -> str:
    """``text`` with each U+0000 replaced by :data:`NUL_REPLACEMENT`."""
    return text.replace("\x00", NUL_REPLACEMENT)


#: what the label join reserves inside ``label_predictions.segments``
#: (:data:`monitor.labels.figures.SEP` and ``ABSENT``), and NUL
_SEGMENT_RESERVED = str.maketrans({"\x00": NUL_REPLACEMENT, "\x1f": NUL_REPLACEMENT, "\uffff": NUL_REPLACEMENT})


def segment_text(text: str) -> str:
    """A segment value as both stores keep it: NUL, U+001F and U+FFFF each become
    :data:`NUL_REPLACEMENT` (one character for one). A value holding the join's separator
    was split there, and its rows counted in another segment's performance figures."""
    return text.translate(_SEGMENT_RESERVED)


def printable(text: str) -> str:
    """``text`` with control characters shown escaped: ``\\n``, ``\\t``, ``\\xNN`` (ESC, CR, ...),
    so a value from the stream can neither drive the terminal nor pass for two rows."""
    out = []
    for ch in text:
        if ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 32 or 127 <= ord(ch) < 160:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


#: control characters (C0, DEL, C1) and the two Unicode line separators: what no text from
#: the stream may carry into a log line, a terminal or a chat message
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """``text`` with control characters and line separators as Python escapes (``\\n``,
    ``\\r``, ``\\x1b``, ``\\u2028``): one line that cannot drive a terminal. Text without
    any is returned as it is, after one scan in C."""
    if CONTROL.search(text) is None:
        return text
    return CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


#: longest value from the stream a log line quotes (characters)
MAX_LOG_TEXT = 120


def log_text(value: object, limit: int = MAX_LOG_TEXT) -> str:
    """``value`` as a log line (or an error message) quotes it: one short line, control
    characters escaped (:func:`escape_controls`), at most ``limit`` characters."""
    text = escape_controls(str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"
