"""Secrets kept out of the error texts driftwarden stores and shows.

Error texts (a delivery's ``last_error``, a window's ``error``, a dead letter's reason)
are stored and then shown by the dashboard, the API and the command line, to people who
may not hold the secrets (the dashboard is open to anyone without
``daemon.protect_reads``). Such a text may quote a secret: a receiver's 404 page echoes
the request path (``Cannot POST /services/T000/B000/XXXX``), a proxy echoes the
``Authorization`` header, an exception quotes a URL. So every secret the process knows
is registered here (:func:`register` for a value, :func:`register_url` for a URL's secret
parts), and :func:`redact` takes them out of a text before it is stored or logged.

The registry is process-wide and only grows: a rotated secret stays redacted (an old
text may still quote it). It lives in ``storage``, the bottom of the import graph,
because every package stores texts and ``storage`` imports none of the others.

Values shorter than :data:`MIN_CHARS` characters are not registered: they cannot be told
from ordinary words, and replacing them would garble every text.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterable
from urllib.parse import SplitResult, unquote, urlsplit

#: what a secret value becomes in a text
MASK = "***"
#: shorter values are not registered (see the module doc)
MIN_CHARS = 4
#: at most this many values are registered (memory, and the cost of each :func:`redact`)
MAX_SECRETS = 10_000

log = logging.getLogger(__name__)

_lock = threading.Lock()
#: secret -> what it becomes; longest first (a secret containing another goes first)
_pairs: tuple[tuple[str, str], ...] = ()
_known: dict[str, str] = {}
#: :data:`MAX_SECRETS` was reached (said once)
_full = False


def register(values: Iterable[str], shown: str = MASK) -> None:
    """Redact each of ``values`` (strings of at least :data:`MIN_CHARS` characters; others
    are skipped) from every text :func:`redact` sees from now on, as ``shown``."""
    _add({v: shown for v in values if isinstance(v, str) and len(v) >= MIN_CHARS})


def register_url(url: str) -> None:
    """Redact the secret parts of ``url`` (see :func:`url_secrets`) from every text
    :func:`redact` sees from now on; the whole URL becomes :func:`shown_url`."""
    _add(url_secrets(url))


def _add(pairs: dict[str, str]) -> None:
    global _pairs
    with _lock:
        new = {k: v for k, v in pairs.items() if k and _known.get(k) != v}
        if not new:
            return
        room = MAX_SECRETS - len(_known)
        if len(new) > room:
            # the secrets are the config's and its receivers' (a few dozen): this many means
            # something registers per request what is not constant; bounded, and said once
            global _full
            if not _full:
                _full = True
                log.warning("more than %d secret values to redact: the newest are not redacted", MAX_SECRETS)
            new = dict(list(new.items())[:room])
            if not new:
                return
        _known.update(new)
        _pairs = tuple(sorted(_known.items(), key=lambda kv: len(kv[0]), reverse=True))


def registered() -> bool:
    """Whether anything is registered (else :func:`redact` returns texts as they are)."""
    return bool(_pairs)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced (longest first)."""
    for secret, shown in _pairs:  # a snapshot: registering swaps the tuple whole
        if secret in text:
            text = text.replace(secret, shown)
    return text


def quoted(text: str, limit: int) -> str:
    """``text`` without a registered secret, then cut to ``limit`` characters: in this
    order, since a secret cut in two could no longer be found and its first part would
    be stored."""
    return redact(text)[:limit]


def _parts(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url.strip())
        _ = parts.port  # a bad port raises here
    except ValueError:
        return None
    return parts


def _host(parts: SplitResult) -> str:
    """``host[:port]`` of ``parts``, without user information."""
    return parts.netloc.rpartition("@")[2]


def shown_url(url: str) -> str:
    """``url`` as an error text may show it: scheme, host and port, and ``/…`` for a path
    or a query (which may hold a token: Slack's incoming-webhook path, ``?token=``); no
    user name or password, no fragment. ``https://hooks.slack.com/…``,
    ``http://127.0.0.1:8080`` (nothing after the host: nothing hidden). A URL that does not
    parse shows as ``<url not shown>``."""
    parts = _parts(url)
    if parts is None or not parts.netloc:
        return "<url not shown>"
    hidden = parts.path not in ("", "/") or parts.query or parts.fragment
    return f"{parts.scheme}://{_host(parts)}" + ("/…" if hidden else parts.path)


def _tokenlike(piece: str) -> bool:
    """Whether a path segment or query value looks like a token: 20 characters or more,
    or 8 or more with a digit (Slack's ``T0123ABCD``). Words (``services``, ``hooks``,
    ``chat.postMessage``) are not, so texts naming them stay readable."""
    return len(piece) >= 20 or (len(piece) >= 8 and any(c.isdigit() for c in piece))


def url_secrets(url: str) -> dict[str, str]:
    """What :func:`register_url` registers for ``url``, each with what it becomes: the URL
    (also without its scheme) as :func:`shown_url`; the path with the query, the path (when
    a segment is token-like: ``/hook`` is no secret) and the query as ``/…`` or ``…``;
    token-like path segments and query values (raw and percent-decoded; a value like
    ``require`` is no secret, and stays in texts unless the whole query is quoted); the user
    information when it holds a password or a token-like name (a user name alone is no
    secret), the password, and the ``Basic`` credentials a client makes of them (base64)
    as :data:`MASK`. Values shorter than :data:`MIN_CHARS`
    are left out (see the module doc); a URL with none of these parts gives nothing."""
    parts = _parts(url)
    if parts is None:
        return {url: "<url not shown>"} if len(url) >= MIN_CHARS else {}
    shown = shown_url(url)
    out: dict[str, str] = {url: shown}
    if parts.scheme:
        out[url.split("://", 1)[-1]] = shown.split("://", 1)[-1]
    head = f"{parts.scheme}://{parts.netloc}"
    tail = url[len(head):] if url.startswith(head) else parts.path + (f"?{parts.query}" if parts.query else "")
    segments = [s for s in parts.path.split("/") if _tokenlike(s) or _tokenlike(unquote(s))]
    if segments:  # a path without a token (``/hook``) is no secret, and too common a text
        out[tail] = "/…"
        out[parts.path] = "/…"
        out[unquote(parts.path)] = "/…"
        if parts.query:
            out[f"{parts.path}?{parts.query}"] = "/…"
    elif parts.query:
        out[tail] = "?…" if tail.startswith("?") else "/…"
    if parts.query:
        out[f"?{parts.query}"] = "?…"
        out[parts.query] = "…"
        for pair in parts.query.split("&"):
            value = pair.partition("=")[2]
            if _tokenlike(value) or _tokenlike(unquote(value)):
                out[value] = MASK
                out[unquote(value)] = MASK
    for seg in segments:
        out[seg] = MASK
        out[unquote(seg)] = MASK
    userinfo = parts.netloc.rpartition("@")[0]
    user, colon, password = userinfo.partition(":")
    if colon or _tokenlike(user):  # a user name alone (``postgresql://driftwarden@db``) is no secret
        out[userinfo + "@"] = ""
        out[userinfo] = MASK
        decoded = f"{unquote(user)}:{unquote(password)}"
        out[base64.b64encode(decoded.encode()).decode()] = MASK
        if password:
            out[password] = MASK
            out[unquote(password)] = MASK
    if len(out) <= 2:  # nothing secret in it (``http://127.0.0.1:9/hook``): texts keep it as it is
        return {}
    return {k: v for k, v in out.items() if len(k) >= MIN_CHARS}
