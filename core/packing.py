"""Slots: several households' values packed into one Paillier plaintext, so that a connector
answers many households with few ciphertexts and one decryption yields many totals (issue #5).

Every connector kind has one layout (:class:`BatchLayout`), for one household or a thousand: one
slot per field of the kind, household i of a ciphertext at bit i * stride. A slot's width is sized
for the largest total it can hold (the field's declared maximum times the number of connectors
of the kind) plus one guard bit: no sum of a kind's answers can carry into the next slot.
Overflow is impossible by construction, not by luck. A kind's ciphertexts hold only that kind's
slots, so the key custodian leaves a kind it may not release undecrypted instead of masking it.

After the fields, every household has one more slot, :data:`DAMAGED`: how many of the members'
stored rows failed their seal at the kind's connectors. A connector asked with decoys (issue #26)
cannot tell a member's row from a decoy's, so it counts a damaged row under the row's encrypted
selector there instead of marking the household; the key custodian withholds the kind for a
household whose count is not zero.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from hedui.core.errors import CryptoError
from hedui.proto.v1 import connector_pb2


@dataclass(frozen=True)
class Slot:
    field: str
    offset: int
    bits: int
    max_total: int  # the largest total the slot may hold


MAX_SLOTS = 64  # more fields than any connector kind declares
DAMAGED = "damaged_rows"  # the slot counting a household's damaged rows (not a field of any kind)
MAX_ROWS = 128  # a connector's rows of one household at most: the tokens a query names for it


def _bounded(slots: Iterable[tuple[str, int, int, int]], plaintext_bits: int) -> tuple[Slot, ...]:
    """Slots as a query carries them, each checked against the key's plaintext size before any
    integer is built from them (an offset of 2^31 would otherwise allocate 256 MiB)."""
    out: list[Slot] = []
    for f, o, b, m in slots:
        if len(out) == MAX_SLOTS:
            raise CryptoError(f"a layout has at most {MAX_SLOTS} slots")
        if not (0 <= o and 1 <= b and o + b <= plaintext_bits and 0 <= m < 1 << b):
            raise CryptoError(
                f"slot {f[:40]!r} lies outside the key's {plaintext_bits} plaintext bits"
            )
        out.append(Slot(f, o, b, m))
    return tuple(out)


def slots_pb(slots: Iterable[Slot]) -> list[connector_pb2.Slot]:
    """Slots as a query carries them (the inverse of :func:`from_wire`)."""
    return [
        connector_pb2.Slot(field=s.field, offset=s.offset, bits=s.bits, max_total=s.max_total)
        for s in slots
    ]


def batch_layout_pb(layout: BatchLayout) -> connector_pb2.BatchLayout:
    """A batch layout as a query carries it (the inverse of :func:`batch_from_wire`)."""
    return connector_pb2.BatchLayout(
        slots=slots_pb(layout.slots), stride=layout.stride, per_ciphertext=layout.per_ciphertext
    )


@dataclass(frozen=True)
class BatchLayout:
    """The layout of one connector kind: ``per_ciphertext`` households to a plaintext.

    Household i of a ciphertext starts at bit i * stride; its fields sit at their slot offsets
    within the stride."""

    slots: tuple[Slot, ...]
    stride: int
    per_ciphertext: int

    @cached_property
    def _digest(self) -> bytes:
        text = ";".join(f"{s.field}:{s.offset}:{s.bits}:{s.max_total}" for s in self.slots)
        return hashlib.sha256(
            f"hedui/batch-layout/v1\0{self.stride}\0{self.per_ciphertext}\0{text}".encode()
        ).digest()

    def digest(self) -> bytes:
        return self._digest

    @property
    def fields(self) -> tuple[Slot, ...]:
        """The slots of the kind's fields (every slot but :data:`DAMAGED`)."""
        return tuple(s for s in self.slots if s.field != DAMAGED)

    @property
    def damaged(self) -> Slot | None:
        """The slot counting damaged rows (None in a layout of a service older than it)."""
        return next((s for s in self.slots if s.field == DAMAGED), None)

    def ciphertexts(self, households: int) -> int:
        return -(-households // self.per_ciphertext)

    def pack(self, households: Sequence[Mapping[str, int]]) -> list[int]:
        out = []
        for start in range(0, len(households), self.per_ciphertext):
            m = 0
            for i, values in enumerate(households[start : start + self.per_ciphertext]):
                for s in self.slots:
                    v = values.get(s.field, 0)
                    if not 0 <= v <= s.max_total:
                        raise CryptoError(f"{s.field} = {v} is outside 0..{s.max_total}")
                    m |= v << (i * self.stride + s.offset)
            out.append(m)
        return out

    def unpack(self, plaintexts: list[int], households: int) -> list[dict[str, int]]:
        out = []
        for h in range(households):
            m = plaintexts[h // self.per_ciphertext] >> ((h % self.per_ciphertext) * self.stride)
            out.append({s.field: (m >> s.offset) & ((1 << s.bits) - 1) for s in self.slots})
        return out


def batch_layout(
    kind_fields: Iterable[tuple[str, int]],
    holders: int,
    plaintext_bits: int,
    stride: int = 0,
) -> BatchLayout:
    """The layout of a kind whose fields (name, max_value) ``holders`` connectors share, and
    its :data:`DAMAGED` slot; each household ``stride`` bits apart (0: as many as its slots
    take)."""
    slots, offset = [], 0
    for name, max_value in (*kind_fields, (DAMAGED, MAX_ROWS)):
        max_total = max_value * holders
        bits = max_total.bit_length() + 1  # one guard bit
        slots.append(Slot(name, offset, bits, max_total))
        offset += bits
    stride = stride or offset
    if offset > stride or stride > plaintext_bits:
        raise CryptoError("the key is too small for one household of this kind")
    return BatchLayout(tuple(slots), stride, plaintext_bits // stride)


def uniform_layouts(
    kinds: Mapping[str, tuple[Sequence[tuple[str, int]], int]], plaintext_bits: int
) -> dict[str, BatchLayout]:
    """Every kind's layout (kind -> (fields, holders)) with one household stride, the widest
    kind's: household i of a batch then sits at the same bits in every kind's plaintext, so one
    encrypted selector per token, made for those bits (issue #26), serves every connector."""
    natural = {k: batch_layout(f, h, plaintext_bits) for k, (f, h) in kinds.items()}
    stride = max((layout.stride for layout in natural.values()), default=0)
    return {k: batch_layout(f, h, plaintext_bits, stride) for k, (f, h) in kinds.items()}


def placement(layouts: Iterable[BatchLayout]) -> tuple[int, int]:
    """(household stride, households per ciphertext) shared by uniform layouts."""
    shapes = {(layout.stride, layout.per_ciphertext) for layout in layouts}
    if len(shapes) != 1:
        raise CryptoError("the layouts do not share one household stride")
    return shapes.pop()


def batch_from_wire(
    slots: Iterable[tuple[str, int, int, int]],
    stride: int,
    per_ciphertext: int,
    plaintext_bits: int,
) -> BatchLayout:
    if not (1 <= stride <= plaintext_bits and 1 <= per_ciphertext <= plaintext_bits // stride):
        raise CryptoError(
            f"{per_ciphertext} households of {stride} bits do not fit the key's "
            f"{plaintext_bits} plaintext bits"
        )
    layout = BatchLayout(_bounded(slots, stride), stride, per_ciphertext)
    end = 0
    for s in sorted(layout.slots, key=lambda s: s.offset):
        if s.offset < end or s.max_total.bit_length() + 1 > s.bits:
            raise CryptoError(f"slot {s.field} overlaps another or is too narrow")
        end = s.offset + s.bits
    if end > stride or per_ciphertext < 1:
        raise CryptoError("the batch layout's stride is too small")
    return layout
