"""The witness's HTTPS server: c2sp.org/tlog-witness over mutual TLS with the deployment's CA.

    POST /add-checkpoint            a checkpoint to cosign (parties of the ``submitters`` roles)
    GET  /<origin sha256>/checkpoint   the latest checkpoint cosigned of that log (any party)

Only a client certificate of the deployment's CA that it has not revoked gets an answer (the
revocation list is read again when it changes, as every hedui server does); the TLS handshake
runs in the connection's own thread, so a slow client holds up no other. Bodies are at most
16 KiB (the reference witness's limit); keep-alive connections are served.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hedui.core.errors import CryptoError, ListenError
from hedui.core.tls import PeerIdentity, Revocations, identity_from_pem
from hedui.witness.core import Witness
from hedui.witness.errors import Conflict, Rejected, Unavailable

log = logging.getLogger("hedui.witness")

MAX_BODY = 16 * 1024
MAX_DRAINED = 1024 * 1024  # a larger body is not read: the connection is closed
HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0
_CHECKPOINT_PATH = re.compile(r"/([0-9a-f]{64})/checkpoint")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        witness: Witness,
        context: ssl.SSLContext,
        submitters: frozenset[str],
        revocations: Revocations | None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.witness = witness
        self.context = context
        self.submitters = submitters
        self.revocations = revocations
        self._open: set[socket.socket] = set()  # connections being served (kept alive)
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def close_connections(self) -> None:
        """End every connection still open (a keep-alive one would outlive the server)."""
        with self._open_lock:
            for conn in self._open:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def finish_request(self, request: Any, client_address: Any) -> None:
        """The TLS handshake, in the connection's thread, then the HTTP exchange(s)."""
        request.settimeout(HANDSHAKE_TIMEOUT)
        # an answer is written as its headers, then its body: without this, Nagle's algorithm
        # holds the body back until the client's delayed ACK (40 ms a request on Linux)
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            log.info("TLS handshake with %s failed: %s", client_address[0], e)
            return
        with self._open_lock:
            self._open.add(tls)
        try:
            tls.settimeout(IDLE_TIMEOUT)
            _Handler(tls, client_address, self)
        except OSError as e:
            log.debug("connection from %s ended: %s", client_address[0], e)
        finally:
            with self._open_lock:
                self._open.discard(tls)
            try:
                tls.close()
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive (tlog-witness: clients and witnesses SHOULD)
    server_version = "hedui-witness"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(
        self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _refuse(self, status: int, message: str) -> None:
        self._send(status, f"{message}\n".encode())

    def _peer(self) -> PeerIdentity | None:
        """The caller's verified identity; None (after answering 403) when it may not call."""
        assert isinstance(self.connection, ssl.SSLSocket)
        der = self.connection.getpeercert(binary_form=True)
        if der is None:  # CERT_REQUIRED: not reached
            self._refuse(403, "a client certificate of the deployment is required")
            return None
        cert = x509.load_der_x509_certificate(der)
        if self.server.revocations is not None:
            try:
                revoked = self.server.revocations.revoked(cert.serial_number)
            except CryptoError as e:
                log.error("refused a call: %s", e)
                self._refuse(403, "the witness cannot check revocations; ask its operator")
                return None
            if revoked:
                self._refuse(403, "this certificate was revoked by the deployment's CA")
                return None
        return identity_from_pem(cert.public_bytes(serialization.Encoding.PEM))

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            self._refuse(411, "a Content-Length is required")
            return
        if int(length) > MAX_BODY:
            self.close_connection = True
            if int(length) <= MAX_DRAINED:  # read it, so that the client reads the answer
                self.rfile.read(int(length))
            self._refuse(413, f"the body is larger than {MAX_BODY} bytes")
            return
        body = self.rfile.read(int(length))
        peer = self._peer()
        if peer is None:
            return
        if self.path.split("?", 1)[0] != "/add-checkpoint":
            self._refuse(404, "not found: POST /add-checkpoint")
            return
        if peer.role not in self.server.submitters:
            log.warning("refused a checkpoint from %s (role %s)", peer.name, peer.role)
            self._refuse(403, f"role {peer.role} may not submit checkpoints to this witness")
            return
        try:
            lines = self.server.witness.handle(body)
        except Conflict as e:
            self._send(409, f"{e.size}\n".encode(), "text/x.tlog.size")
            return
        except Rejected as e:
            log.info("refused a checkpoint from %s: HTTP %d, %s", peer.name, e.status, e)
            self._refuse(e.status, str(e))
            return
        except Unavailable as e:
            self._refuse(503, str(e))
            return
        self._send(200, lines)

    def do_GET(self) -> None:
        peer = self._peer()
        if peer is None:
            return
        match = _CHECKPOINT_PATH.fullmatch(self.path.split("?", 1)[0])
        note = None if match is None else self.server.witness.latest(match[1])
        if note is None:
            self._refuse(404, "no checkpoint cosigned of that log")
            return
        self._send(200, note)


class WitnessServer:
    """The witness serving on ``address`` (HOST:PORT, port 0: any free one) until stopped."""

    def __init__(
        self,
        witness: Witness,
        address: str,
        context: ssl.SSLContext,
        *,
        submitters: tuple[str, ...] = ("service",),
        revocations: Revocations | None = None,
    ) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"address {address!r} is not HOST:PORT")
        try:
            self._server = _Server(
                (host.strip("[]"), int(port)), witness, context, frozenset(submitters), revocations
            )
        except OSError as e:
            raise ListenError(
                f"the witness cannot listen on {address}: {e.strerror or e}"
            ) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="hedui-witness", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self, grace: float | None = None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._thread.join(grace)
