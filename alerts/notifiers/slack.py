"""Slack notifiers: a bot token posting with ``chat.postMessage`` (threads,
updates), or an incoming webhook (plain posts).

Bot mode: a firing group is posted to ``channel``; its channel and ``ts`` are
stored with the delivery. The resolution is posted in that message's thread
and the original message is updated (``chat.update``) to show which alerts
resolved; reminders are posted in the thread too (``reply_broadcast`` so the
channel sees them). Each message carries the notification id in its metadata
(``event_type: driftwarden_notification``).

Needed bot scopes: ``chat:write`` (and ``chat:write.public`` to post in
channels the app was not invited to).

Errors: HTTP 429 retries after ``Retry-After``; 408 / 5xx, network errors and
Slack's transient error codes retry; anything else (``invalid_auth``,
``channel_not_found``, ...) gives up.

slack-sdk builds the requests and reads Slack's answers; the requests themselves go
through :mod:`alerts.notifiers.http`, as webhooks do: each is bounded by ``timeout`` as
a whole (urllib's timeout is per read: an answer trickled byte by byte held the Slack
lane for ever), and an answer longer than :data:`MAX_ANSWER_BYTES` is not read (it is
retried, like a lost connection). The notifier parses each answer once and hands
slack-sdk the value: a ``200`` answer that is JSON but not an object, or nested too deep
to parse, is not Slack's and is retried; an error status with one is judged by its status.
A posted message's ``ts`` and ``channel`` are stored and sent back later: an answer whose
``ts`` is not like Slack's (``1700000000.123456``) or whose ``channel`` is not a short
name is not Slack's, and is retried, nothing of it stored.
"""

from __future__ import annotations

import http.client as http_client
import json
import logging
import re
from datetime import timedelta
from typing import Any
from urllib.request import Request

import httpx
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient, WebhookResponse

from alerts.notifiers import http
from alerts.notifiers.base import (
    PayloadError,
    SendResult,
    build,
    classify_status,
    parse_retry_after,
)
from alerts.notifiers.slack_blocks import render_blocks, render_text
from storage.alerts import DeliveryRecord
from storage.redaction import redact

TRANSIENT_ERRORS = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
        "team_added_to_org",
    }
)
_NETWORK_ERRORS = (OSError, http_client.HTTPException)
log = logging.getLogger(__name__)
#: Slack's answers (a posted message comes back whole, blocks included) are read up to
#: this many bytes; a longer one is not Slack's, and is retried
MAX_ANSWER_BYTES = 1 << 20


#: Slack's message ``ts`` (``1700000000.123456``: seconds, a dot, a sequence), as it is
#: stored with a delivery and sent back for threads and ``chat.update``
_TS = re.compile(r"[0-9]{1,12}\.[0-9]{1,9}")
#: a channel as Slack names it in an answer (an id like ``C0123ABCD``; a name in tests)
_CHANNEL = re.compile(r"[A-Za-z0-9#@._-]{1,80}")


def _valid(pattern: re.Pattern[str], value: object) -> str | None:
    """``value`` when it is a string ``pattern`` matches whole, else None."""
    return value if isinstance(value, str) and pattern.fullmatch(value) else None


def _show(value: object) -> str:
    """A hostile answer's value, for ``last_error``: short, control characters escaped."""
    if isinstance(value, str) and len(value) <= 40:
        return repr(value)
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    if value is None:
        return "none"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _bounded(client: httpx.Client, timeout: float, url: str, req: Request) -> http.Answer:
    """``req`` (as slack-sdk built it) made through :func:`alerts.notifiers.http.request`.
    Raises :class:`~alerts.notifiers.http.NoAnswer` (an ``OSError``) when no complete
    answer came within ``timeout`` or it was longer than :data:`MAX_ANSWER_BYTES`."""
    answer = http.request(
        client, req.get_method(), url, content=req.data,  # type: ignore[arg-type]
        headers={k: str(v) for k, v in req.header_items()}, timeout=timeout, max_bytes=MAX_ANSWER_BYTES,
    )
    if not answer.complete:
        raise http.NoAnswer(f"answer longer than {MAX_ANSWER_BYTES} bytes (HTTP {answer.status}); not read")
    return answer


