"""Signed connector answers as the service receives them, and their homomorphic sum."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hedui.core import signing
from hedui.core.paillier import Ciphertext, PublicKey


@dataclass(frozen=True)
class BatchAnswer:
    """A connector's signed answer about one or many households."""

    connector_id: str
    kind: str
    packed: tuple[bytes, ...]
    signature: bytes
    key_fingerprint: bytes
    queried: bytes  # digest of every household's token digest
    ciphertexts: bytes  # digest of the packed ciphertexts

    def signed_bytes(self, query_id: str, layout: bytes) -> bytes:
        return signing.answer_bytes(
            query_id,
            self.connector_id,
            self.key_fingerprint,
            self.queried,
            layout,
            self.ciphertexts,
        )

    def digest(self, query_id: str, layout: bytes) -> bytes:
        return signing.answer_digest(self.signed_bytes(query_id, layout), self.signature)


def aggregate_batch(public: PublicKey, answers: Sequence[BatchAnswer]) -> list[Ciphertext]:
    """The index-wise product of answers of one kind: ciphertext i sums every connector's i."""
    count = len(answers[0].packed)
    return [
        public.add(public.from_bytes(a.packed[i], a.key_fingerprint) for a in answers)
        for i in range(count)
    ]
