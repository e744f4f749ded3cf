"""uvicorn's h11 protocol with the limits it lacks: connection cap, head timeout, JSON 400s.

What uvicorn (0.54, h11) does by itself, checked against its source and our tests:
request line + headers are capped at 16 KiB (h11), a malformed or negative
``Content-Length`` is a protocol error answered 400, a request body is buffered
at most 64 KiB ahead of the application (flow control), and an idle keep-alive
connection is closed after ``timeout_keep_alive``. What it does not do, and this
class adds:

- **a head deadline**: uvicorn cancels its keep-alive timer on *any* byte, so a
  client trickling a header line every few seconds (slowloris), or connecting and
  sending nothing, holds its connection forever. Here a connection must deliver a
  complete request head within ``idle_timeout`` of opening or of its previous
  response; partial data does not extend it.
- **a connection cap**: beyond ``max_connections`` open connections a new one is
  answered ``503`` with a JSON error and closed, before anything is parsed.
- **JSON errors**: its own 400 (bad framing, bad ``Content-Length``, headers too
  large) carries ``{"error": ...}`` like every other error of the API.
- **a stuck reader is dropped**: a client that stops reading its response is
  aborted after ``idle_timeout`` instead of holding the buffered response.

The request *body* deadline is the application's (it reads the body); see
``monitor.web.requests``. No thread per connection: everything here runs on the
server's one event loop.
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("driftwarden.http")


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = ('{"error": "' + message + '"}').encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


#: sent to a connection over the cap, before its request is read
TOO_MANY = _raw_response(503, "Service Unavailable", "too many connections; try again later")


def guarded_protocol(*, idle_timeout: float, max_connections: int) -> type[H11Protocol]:
    """An ``H11Protocol`` subclass bound to these limits (pass it as uvicorn's ``http``)."""

    class GuardedH11Protocol(H11Protocol):
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections:
                self._refused = True
                self.transport = transport
                log.debug("http: %d connections open: refusing a new one", len(self.connections))
                transport.write(TOO_MANY)
                transport.close()
                return
            super().connection_made(transport)
            # uvicorn arms no timer before the first request: arm the head deadline now
            self.timeout_keep_alive_task = self.loop.call_later(idle_timeout, self.timeout_keep_alive_handler)

        def data_received(self, data: bytes) -> None:
            if not self._refused:
                super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if not self._refused:
                super().connection_lost(exc)

        def _unset_keepalive_if_required(self) -> None:
            # uvicorn calls this on every read and when a request head is complete;
            # only the latter may stop the head deadline (our state turns SEND_RESPONSE)
            if self.conn.our_state is h11.SEND_RESPONSE:
                super()._unset_keepalive_if_required()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.transport.is_closing() and self.transport.get_write_buffer_size():
                # closing, but the client does not read what is left: drop it in time
                self.loop.call_later(idle_timeout, self.transport.abort)

        def timeout_keep_alive_handler(self) -> None:
            if self.transport.is_closing():
                return
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:
                pass
            if self.transport.get_write_buffer_size():
                self.transport.abort()
            else:
                self.transport.close()

        def send_400_response(self, msg: str) -> None:
            log.debug("http: malformed request from %s: %s", self.client, msg)
            if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
                self.transport.write(
                    _raw_response(400, "Bad Request", "malformed HTTP request (framing, headers or Content-Length)")
                )
            self.transport.close()

    return GuardedH11Protocol
