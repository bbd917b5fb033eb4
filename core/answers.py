"""Signed connector answers as the service receives them, and their homomorphic sum.

A connector that cannot give a household's figure (a stored row fails its seal, a total above
its declared maximum) answers the others and *marks* that household: its slots are zero and
the mark is signed with the answer, so the service can neither strip it (which would make the
connector's figure a favourable 0) nor add one; the key custodian then releases none of that
kind's fields for the household and names the connector and the cause.

Asked with decoys (issue #26), a connector cannot tell whose row is damaged; it counts the row
under its encrypted selector instead (:data:`hedui.core.packing.DAMAGED`), and the custodian
names the kind (:func:`damage_reason`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hedui.core import signing
from hedui.core.errors import CryptoError
from hedui.core.paillier import Ciphertext, PublicKey
from hedui.proto.v1 import connector_pb2

Mark = tuple[int, int]  # (household index in the query, connector_pb2.MarkCause)

DATA_INTEGRITY: int = connector_pb2.MARK_DATA_INTEGRITY
DECLARED_MAXIMUM: int = connector_pb2.MARK_DECLARED_MAXIMUM
# with decoys: a damaged row of the household's list, counted under its selector (not withheld)
DAMAGED_COUNTED: int = connector_pb2.MARK_DAMAGED_COUNTED
# what a mark's cause is called wherever it is shown (fixed words, never the connector's)
MARK_CAUSES: Mapping[int, str] = {
    DATA_INTEGRITY: "stored data fails its integrity check",
    DECLARED_MAXIMUM: "a total is above its declared maximum",
    DAMAGED_COUNTED: "a row of the household's decoy group fails its integrity check",
}
WITHHOLDING = frozenset({DATA_INTEGRITY, DECLARED_MAXIMUM})  # the causes that withhold a kind


def check_marks(marked: Sequence[Mark], households: int) -> None:
    """Refuse marks that are not each a household of the query, once, in ascending order, with
    a known cause: the one form that is signed."""
    previous = -1
    for index, cause in marked:
        if not previous < index < households:
            raise CryptoError("its marks are not households of the query in ascending order")
        if cause not in MARK_CAUSES:
            raise CryptoError("a mark has no known cause")
        previous = index


def mark_reason(connector_id: str, cause: int) -> str:
    """Why a marked household has no figure of the connector's kind, e.g. ``hrss: stored data
    fails its integrity check``."""
    return f"{connector_id}: {MARK_CAUSES[cause]}"


def damage_reason(kind: str, declared_by: Iterable[str]) -> str:
    """Why a household whose members' damaged rows were counted under encryption has no figure
    of the kind: the connector that declared a damaged row in its list (``hrss: stored data
    fails its integrity check``), or the connectors that did, one of which holds the member's."""
    ids = sorted(declared_by)
    if len(ids) == 1:
        return mark_reason(ids[0], DATA_INTEGRITY)
    return f"{kind}: a member's {MARK_CAUSES[DATA_INTEGRITY]} at one of {', '.join(ids)}"


def marks_pb(marked: Sequence[Mark]) -> list[connector_pb2.Mark]:
    return [connector_pb2.Mark(household=i, cause=c) for i, c in marked]  # type: ignore[arg-type]


def marks_from_pb(pb: Sequence[connector_pb2.Mark]) -> tuple[Mark, ...]:
    return tuple((int(m.household), int(m.cause)) for m in pb)


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
    marked: tuple[Mark, ...] = ()  # households it gives no figure for, signed with the rest

    def signed_bytes(self, query_id: str, layout: bytes) -> bytes:
        return signing.answer_bytes(
            query_id,
            self.connector_id,
            self.key_fingerprint,
            self.queried,
            layout,
            self.ciphertexts,
            signing.marks_digest(self.marked),
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