#: what an answer that is JSON but no object (``other``) or nested too deep to read
#: (``deep``) is, in the delivery's ``last_error`` (``HTTP 200``: retried as not Slack's)
_NOT_SLACKS = {"other": "answer is JSON but not an object", "deep": "answer is nested too deep to read"}


def _read_json(body: str) -> tuple[str, Any]:
    """How a Web API answer reads, and its value: ``("object", dict)`` for a JSON object
    (Slack's answers); ``("other", value)`` for JSON that is not an object (``[1]``, ``"x"``,
    ``null``: slack-sdk would fail on it with a TypeError or AttributeError); ``("deep",
    None)`` for an answer nested too deep for Python's parser (it raises RecursionError,
    which slack-sdk lets through: neither a Slack nor a network error); ``("none", None)``
    when it is not JSON (slack-sdk turns it into a Slack error quoting the body, cut short)."""
    try:
        value = json.loads(body)
    except RecursionError:
        return "deep", None
    except ValueError:
        return "none", None
    return ("object" if isinstance(value, dict) else "other"), value


def _why(exc: BaseException) -> str:
    """Why no answer came, for the delivery's ``last_error``."""
    return str(exc) if isinstance(exc, http.NoAnswer) else f"{type(exc).__name__}: {exc}"


# the two methods the bounded clients replace: if slack-sdk renamed them, requests would
# silently go around the bounds, so refuse to start instead
for _cls, _name in ((WebClient, "_perform_urllib_http_request_internal"),
                    (WebhookClient, "_perform_http_request_internal")):
    if not callable(getattr(_cls, _name, None)):
        raise ImportError(f"this slack-sdk has no {_cls.__name__}.{_name}, which driftwarden replaces"
                          " to bound Slack requests: install an earlier slack-sdk 3.x")


class BoundedWebClient(WebClient):
    """slack-sdk's Web API client, its requests made through :mod:`alerts.notifiers.http`."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.http = http.client(self.timeout)

    # slack-sdk's one place where a request meets urllib (slack_sdk.web.base_client)
    def _perform_urllib_http_request_internal(self, url: str, req: Request) -> dict[str, Any]:
        answer = _bounded(self.http, self.timeout, url, req)
        body = answer.text()
        kind, value = _read_json(body)
        if answer.status == 200 and kind in _NOT_SLACKS:  # not Slack's (a proxy, a wrong base_url): retried
            raise http.NoAnswer(f"{_NOT_SLACKS[kind]} (HTTP {answer.status}); not Slack's")
        if kind == "none":
            # slack-sdk quotes a body that is not JSON in its error and its log, cut short: a
            # secret the receiver echoed (the bot token) would be stored cut, past finding.
            # Slack's own answers (JSON objects) are read as they came: redacting inside
            # them could change a ts
            return {"status": answer.status, "headers": answer.headers, "body": redact(body)}
        # read once, here: slack-sdk takes the value as it is (``parsed_body``) instead of
        # parsing the body again (an answer nested too deep raised RecursionError from it);
        # an error status with such an answer is judged by its status alone (no value)
        return {"status": answer.status, "headers": answer.headers, "body": body, "parsed_body": value}


class BoundedWebhookClient(WebhookClient):
    """slack-sdk's incoming-webhook client, its requests made through :mod:`alerts.notifiers.http`."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.http = http.client(self.timeout)

    # slack-sdk's one place where a request meets urllib (slack_sdk.webhook.client)
    def _perform_http_request_internal(self, url: str, req: Request) -> WebhookResponse:
        answer = _bounded(self.http, self.timeout, url, req)
        return WebhookResponse(url=url, status_code=answer.status, body=answer.text(), headers=dict(answer.headers))


