"""Text from the stream as both stores keep it, and as people are shown it.

PostgreSQL ``text`` (and ``json``/``jsonb``) cannot hold the character U+0000 (NUL),
which a Kafka message can carry as JSON's ``\\u0000``: one such value in a statement
fails the whole transaction. Text from the stream is therefore cleaned before it is
stored, the same way on both stores:

- a value (event id, version, segment value, category, label) gets U+FFFD, the
  replacement character, for each NUL (:func:`without_nul`; one character for one,
  so length caps count the same);
- a dead letter's reason, which may quote the message, is stored :func:`printable`,
  as the command line shows it: ``\\x00``, ``\\n``, ``\\x1b``.

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


#: control characters (C0, DEL, C1) and the two Unicode line separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """``text`` with control characters and line separators as Python escapes (``\\n``,
    ``\\r``, ``\\x1b``, ``\\u2028``): one line that cannot drive a terminal. Text without
    any is returned as it is, after one scan in C."""
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)
