"""The body of ``POST /api/v1/silences``, decoded strictly: every mistake is a 400 naming its field.

``{"model": "churn", "rule": "feature-drift", "duration": "2h" | "until": RFC 3339,
"comment": "…", "created_by": "…"}``; ``model`` and ``rule`` may be omitted or null
(a silence for every model / rule). Unknown fields, a JSON list, wrong types,
strings over their length cap, malformed or deeply nested JSON are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import msgspec

from monitor.web.requests import ApiError

#: longest model/rule name and created_by accepted (characters)
NAME_MAX = 200
#: longest comment accepted (characters)
COMMENT_MAX = 2000

Name = Annotated[str, msgspec.Meta(max_length=NAME_MAX)]


class SilenceBody(msgspec.Struct, forbid_unknown_fields=True):
    model: Name | None = None
    rule: Name | None = None
    until: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    duration: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    comment: Annotated[str, msgspec.Meta(max_length=COMMENT_MAX)] = ""
    created_by: Name = ""


@dataclass(frozen=True)
class SilenceRequest:
    model: str | None
    rule: str | None
    until: datetime
    comment: str
    created_by: str


def parse_silence(body: bytes, *, now: datetime) -> SilenceRequest:
    """Decode and check a silence request; raises :class:`ApiError` (400) naming the field."""
    try:
        req = msgspec.json.decode(body, type=SilenceBody)
    except msgspec.ValidationError as exc:
        # e.g. "Expected `str`, got `int` - at `$.comment`", "Object contains unknown field `x`"
        raise ApiError(400, f"bad silence: {exc}") from None
    except msgspec.DecodeError:
        raise ApiError(400, "body must be a JSON object") from None
    from monitor.config import parse_duration  # noqa: PLC0415

    if req.until is not None:
        try:
            until = datetime.fromisoformat(req.until.replace("Z", "+00:00")).astimezone(UTC)
        except (ValueError, OverflowError):
            raise ApiError(400, 'bad silence: "until" must be an RFC 3339 time like "2026-11-24T09:00:00Z"') from None
    elif req.duration is not None:
        try:
            until = now + parse_duration(req.duration)
        except (ValueError, OverflowError):
            raise ApiError(400, 'bad silence: "duration" must be a duration like "2h" (and not absurdly long)') from None
    else:
        raise ApiError(400, 'bad silence: give "until" (RFC 3339) or "duration" (like "2h")')
    return SilenceRequest(req.model, req.rule, until, req.comment, req.created_by)