def _api_error(exc: SlackApiError) -> SendResult:
    resp = exc.response
    status = int(getattr(resp, "status_code", 0) or 0)
    headers = getattr(resp, "headers", {}) or {}
    retry_after = headers.get("Retry-After") or headers.get("retry-after")
    data = getattr(resp, "data", None)
    code = data.get("error", "") if isinstance(data, dict) else ""
    if not isinstance(code, str):  # {"error": [...]} is no Slack error code
        code = ""
    if status == 429:
        return SendResult.retry(
            f"HTTP 429 {code}".strip(), parse_retry_after(retry_after), status_code=429
        )
    if status != 200:
        return classify_status(status, retry_after, code)
    if code in TRANSIENT_ERRORS:
        return SendResult.retry(
            f"slack error {code}", parse_retry_after(retry_after), status_code=200
        )
    return SendResult.give_up(f"slack error {code or 'unknown'}", status_code=200)


class SlackNotifier:
    """Posts Block Kit messages through the Web API with a bot token."""

    kind = "alert"
    cooldown: timedelta | None = None

    def __init__(
        self,
        name: str,
        token: str,
        channel: str,
        base_url: str = "https://slack.com/api/",
        timeout: int = 10,
        *,
        username: str | None = None,
        icon_emoji: str | None = None,
        broadcast_reminders: bool = True,
        client: WebClient | None = None,
    ) -> None:
        if not channel:
            raise ValueError(f"notifier {name!r}: a Slack channel is required")
        self.name = name
        self.channel = channel
        self.username = username
        self.icon_emoji = icon_emoji
        self.broadcast_reminders = broadcast_reminders
        # retries are the outbox's job: no hidden retries inside the client
        self._client = client or BoundedWebClient(
            token=token, base_url=base_url, timeout=timeout, retry_handlers=[]
        )

    @classmethod
    def from_webhook_url(cls, name: str, url: str, timeout: int = 10) -> SlackWebhookNotifier:
        """Incoming-webhook mode (no threads or updates: Slack returns no ``ts``)."""
        return SlackWebhookNotifier(name, url, timeout=timeout)

    def send(self, delivery: DeliveryRecord, parent: DeliveryRecord | None = None) -> SendResult:
        payload = delivery.payload
        kind = delivery.kind
        progress: dict[str, Any] = dict(delivery.response or {})
        parent_ref = dict(parent.response or {}) if parent is not None else {}
        # (a ts stored before it was checked, and not Slack's: no thread, no update)
        thread_ts = _valid(_TS, parent_ref.get("ts")) if kind in ("resolved", "reminder") else None
        channel = (_valid(_CHANNEL, parent_ref.get("channel")) or self.channel) if thread_ts else self.channel
        if "ts" not in progress:
            text = build("the Slack message", render_text, payload, kind)
            blocks = build("the Slack blocks", render_blocks, payload, kind)
            extra: dict[str, Any] = {}
            if thread_ts:
                extra["thread_ts"] = thread_ts
                if kind == "reminder" and self.broadcast_reminders:
                    extra["reply_broadcast"] = True
            if self.username:
                extra["username"] = self.username
            if self.icon_emoji:
                extra["icon_emoji"] = self.icon_emoji
            try:
                resp = self._client.chat_postMessage(
                    channel=channel,
                    text=text,
                    blocks=blocks,
                    unfurl_links=False,
                    unfurl_media=False,
                    metadata={
                        "event_type": "driftwarden_notification",
                        "event_payload": {"id": delivery.id, "kind": kind},
                    },
                    **extra,
                )
            except SlackApiError as exc:
                return _api_error(exc)
            except _NETWORK_ERRORS as exc:
                return SendResult.retry(_why(exc))
            ts, answered = resp.get("ts"), resp.get("channel")
            if _valid(_TS, ts) is None:  # a base_url that is not Slack: retried like other such answers
                return SendResult.retry(f"answer's message ts is {_show(ts)}; not Slack's")
            if answered and _valid(_CHANNEL, answered) is None:
                return SendResult.retry(f"answer's channel is {_show(answered)}; not Slack's")
            progress = {"channel": answered or channel, "ts": ts}
        if kind != "resolved" or not thread_ts or parent is None:
            return SendResult.sent(response=progress)
        # the reply is in the thread: now mark the original message. From here on the
        # on-call was told: every outcome keeps the reply's progress (a retry does not post
        # it again) and, once known, its resolved ids (a later update shows them), and a
        # retry is ``delivered`` (when retries run out, the delivery ends sent, not dead),
        # whatever the update raises: an exception left to the outbox would be retried
        # without the progress, and post the resolution again
        marked: dict[str, Any] | None = None
        try:
            marked = _marked(parent_ref, payload)
            return self._update_original(channel, thread_ts, parent, progress, marked)
        except Exception as exc:  # noqa: BLE001 - the reply is posted: never post it again
            if not isinstance(exc, _NETWORK_ERRORS):  # a bug, or an answer slack-sdk cannot read
                log.warning("notifier %s: delivery %s posted, but updating the original message raised",
                            self.name, delivery.id, exc_info=exc)
            return SendResult.retry(
                f"chat.update: {_why(exc)}", response=progress, parent_response=marked, delivered=True
            )

    def _update_original(
        self, channel: str, ts: str, parent: DeliveryRecord, progress: dict[str, Any], marked: dict[str, Any]
    ) -> SendResult:
        """``chat.update`` of the firing message ``ts`` to show the resolved ids in
        ``marked`` (the parent's new response); ``progress``: the posted reply's channel
        and ts. A network error or anything else raised is the caller's to handle."""
        resolved = marked["resolved_ids"]
        try:
            text = build("the updated message", render_text, parent.payload, "firing")
            blocks = build(
                "the updated blocks", render_blocks, parent.payload, "firing", resolved_ids=resolved
            )
        except PayloadError as exc:  # the reply is posted: only the original stays as it was
            return SendResult.sent(
                response=progress, error=f"original message not updated: {exc}", parent_response=marked
            )
        try:
            self._client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        except SlackApiError as exc:
            result = _api_error(exc)
            if result.outcome == "retry":
                return SendResult.retry(
                    f"chat.update: {result.error}", result.retry_after, response=progress,
                    parent_response=marked, delivered=True,
                )
            # message_not_found, cant_update_message, edit_window_closed, is_archived, ...:
            # no retry can update it; the resolution itself is in the thread
            return SendResult.sent(
                response=progress, error=f"original message not updated: {result.error}",
                parent_response=marked,
            )
        return SendResult.sent(response={**progress, "updated": True}, parent_response=marked)


