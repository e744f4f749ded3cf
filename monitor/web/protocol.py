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
  aborted after ``idle_timeout`` instead of holding the buffered response, also while
  a response waits for the buffer to drain (uvicorn waits without a deadline: a client
  that pipelined requests and read no answer held its connection for ever, past the
  head deadline, so 25 such connections kept its address's cap full at no cost).
- **no Nagle delay**: asyncio turns Nagle's algorithm off (``TCP_NODELAY``) only for
  sockets whose ``proto`` is ``IPPROTO_TCP``; ``socket.create_server`` (see
  ``monitor.web.server.bind``) makes them with 0, so each response after the first on
  a kept-alive connection waited ~40 ms for the client's delayed ACK before its body
  left. It is set here on every connection.

The request *body* deadline is the application's (it reads the body); see
``monitor.web.requests``. No thread per connection: everything here runs on the
server's one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

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
#: sent to a connection over its client address's cap
TOO_MANY_HERE = _raw_response(503, "Service Unavailable", "too many connections from this address; try again later")


def _address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)


def guarded_protocol(*, idle_timeout: float, max_connections: int, max_client_connections: int | None = None) -> type[H11Protocol]:
    """An ``H11Protocol`` subclass bound to these limits (pass it as uvicorn's ``http``):
    ``max_connections`` open at once, ``max_client_connections`` of them from one client
    address (None: no cap of its own), so one client holding connections cannot keep
    the health probes out."""
    per_client = max_connections if max_client_connections is None else max_client_connections
    #: open connections by client address (the event loop's thread only)
    open_from: dict[str, int] = {}

    class GuardedH11Protocol(H11Protocol):
        _refused = False
        _address = ""
        _write_stall: asyncio.TimerHandle | None = None

        def _refuse(self, transport: asyncio.Transport, answer: bytes, why: str) -> None:
            self._refused = True
            self.transport = transport
            log.debug("http: %s: refusing a new connection", why)
            transport.write(answer)
            transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections:
                self._refuse(transport, TOO_MANY, f"{len(self.connections)} connections open")
                return
            address = _address(transport)
            if open_from.get(address, 0) >= per_client:
                self._refuse(transport, TOO_MANY_HERE, f"{per_client} connections open from {address}")
                return
            self._address = address
            open_from[address] = open_from.get(address, 0) + 1
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().connection_made(transport)
            # uvicorn arms no timer before the first request: arm the head deadline now
            self.timeout_keep_alive_task = self.loop.call_later(idle_timeout, self.timeout_keep_alive_handler)

        def data_received(self, data: bytes) -> None:
            if not self._refused:
                super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._write_stall is not None:
                self._write_stall.cancel()
                self._write_stall = None
            if not self._refused:
                left = open_from.get(self._address, 1) - 1
                if left > 0:
                    open_from[self._address] = left
                else:
                    open_from.pop(self._address, None)
                super().connection_lost(exc)

        def _unset_keepalive_if_required(self) -> None:
            # uvicorn calls this on every read and when a request head is complete;
            # only the latter may stop the head deadline (our state turns SEND_RESPONSE)
            if self.conn.our_state is h11.SEND_RESPONSE:
                super()._unset_keepalive_if_required()

        def pause_writing(self) -> None:
            # the write buffer is over its high-water mark: the client must read some of it
            # within idle_timeout (resume_writing), or it is dropped
            super().pause_writing()
            if self._write_stall is None:
                self._write_stall = self.loop.call_later(idle_timeout, self._drop_stuck_reader)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._write_stall is not None:
                self._write_stall.cancel()
                self._write_stall = None

        def _drop_stuck_reader(self) -> None:
            self._write_stall = None
            log.debug("http: %s read nothing of its answers for %gs: dropped", self.client, idle_timeout)
            self.transport.abort()

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
