"""Ed25519 signatures over connector answers.

A connector signs the canonical bytes of its answer: a domain label, the query id, its own
connector id, the Paillier key fingerprint, the digest of every household's tokens it was asked
about, the digest of its kind's layout, and the digest of its ciphertexts, every part
length-prefixed so no two answers share signed bytes. An answer that marks households (no figure
for them, see :func:`marks_digest`) signs one more part, the digest of its marks; an answer
without marks signs exactly the parts above, so its bytes are unchanged.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hedui.core.errors import CryptoError

_ANSWER_LABEL = b"hedui/answer/v1"


def tokens_digest(tokens: Sequence[bytes], selectors: Sequence[bytes] = ()) -> bytes:
    """SHA-256 over the queried tokens in sorted order: what the answer is an answer to. With
    decoys, over each token followed by the SHA-256 of its encrypted selector (tokens have one
    length), so that no selector can be moved to another token. A household's selectors are the
    same at every connector of a query: each is hashed once (:func:`_selector_digest`), not once
    per connector."""
    if not selectors:
        return hashlib.sha256(b"".join(sorted(tokens))).digest()
    if len(selectors) != len(tokens):
        raise CryptoError(f"{len(selectors)} selectors for {len(tokens)} tokens")
    pairs = sorted(t + _selector_digest(s) for t, s in zip(tokens, selectors, strict=True))
    return hashlib.sha256(b"hedui/selected-tokens/v2" + b"".join(pairs)).digest()


@functools.lru_cache(maxsize=1 << 15)  # a batch's selectors (1,024 households of up to 24)
def _selector_digest(selector: bytes) -> bytes:
    return hashlib.sha256(selector).digest()


def batch_queried(
    households: Sequence[Sequence[bytes]], selectors: Sequence[Sequence[bytes]] = ()
) -> bytes:
    """The digest of every household's token digest, in order: what a batch answers."""
    chosen = selectors or [()] * len(households)
    return hashlib.sha256(
        b"".join(tokens_digest(t, s) for t, s in zip(households, chosen, strict=True))
    ).digest()


def batch_digests(
    households: Sequence[Sequence[bytes]],
    packed: Sequence[bytes],
    selectors: Sequence[Sequence[bytes]] = (),
) -> tuple[bytes, bytes]:
    """(digest of every household's token digest, digest of the ciphertexts) of an answer: what
    its signature covers in place of the tokens and the ciphertexts themselves."""
    return batch_queried(households, selectors), ciphertexts_digest(packed)


def ciphertexts_digest(packed: Sequence[bytes]) -> bytes:
    """The digest of a batch answer's ciphertexts, signed in place of the ciphertexts."""
    return hashlib.sha256(b"".join(len(p).to_bytes(4, "big") + p for p in packed)).digest()


def marks_digest(marked: Sequence[tuple[int, int]]) -> bytes:
    """The digest of an answer's marks ((household index, cause) in ascending order), signed
    as its last part; empty for an answer without marks, which then has no such part."""
    if not marked:
        return b""
    return hashlib.sha256(
        b"".join(i.to_bytes(4, "big") + c.to_bytes(4, "big") for i, c in marked)
    ).digest()


def answer_bytes(
    query_id: str,
    connector_id: str,
    key_fingerprint: bytes,
    queried: bytes,
    layout: bytes,
    packed: bytes,
    marked: bytes = b"",
) -> bytes:
    """``queried`` and ``packed`` are the digests of :func:`batch_digests`, ``layout`` the
    digest of the kind's layout, ``marked`` the :func:`marks_digest` of the answer's marks
    (a part of its own only when there are marks: length-prefixed parts, so an answer with a
    mark never shares signed bytes with one without)."""
    parts = [
        _ANSWER_LABEL,
        query_id.encode(),
        connector_id.encode(),
        key_fingerprint,
        queried,
        layout,
        packed,
    ]
    if marked:
        parts.append(marked)
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def answer_digest(signed_bytes: bytes, signature: bytes) -> bytes:
    """The digest of one signed answer, as recorded in the audit trail."""
    return hashlib.sha256(signed_bytes + signature).digest()


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    return key.sign(data)


def verify(key: Ed25519PublicKey, data: bytes, signature: bytes) -> None:
    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise CryptoError("the signature does not verify") from None


def private_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_to_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise CryptoError("not an Ed25519 private key")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise CryptoError("not an Ed25519 public key")
    return key
