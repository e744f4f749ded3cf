"""A SASL front for the embedded broker: OAUTHBEARER (Tansu 0.6 answers it with
NoSharedMechanism), PLAIN and SCRAM-SHA-256/512 (Tansu cannot provision SCRAM users on its
memory store: ``tansu user create`` against an authenticating broker fails).

A TCP proxy that speaks just enough of the Kafka protocol, with kafka-python's own
message classes: it answers ``SaslHandshake`` and ``SaslAuthenticate`` itself (a bearer
token checked against the ones currently accepted; a user name and password, in clear for
PLAIN or by the RFC 5802 exchange for SCRAM), granting a short session lifetime (so clients
re-authenticate, KIP-368), and pipes every other request to a Tansu broker that advertises
the proxy's address.
Responses stay in request order: a local answer waits for the forwarded requests
before it. Loopback only; every connection is a pair of threads.

A client without SASL (``PLAINTEXT``) passes straight through; ``answer`` may answer other
requests itself (a broker that refuses the consumer group, say).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from types import TracebackType

from kafka.protocol.sasl import (
    SaslAuthenticateRequest,
    SaslAuthenticateResponse,
    SaslHandshakeRequest,
    SaslHandshakeResponse,
)

from monitor.demo.broker import broker_binary, free_port

SASL_HANDSHAKE, SASL_AUTHENTICATE = 17, 36
SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM = 58, 33


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _read_frame(sock: socket.socket) -> bytes | None:
    head = _read_exact(sock, 4)
    if head is None:
        return None
    return _read_exact(sock, struct.unpack(">i", head)[0])


def bearer(auth_bytes: bytes) -> str | None:
    """The token of an OAUTHBEARER initial response ``n,,\\x01auth=Bearer <token>\\x01\\x01``."""
    for part in auth_bytes.decode("utf-8", "replace").split("\x01"):
        if part.startswith("auth=Bearer "):
            return part[len("auth=Bearer "):]
    return None


class _Scram:
    """The server side of one SCRAM exchange (RFC 5802), for one connection."""

    def __init__(self, mechanism: str, users: dict[str, str]) -> None:
        self.hash = hashlib.sha512 if mechanism.endswith("512") else hashlib.sha256
        self.users = users
        self.step = 0
        self.user = ""
        self.salt = os.urandom(16)
        self.iterations = 4096

    def _h(self, key: bytes, msg: bytes) -> bytes:
        return hmac.new(key, msg, self.hash).digest()

    def respond(self, data: bytes) -> tuple[bool | None, bytes]:
        """(None: go on / True: authenticated / False: refused, the bytes to answer)."""
        text = data.decode()
        if self.step == 0:
            self.first_bare = text.split(",", 2)[2]
            attrs = dict(kv.split("=", 1) for kv in self.first_bare.split(","))
            self.user, cnonce = attrs["n"], attrs["r"]
            self.nonce = cnonce + base64.b64encode(os.urandom(12)).decode()
            self.server_first = f"r={self.nonce},s={base64.b64encode(self.salt).decode()},i={self.iterations}"
            self.step = 1
            return None, self.server_first.encode()
        attrs = dict(kv.split("=", 1) for kv in text.split(","))
        without_proof = text.rsplit(",p=", 1)[0]
        password = self.users.get(self.user)
        if password is None or attrs.get("r") != self.nonce:
            return False, b"e=unknown-user"
        salted = hashlib.pbkdf2_hmac(self.hash().name, password.encode(), self.salt, self.iterations)
        client_key = self._h(salted, b"Client Key")
        auth_message = f"{self.first_bare},{self.server_first},{without_proof}".encode()
        signature = self._h(self.hash(client_key).digest(), auth_message)
        expected = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        if not hmac.compare_digest(expected, base64.b64decode(attrs["p"])):
            return False, b"e=invalid-proof"
        server_sig = self._h(self._h(salted, b"Server Key"), auth_message)
        return True, b"v=" + base64.b64encode(server_sig)


class _Connection:
    def __init__(self, proxy: SaslFront, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.mechanism = ""
        self.scram: _Scram | None = None
        self.upstream = socket.create_connection(("127.0.0.1", proxy.upstream_port))
        self.send_lock = threading.Lock()
        self.inflight = 0
        self.cond = threading.Condition()

    def run(self) -> None:
        threading.Thread(target=self._pump_upstream, daemon=True).start()
        try:
            while True:
                frame = _read_frame(self.client)
                if frame is None:
                    return
                api_key, version, corr = struct.unpack(">hhi", frame[:8])
                if api_key == SASL_HANDSHAKE:
                    asked = SaslHandshakeRequest.decode(frame, version=version, header=True).mechanism
                    self.mechanism = asked
                    self.scram = _Scram(asked, self.proxy.users) if asked.startswith("SCRAM") else None
                    ok = asked == self.proxy.mechanism
                    resp = SaslHandshakeResponse(error_code=0 if ok else UNSUPPORTED_SASL_MECHANISM,
                                                 mechanisms=[self.proxy.mechanism], version=version)
                    self._local(resp, corr)
                elif api_key == SASL_AUTHENTICATE:
                    req = SaslAuthenticateRequest.decode(frame, version=version, header=True)
                    self._local(self.proxy.authenticate(self, bytes(req.auth_bytes), version), corr)
                elif (resp := self.proxy.answer(api_key, version, frame)) is not None:
                    self._local(resp, corr)
                else:
                    with self.cond:
                        self.inflight += 1
                    self.upstream.sendall(struct.pack(">i", len(frame)) + frame)
        except OSError:
            return
        finally:
            self.close()

    def _local(self, resp: object, corr: int) -> None:
        resp.with_header(correlation_id=corr)  # type: ignore[attr-defined]
        data = bytes(resp.encode(header=True, framed=True))  # type: ignore[attr-defined]
        with self.cond:
            self.cond.wait_for(lambda: self.inflight == 0, timeout=10)  # keep responses in order
            with self.send_lock:
                self.client.sendall(data)

    def _pump_upstream(self) -> None:
        try:
            while True:
                frame = _read_frame(self.upstream)
                if frame is None:
                    return
                with self.send_lock:
                    self.client.sendall(struct.pack(">i", len(frame)) + frame)
                with self.cond:
                    self.inflight -= 1
                    self.cond.notify_all()
        except OSError:
            return
        finally:
            self.close()

    def close(self) -> None:
        for s in (self.client, self.upstream):
            try:
                s.close()
            except OSError:
                pass


class SaslFront:
    """Tansu behind a SASL front. OAUTHBEARER: ``accept(token)`` decides and ``seen`` records
    the tokens; PLAIN and SCRAM: ``users`` maps names to passwords and ``seen`` records
    ``(time, user, ok)``. ``answer(api_key, version, frame)`` may answer any other request
    itself (a response object of kafka-python's protocol classes) or return None to forward it."""

    def __init__(
        self,
        accept: Callable[[str], bool] = lambda _t: False,
        *,
        session_lifetime_ms: int = 2000,
        mechanism: str = "OAUTHBEARER",
        users: dict[str, str] | None = None,
        answer: Callable[[int, int, bytes], object | None] = lambda _key, _version, _frame: None,
    ) -> None:
        self.accept = accept
        self.answer = answer
        self.mechanism = mechanism
        self.users = users or {}
        self.session_lifetime_ms = session_lifetime_ms
        self.port = free_port()
        self.upstream_port = free_port()
        self.seen: list[tuple[float, str, bool]] = []
        self._lock = threading.Lock()
        self._server: socket.socket | None = None
        self._broker: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def authenticate(self, conn: _Connection, auth_bytes: bytes, version: int) -> SaslAuthenticateResponse:
        answer = b""
        if self.mechanism == "OAUTHBEARER":
            who = bearer(auth_bytes) or ""
            ok: bool | None = self.accept(who)
        elif self.mechanism == "PLAIN":
            _, who, password = auth_bytes.decode().split("\0", 2)
            ok = self.users.get(who) == password
        else:
            assert conn.scram is not None
            ok, answer = conn.scram.respond(auth_bytes)
            who = conn.scram.user
            if ok is None:  # the exchange goes on
                return SaslAuthenticateResponse(error_code=0, error_message=None, auth_bytes=answer,
                                                session_lifetime_ms=0, version=version)
        with self._lock:
            self.seen.append((time.monotonic(), who, bool(ok)))
        if ok:
            return SaslAuthenticateResponse(error_code=0, error_message=None, auth_bytes=answer,
                                            session_lifetime_ms=self.session_lifetime_ms, version=version)
        return SaslAuthenticateResponse(error_code=SASL_AUTHENTICATION_FAILED, error_message="authentication failed",
                                        auth_bytes=b"", session_lifetime_ms=0, version=version)

    def tokens(self, accepted: bool = True) -> list[str]:
        with self._lock:
            return [t for _, t, ok in self.seen if ok == accepted]

    def start(self) -> SaslFront:
        url = f"tcp://127.0.0.1:{self.upstream_port}"
        self._broker = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url,
             "--advertised-listener-url", f"tcp://127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir(),
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.upstream_port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", self.port))
        self._server.listen(16)
        threading.Thread(target=self._accept_loop, daemon=True).start()
        return self

    def _accept_loop(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=_Connection(self, client).run, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._broker is not None:
            self._broker.terminate()
            self._broker.wait(timeout=10)
            self._broker = None

    def __enter__(self) -> SaslFront:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
