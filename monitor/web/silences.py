"""The body of ``POST /api/v1/silences``, decoded strictly: every mistake is a 400 naming its field.

``{"model": "churn", "rule": "feature-drift", "duration": "2h" | "until": RFC 3339,
"comment": "…", "created_by": "…"}``; one of ``model`` and ``rule`` may be omitted or
null (a silence for every model / rule), not both (as ``driftwarden silence add``).
Unknown fields, a JSON list, wrong types, strings over their length cap, malformed or
deeply nested JSON, both ``until`` and ``duration``, an end in the past, and a model or
rule the config does not have are refused.
"""

from __future__ import annotations

from collections.abc import Collection
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


def parse_silence(
    body: bytes, *, now: datetime, models: Collection[str], rules: Collection[str]
) -> SilenceRequest:
    """Decode and check a silence request against the config's ``models`` and ``rules``;
    raises :class:`ApiError` (400) naming the field."""
    try:
        req = msgspec.json.decode(body, type=SilenceBody)
    except msgspec.ValidationError as exc:
        # e.g. "Expected `str`, got `int` - at `$.comment`", "Object contains unknown field `x`"
        raise ApiError(400, f"bad silence: {exc}") from None
    except msgspec.DecodeError:
        raise ApiError(400, "body must be a JSON object") from None
    from monitor.config import parse_duration  # noqa: PLC0415

    if req.until is not None and req.duration is not None:
        raise ApiError(400, 'bad silence: give either "until" or "duration", not both')
    if req.until is not None:
        try:
            until = datetime.fromisoformat(req.until.replace("Z", "+00:00"))
            # without an offset: UTC, as `driftwarden silence add --until` reads it (astimezone
            # took it as the daemon's local time: hours off on a host not set to UTC)
            until = until.replace(tzinfo=UTC) if until.tzinfo is None else until.astimezone(UTC)
        except (ValueError, OverflowError):
            raise ApiError(400, 'bad silence: "until" must be an RFC 3339 time like "2026-11-24T09:00:00Z"') from None
    elif req.duration is not None:
        try:
            until = now + parse_duration(req.duration)
        except (ValueError, OverflowError):
            raise ApiError(400, 'bad silence: "duration" must be a duration like "2h" (and not absurdly long)') from None
    else:
        raise ApiError(400, 'bad silence: give "until" (RFC 3339) or "duration" (like "2h")')
    if until <= now:
        raise ApiError(400, 'bad silence: it ends in the past; give a later "until" or a positive "duration"')
    if req.model is None and req.rule is None:
        raise ApiError(400, 'bad silence: give "model" and/or "rule" (a silence of everything is not allowed)')
    if req.model is not None and req.model not in models:
        raise ApiError(400, f"bad silence: unknown model {_quoted(req.model)}; the config's models:"
                            f" {', '.join(sorted(models)) or '(none)'}")
    if req.rule is not None and req.rule not in rules:
        raise ApiError(400, f"bad silence: unknown rule {_quoted(req.rule)}; the config's rules:"
                            f" {', '.join(sorted(rules)) or '(none)'}")
    return SilenceRequest(req.model, req.rule, until, req.comment, req.created_by)


def _quoted(name: str) -> str:
    """A name from the request as an error may show it: quoted, control characters escaped, cut."""
    from storage.text import log_text  # noqa: PLC0415

    return f'"{log_text(name, 80)}"'
