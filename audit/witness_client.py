"""The client side of c2sp.org/tlog-witness: ask a witness to cosign a new checkpoint.

The log (the verification service) POSTs to ``<submission prefix>/add-checkpoint``::

    old <size the witness last cosigned, 0 the first time>
    <base64 consistency proof hash, one per line: none when old is 0, at most 63>
    <blank line>
    <the signed checkpoint note>

and the witness answers 200 with its cosignature line(s), or 409 Conflict with
``Content-Type: text/x.tlog.size`` and the size it last cosigned (then the request is made once
more, with a proof from that size), 404 for a log it does not witness, 403 when the log's
signature does not verify, 422 for a proof that does not verify (or a fork), 400 for a
malformed request. Over HTTPS with the deployment's certificates (mutual TLS).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import re
import ssl
import tempfile
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path

from hedui.audit.checkpoint import Checkpoint, split_note
from hedui.audit.cosignature import (
    Cosigner,
    line_key,
    parse_signature_lines,
    verify_cosignature,
)
from hedui.audit.errors import VerificationError, WitnessRefused, WitnessUnavailable
from hedui.core.tls import TlsMaterial

ADD_CHECKPOINT = "/add-checkpoint"
SIZE_CONTENT_TYPE = "text/x.tlog.size"
MAX_PROOF_LINES = 63
MAX_ANSWER = 64 * 1024
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")

Prove = Callable[[int], Sequence[bytes]]


def ssl_context(tls: TlsMaterial, *, server: bool) -> ssl.SSLContext:
    """A TLS 1.2+ context for mutual TLS with the deployment's CA: a client checks the server's
    certificate and host name; a server requires a client certificate. (The ``ssl`` module loads
    a key only from a file: it is written to a private temporary folder and removed at once.)"""
    purpose = ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT
    context = ssl.SSLContext(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cadata=tls.ca_pem.decode("ascii"))
    context.verify_mode = ssl.CERT_REQUIRED
    with tempfile.TemporaryDirectory(prefix="hedui-tls-") as folder:
        chain = Path(folder) / "chain.pem"
        fd = os.open(chain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, tls.key_pem + b"\n" + tls.cert_pem)
        finally:
            os.close(fd)
        context.load_cert_chain(chain)
    return context


def request_body(old_size: int, proof: Sequence[bytes], signed_note: bytes) -> bytes:
    """The add-checkpoint request body."""
    if old_size < 0:
        raise ValueError(f"negative old size {old_size}")
    if len(proof) > MAX_PROOF_LINES:
        raise ValueError(f"{len(proof)} proof lines, at most {MAX_PROOF_LINES}")
    lines = [f"old {old_size}\n".encode()]
    lines += [base64.b64encode(p) + b"\n" for p in proof]
    return b"".join(lines) + b"\n" + signed_note


class Connection:
    """A keep-alive HTTPS connection to a witness (tlog-witness: clients SHOULD keep them),
    opened when first needed and again when the witness closed it; for one caller at a time.
    A new connection costs a mutual-TLS handshake (about 3 ms on loopback)."""

    def __init__(self) -> None:
        self._conn: http.client.HTTPSConnection | None = None
        self._to: tuple[str, int | None, int] | None = None  # host, port, context

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
        self._conn, self._to = None, None

    def post(
        self, url: urllib.parse.SplitResult, context: ssl.SSLContext, body: bytes, timeout: float
    ) -> tuple[int, str, bytes]:
        if url.hostname is None:
            raise ValueError(f"no host in the witness URL {url.geturl()!r}")
        to = (url.hostname, url.port, id(context))
        for attempt in (1, 2):
            reused = self._conn is not None and self._to == to
            if not reused:
                self.close()
                self._conn = http.client.HTTPSConnection(
                    url.hostname, url.port, context=context, timeout=timeout
                )
                self._to = to
            conn = self._conn
            assert conn is not None
            conn.timeout = timeout
            try:
                conn.request(
                    "POST",
                    url.path.rstrip("/") + ADD_CHECKPOINT,
                    body=body,
                    headers={"Content-Type": "text/plain; charset=utf-8"},
                )
                response = conn.getresponse()
                answer = response.read(MAX_ANSWER + 1)
            except (OSError, http.client.HTTPException) as e:
                self.close()
                if reused and attempt == 1:  # the witness closed an idle connection: again
                    continue  # (a request it did answer is answered again: 409, then cosigned)
                raise WitnessUnavailable(
                    f"the witness at {url.geturl()} cannot be reached: {e}"
                ) from None
            if response.will_close or len(answer) > MAX_ANSWER:
                self.close()
            return response.status, response.getheader("Content-Type", ""), answer
        raise AssertionError("unreachable")  # pragma: no cover


def _post(
    url: urllib.parse.SplitResult,
    context: ssl.SSLContext,
    body: bytes,
    timeout: float,
    connection: Connection | None = None,
) -> tuple[int, str, bytes]:
    if connection is not None:
        return connection.post(url, context, body, timeout)
    once = Connection()
    try:
        return once.post(url, context, body, timeout)
    finally:
        once.close()


def _witness_size(content_type: str, answer: bytes) -> int | None:
    if content_type.split(";")[0].strip().lower() != SIZE_CONTENT_TYPE:
        return None
    text = answer.decode("ascii", errors="replace")
    if not text.endswith("\n") or not _SIZE.fullmatch(text[:-1]):
        return None
    return int(text[:-1])


def _accepted(answer: bytes, body: bytes, witness: Cosigner | None, where: str) -> bytes:
    """The cosignature lines of a 200 answer: with ``witness``, only that witness's lines, each
    verified, at least one, none dated 0 (tlog-witness: the timestamp MUST NOT be zero)."""
    try:
        lines = parse_signature_lines(answer)
    except VerificationError as e:
        raise WitnessUnavailable(f"{where} answered 200 without signature lines: {e}") from None
    if witness is None:
        return "".join(line + "\n" for line in lines).encode()
    kept = []
    for line in lines:
        if line_key(line) != (witness.name, witness.key_id):
            continue  # another key's line: ignored (tlog-witness)
        try:
            timestamp = verify_cosignature(body, line, witness)
        except VerificationError as e:
            raise WitnessUnavailable(f"{where} answered a bad cosignature: {e}") from None
        if timestamp == 0:
            raise WitnessUnavailable(f"{where} answered a cosignature without a time")
        kept.append(line + "\n")
    if not kept:
        raise WitnessUnavailable(f"{where} answered no cosignature by {witness.vkey}")
    return "".join(kept).encode()


def request_cosignature(
    url: str,
    tls: TlsMaterial | ssl.SSLContext,
    old_size: int,
    proof: Sequence[bytes],
    signed_note: bytes,
    *,
    prove: Prove | None = None,
    witness: Cosigner | None = None,
    timeout: float = 10.0,
    connection: Connection | None = None,
) -> bytes:
    """The witness's cosignature line(s) of ``signed_note``, asked at ``url`` (its submission
    prefix, ``https://host:port[/path]``) with a consistency proof from ``old_size`` (the size
    the caller believes the witness last cosigned; 0 and no proof the first time).

    On 409 the witness names the size it is at: the request is made once more with the proof
    ``prove(size)`` (none for size 0 or the checkpoint's own size), unless that size is beyond
    the checkpoint (the witness cosigned a larger tree: a rollback, or a fork). With ``witness``
    only that witness's lines are returned, each verified. :class:`WitnessRefused` for an
    answer other than 200; :class:`WitnessUnavailable` when it cannot be reached or answers
    what the protocol does not allow. ``connection``: a keep-alive connection to reuse (one
    is opened and closed for this request otherwise)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "https" or not parsed.hostname:
        raise ValueError(f"the witness URL {url!r} is not https://host:port[/prefix]")
    context = tls if isinstance(tls, ssl.SSLContext) else ssl_context(tls, server=False)
    try:
        text, _ = split_note(signed_note)
        cp = Checkpoint.from_body(text)
    except VerificationError as e:
        raise ValueError(f"not a signed checkpoint: {e}") from None
    where = f"the witness at {url}"
    for attempt in (1, 2):
        status, content_type, answer = _post(
            parsed, context, request_body(old_size, proof, signed_note), timeout, connection
        )
        if len(answer) > MAX_ANSWER:
            raise WitnessUnavailable(f"{where} answered more than {MAX_ANSWER} bytes")
        if status == 200:
            return _accepted(answer, text, witness, where)
        if status == 409:
            size = _witness_size(content_type, answer)
            if size is None:
                raise WitnessRefused(
                    f"{where} holds another checkpoint of {cp.origin} at size {old_size}: a fork",
                    409,
                )
            if size > cp.size:
                raise WitnessRefused(
                    f"{where} has cosigned {cp.origin} at size {size}, beyond this checkpoint's "
                    f"{cp.size}: a rollback or a fork of the log",
                    409,
                    size,
                )
            if attempt == 2 or prove is None:
                raise WitnessRefused(
                    f"{where} has cosigned {cp.origin} at size {size}, not {old_size}", 409, size
                )
            old_size = size
            proof = [] if size in (0, cp.size) else list(prove(size))
            continue
        reason = answer[:200].decode("utf-8", errors="replace").strip()
        raise WitnessRefused(
            f"{where} refused the checkpoint of {cp.origin} at size {cp.size}: HTTP {status}"
            + (f" ({reason})" if reason else ""),
            status,
        )
    raise AssertionError("unreachable")  # pragma: no cover
