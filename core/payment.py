"""The benefit sealed for a payment system (issue #24 item 2, disclosure ``decision_only``).

An intake system that passes the benefit straight to payment need not see it: the service then
gives it the decision and each rule's outcome, and the benefit only sealed to the payment
system's X25519 key with HPKE (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
AES-128-GCM; ``cryptography``'s implementation). The sealed box is bound to its request id by
HPKE's ``info``; it holds the request id, programme, region, date, decision, benefit in fen, the
audit entry's index and the figures opening (so the payment system alone can open the log's
figures commitment with ``hedui audit check``).
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from hedui.core.errors import CryptoError
from hedui.proto.v1 import common_pb2, verification_pb2

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
_INFO = b"hedui/sealed-benefit/v1\0"


def _info(request_id: str) -> bytes:
    return _INFO + request_id.encode()


def seal_benefit(key: X25519PublicKey, verdict: verification_pb2.Verdict) -> bytes:
    """The benefit of ``verdict`` (and what identifies it) sealed to the payment key."""
    body = {
        "request_id": verdict.request_id,
        "program": verdict.program,
        "region": verdict.region,
        "as_of": verdict.as_of,
        "decision": common_pb2.Decision.Name(verdict.decision),
        "benefit_fen": int(verdict.benefit_fen),
        "audit_leaf_index": int(verdict.audit.leaf_index),
        "figures_opening": verdict.figures_opening.hex(),
    }
    plaintext = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return bytes(SUITE.encrypt(plaintext, key, _info(verdict.request_id)))


def open_benefit(key: X25519PrivateKey, sealed: bytes, request_id: str) -> dict[str, Any]:
    """What :func:`seal_benefit` sealed for ``request_id``; CryptoError when it is not sealed
    to this key, was altered, or is another request's."""
    try:
        plaintext = SUITE.decrypt(sealed, key, _info(request_id))
        body = json.loads(plaintext)
    except Exception:
        raise CryptoError(
            f"the sealed benefit of request {request_id!r} does not open with this key (another "
            "payment key, another request's, or altered)"
        ) from None
    if not isinstance(body, dict) or body.get("request_id") != request_id:
        raise CryptoError(f"the sealed benefit is not request {request_id!r}'s")
    return body


def new_payment_key() -> tuple[bytes, bytes]:
    """A payment system's key pair: (private PEM, public PEM)."""
    private = X25519PrivateKey.generate()
    return (
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def load_public(pem: bytes, where: str) -> X25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        key = None
    if not isinstance(key, X25519PublicKey):
        raise CryptoError(
            f"{where} is not an X25519 public key (PEM): make one with `hedui payment keys`"
        )
    return key


def load_private(pem: bytes, where: str) -> X25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, X25519PrivateKey):
        raise CryptoError(f"{where} is not an X25519 private key (PEM)")
    return key