def _marked(parent_ref: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """The firing message's stored response with ``resolved_ids``: those resolved in its
    thread before and the alerts of the resolution ``payload``, sorted."""
    resolved = sorted(
        set(parent_ref.get("resolved_ids") or [])
        | {str(a.get("id")) for a in payload.get("alerts") or []}
    )
    return {**parent_ref, "resolved_ids": resolved}


class SlackWebhookNotifier:
    """Posts Block Kit messages to a Slack incoming-webhook URL."""

    kind = "alert"
    cooldown: timedelta | None = None

    def __init__(
        self, name: str, url: str, timeout: int = 10, *, client: WebhookClient | None = None
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"notifier {name!r}: webhook_url must be http(s)://…")
        self.name = name
        self._client = client or BoundedWebhookClient(url, timeout=timeout, retry_handlers=[])

    def send(self, delivery: DeliveryRecord, parent: DeliveryRecord | None = None) -> SendResult:
        text = build("the Slack message", render_text, delivery.payload, delivery.kind)
        blocks = build("the Slack blocks", render_blocks, delivery.payload, delivery.kind)
        try:
            resp = self._client.send(
                text=text, blocks=blocks, unfurl_links=False, unfurl_media=False
            )
        except _NETWORK_ERRORS as exc:
            return SendResult.retry(_why(exc))
        headers = resp.headers or {}
        retry_after = headers.get("Retry-After") or headers.get("retry-after")
        if isinstance(retry_after, list):
            retry_after = retry_after[0] if retry_after else None
        return classify_status(resp.status_code, retry_after, resp.body or "")
