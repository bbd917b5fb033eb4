"""Signed connector answers as the service receives them, and their homomorphic sum."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hedui.core import signing
from hedui.core.paillier import Ciphertext, PublicKey


@dataclass(frozen=True)
class SignedAnswer:
    connector_id: str
    fields: tuple[tuple[str, bytes], ...]  # (field name, ciphertext bytes) in declared order
    signature: bytes
    key_fingerprint: bytes
    queried: bytes  # signing.tokens_digest of the tokens this connector was asked about

    def signed_bytes(self, query_id: str) -> bytes:
        return signing.answer_bytes(
            query_id, self.connector_id, self.key_fingerprint, self.queried, self.fields
        )

    def digest(self, query_id: str) -> bytes:
        return signing.answer_digest(self.signed_bytes(query_id), self.signature)


def aggregate(public: PublicKey, answers: Sequence[SignedAnswer]) -> dict[str, Ciphertext]:
    """Multiply the ciphertexts field by field: the encryption of each field's household total."""
    by_field: dict[str, list[Ciphertext]] = {}
    for answer in answers:
        for name, data in answer.fields:
            by_field.setdefault(name, []).append(public.from_bytes(data, answer.key_fingerprint))
    return {name: public.add(cts) for name, cts in by_field.items()}


def contributors(answers: Sequence[SignedAnswer]) -> Mapping[str, tuple[SignedAnswer, ...]]:
    by_field: dict[str, list[SignedAnswer]] = {}
    for answer in answers:
        for name, _ in answer.fields:
            by_field.setdefault(name, []).append(answer)
    return {k: tuple(v) for k, v in by_field.items()}
