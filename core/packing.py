"""Slots: several values packed into one Paillier plaintext, so that one ciphertext per connector
carries all its fields and one decryption yields every total (issue #5).

The interactive layout has one slot per field of the deployment (banks share theirs). A slot's
width is sized for the largest total it can hold (the field's declared maximum times the number
of connectors that hold it), plus ``MASK_BITS`` so the key custodian can hide a slot under a
random mask before decrypting, plus one guard bit: no sum of a deployment's answers, masked or
not, can carry into the next slot. Overflow is impossible by construction, not by luck.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from hedui.core.deployment import kind_of
from hedui.core.errors import CryptoError
from hedui.proto.v1 import connector_pb2

MASK_BITS = 40  # statistical distance of a masked slot from uniform: at most 2^-40


@dataclass(frozen=True)
class Slot:
    field: str
    offset: int
    bits: int
    max_total: int  # the largest unmasked total the slot may hold


@dataclass(frozen=True)
class Layout:
    slots: tuple[Slot, ...]

    @property
    def total_bits(self) -> int:
        return sum(s.bits for s in self.slots)

    def digest(self) -> bytes:
        return self._digest

    def slot(self, field: str) -> Slot:
        for s in self.slots:
            if s.field == field:
                return s
        raise CryptoError(f"the layout has no slot for {field}")

    @cached_property
    def _digest(self) -> bytes:
        text = ";".join(f"{s.field}:{s.offset}:{s.bits}:{s.max_total}" for s in self.slots)
        return hashlib.sha256(b"hedui/layout/v1\0" + text.encode()).digest()

    def pack(self, values: Mapping[str, int]) -> int:
        """One plaintext holding ``values`` in their slots (other slots 0)."""
        m = 0
        for field, value in values.items():
            s = self.slot(field)
            if not 0 <= value <= s.max_total:
                raise CryptoError(f"{field} = {value} is outside 0..{s.max_total}")
            m |= value << s.offset
        return m

    def unpack(self, m: int) -> dict[str, int]:
        return {s.field: (m >> s.offset) & ((1 << s.bits) - 1) for s in self.slots}

    def mask(self, fields: Iterable[str]) -> tuple[int, dict[str, int]]:
        """A random plaintext that hides ``fields`` once added: each masked slot becomes
        value + r with r uniform below 2^(value bits + MASK_BITS)."""
        m, parts = 0, {}
        for field in fields:
            s = self.slot(field)
            r = secrets.randbits(s.bits - 1)
            parts[field] = r
            m += r << s.offset
        return m, parts

    def fits(self, plaintext_bits: int) -> bool:
        return self.total_bits <= plaintext_bits

    def restricted(self, fields: Iterable[str]) -> Layout:
        """The same slots, only those of ``fields``: the layout one connector kind answers in.
        Each kind's answers are summed and decrypted apart, so a connector cannot reach into
        another kind's slots (a "negative" amount there would show outside its own)."""
        keep = set(fields)
        return Layout(tuple(s for s in self.slots if s.field in keep))

    def outside(self, m: int) -> int:
        """The bits of ``m`` that lie in no slot of this layout (0 for an honest sum)."""
        for s in self.slots:
            m &= ~(((1 << s.bits) - 1) << s.offset)
        return m


def for_connectors(connector_ids: Iterable[str]) -> Layout:
    """The interactive layout of a deployment: one slot per field, in a fixed order."""
    holders: dict[str, int] = {}
    maxima: dict[str, int] = {}
    for cid in connector_ids:
        for f in kind_of(cid).fields:
            holders[f.name] = holders.get(f.name, 0) + 1
            maxima[f.name] = f.max_value
    slots, offset = [], 0
    for field in sorted(holders):
        max_total = maxima[field] * holders[field]
        bits = max_total.bit_length() + MASK_BITS + 1
        slots.append(Slot(field, offset, bits, max_total))
        offset += bits
    return Layout(tuple(slots))


def kind_layout(layout: Layout, connector_id: str) -> Layout:
    """The slots a connector answers in on the interactive path: those of its kind."""
    return layout.restricted(kind_of(connector_id).field_names)


def kind_layouts(layout: Layout, connector_ids: Iterable[str]) -> dict[str, Layout]:
    """:func:`kind_layout` of every connector, one shared instance per kind (so each kind's
    digest is computed once)."""
    by_kind: dict[str, Layout] = {}
    out = {}
    for cid in connector_ids:
        kind = kind_of(cid).kind
        if kind not in by_kind:
            by_kind[kind] = kind_layout(layout, cid)
        out[cid] = by_kind[kind]
    return out


MAX_SLOTS = 64  # more fields than any connector kind declares


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


def from_wire(slots: Iterable[tuple[str, int, int, int]], plaintext_bits: int) -> Layout:
    """A layout as a query carries it, checked for bounds and overlaps."""
    out = _bounded(slots, plaintext_bits)
    end = 0
    for s in sorted(out, key=lambda s: s.offset):
        if (
            s.offset < end
            or s.bits <= MASK_BITS
            or s.max_total.bit_length() + MASK_BITS + 1 > s.bits
        ):
            raise CryptoError(f"slot {s.field} overlaps another or is too narrow")
        end = s.offset + s.bits
    return Layout(out)


@dataclass(frozen=True)
class BatchLayout:
    """The batch layout of one connector kind: ``per_ciphertext`` households to a plaintext.

    Household i of a ciphertext starts at bit i * stride; its fields sit at their slot offsets
    within the stride. No room for masks: a kind's ciphertexts hold only that kind's slots, so
    the custodian leaves a kind it may not release undecrypted instead of masking it.
    """

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

    def ciphertexts(self, households: int) -> int:
        return -(-households // self.per_ciphertext)

    def pack(self, households: list[Mapping[str, int]]) -> list[int]:
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
    kind_fields: Iterable[tuple[str, int]], holders: int, plaintext_bits: int
) -> BatchLayout:
    """The batch layout of a kind whose fields (name, max_value) ``holders`` connectors share."""
    slots, offset = [], 0
    for name, max_value in kind_fields:
        max_total = max_value * holders
        bits = max_total.bit_length() + 1  # one guard bit
        slots.append(Slot(name, offset, bits, max_total))
        offset += bits
    per = max(1, plaintext_bits // offset)
    if offset > plaintext_bits:
        raise CryptoError("the key is too small for one household of this kind")
    return BatchLayout(tuple(slots), offset, per)


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
