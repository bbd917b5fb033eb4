"""Hypothesis strategies over protobuf request messages, built field by field from descriptors.

Every scalar draws from its type's edges (0, -1, 2^31-1, 2^63-1, the unsigned maxima, …) as well
as from its whole range; strings and bytes draw short values, ID-number-like values, known names
and giant values (at most :data:`GIANT` bytes); repeated fields draw a few elements or a huge
count of one small element. Fields named in :data:`CAPPED` (counts and offsets whose value the
receiving code may turn into an allocation) are capped at :data:`CAP` so that one request cannot
make a server allocate more than a few megabytes before the size is checked.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from hedui.core.resident_id import make

M = TypeVar("M", bound=Message)
# a message or field descriptor (the upb and pure-Python descriptor classes differ in type)
Descriptor = Any

GIANT = 64 * 1024  # the largest string or bytes value drawn
HUGE_COUNT = 4096  # the largest repeated count drawn
MAX_DEPTH = 3  # nested messages below this depth are left empty
MAX_REQUEST_BYTES = 3 * 1024 * 1024  # below the servers' 4 MiB receive limit

# Values the receiving code may turn into a bit shift or a per-item allocation, capped at 2^24
# (uncapped, up to 2^32-1 would be drawn): a connector shifts each figure by its slot's offset
# and household i of a batch by i * stride, so an offset of 2^32-1 is a 512 MiB integer and a
# stride of 2^32-1 is 512 MiB per household; at 2^24 it is 2 MiB. A household count the
# custodian would allocate per item (2^31-1 was reported to take 3 GiB) stays below 2^24 too.
CAP = 2**24
CAPPED = frozenset(
    {
        "hedui.v1.DecryptBatchRequest.households",
        "hedui.v1.TokenGrant.households",
        "hedui.v1.Slot.offset",
        "hedui.v1.Slot.bits",
        "hedui.v1.BatchLayout.stride",
        "hedui.v1.BatchLayout.per_ciphertext",
    }
)

_I32 = (-(2**31), 2**31 - 1)
_I64 = (-(2**63), 2**63 - 1)
_U32 = (0, 2**32 - 1)
_U64 = (0, 2**64 - 1)

_INT_EDGES = {
    _I32: [0, 1, -1, 2, 127, 128, 255, 1024, 2**31 - 1, -(2**31), 2**24, -(2**24)],
    _I64: [0, 1, -1, 2**31 - 1, 2**31, -(2**31), 2**53, 2**63 - 1, -(2**63), 10**13, -(10**13)],
    _U32: [0, 1, 2, 8, 64, 1024, 1025, 2**11, 2**16, 2**20, 2**24, 2**31 - 1, 2**31, 2**32 - 1],
    _U64: [0, 1, 2, 1000, 2**31, 2**32, 2**53, 2**63 - 1, 2**63, 2**64 - 1],
}

_NEAR = [0, 2**31 - 1, 2**32 - 1, 2**53, 2**63 - 1, 2**64 - 1, -(2**31), -(2**63)]

_RANGES = {
    FieldDescriptor.TYPE_INT32: _I32,
    FieldDescriptor.TYPE_SINT32: _I32,
    FieldDescriptor.TYPE_SFIXED32: _I32,
    FieldDescriptor.TYPE_INT64: _I64,
    FieldDescriptor.TYPE_SINT64: _I64,
    FieldDescriptor.TYPE_SFIXED64: _I64,
    FieldDescriptor.TYPE_UINT32: _U32,
    FieldDescriptor.TYPE_FIXED32: _U32,
    FieldDescriptor.TYPE_UINT64: _U64,
    FieldDescriptor.TYPE_FIXED64: _U64,
}


def integers_for(lo: int, hi: int, edges: Sequence[int]) -> st.SearchStrategy[int]:
    """The edges and the bounds two times in three, any value of the range otherwise."""
    inside = sorted({e for e in edges if lo <= e <= hi} | {lo, hi})
    return st.one_of(st.sampled_from(inside), st.sampled_from(inside), st.integers(lo, hi))


def _id_like() -> list[str]:
    """Strings that look like resident ID numbers, valid or broken in one way each."""
    valid = make("330106", dt.date(1980, 5, 17), 123).value  # valid, not in any register
    woman = make("110101", dt.date(1990, 2, 28), 42).value
    return [
        valid,
        woman,
        valid.lower(),
        valid[:17] + ("0" if valid[17] != "0" else "1"),  # wrong check character
        valid[:17],  # one short
        valid + "0",  # one long
        "330106800517123",  # 15-digit legacy form
        "000000198005171230",  # no such province
        "330106" + "29991231" + "1230",  # birth date in the future
        "330106" + "18000101" + "1230",  # implausibly old
        "330106" + "19800230" + "1230",  # 30 February
        valid.translate(str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")),  # full width
        valid.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),  # Arabic-Indic digits
        f"  {valid}\t",
        valid[:9] + "\x00" + valid[10:],
        valid[:17] + "x",
        "1" * 18,
        "X" * 18,
        "9" * 64,
        "9" * 65,
        "﷽" * 18,  # NFKC expands each to 18 characters
        "１" * 64,
    ]


ID_LIKE = _id_like()
NAMES = [
    "dibao",
    "dibian",
    "zhichu",
    "tekun",
    "demo",
    "service",
    "registry",
    "custodian",
    "intake",
    "auditor",
    "bank-01",
    "bank-73",
    "bank-74",
    "hrss",
    "tax",
    "monthly_wage",
    "deposits",
    "applicant",
    "caller",
    "time",
    "2024-01-01",
    "2024-02-30",
    "9999-12-31",
    "0001-01-01",
    "1970-01-01T00:00:00",
]
ADVERSARIAL = [
    "",
    " ",
    "\x00",
    "\n",
    "\x7f",
    "a" * 128,
    "a" * 129,
    "'; DROP TABLE log; --",
    "' OR '1'='1",
    "%s%s%s%n",
    "{0}{1}",
    "../../../../etc/passwd",
    "\u202e\u0644\u0627",  # right-to-left override and Arabic
    "\U0001f600" * 40,
    "𝕏" * 129,
    "核对" * 70,
    "\ufeff",
    "NaN",
    "-1",
    "18446744073709551616",
]


def giant_strings() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(129, GIANT).map(lambda n: "A" * n),
        st.integers(1, GIANT // 4).map(lambda n: "核" * n),
        st.integers(1, GIANT // 16).map(lambda n: "330106198005171235" * (n // 18 + 1)),
    )


def strings(*, giant: bool = True) -> st.SearchStrategy[str]:
    options: list[st.SearchStrategy[str]] = [
        st.text(max_size=40),
        st.sampled_from(ID_LIKE),
        st.sampled_from(NAMES),
        st.sampled_from(ADVERSARIAL),
        st.text(st.characters(codec="utf-8"), max_size=20),
    ]
    if giant:
        options.append(giant_strings())
    return st.one_of(options)


def byte_strings(*, giant: bool = True) -> st.SearchStrategy[bytes]:
    options: list[st.SearchStrategy[bytes]] = [
        st.binary(max_size=64),
        st.binary(min_size=32, max_size=32),  # a token or a digest
        st.binary(min_size=64, max_size=64),  # an Ed25519 signature
        st.sampled_from([b"", b"\x00" * 32, b"\xff" * 32, b"\x00" * 256, b"\xff" * 512]),
    ]
    if giant:
        options.append(
            st.tuples(st.integers(1, GIANT), st.binary(min_size=1, max_size=8)).map(
                lambda t: (t[1] * (t[0] // len(t[1]) + 1))[: t[0]]
            )
        )
    return st.one_of(options)


def _scalar(field: Any, *, giant: bool) -> st.SearchStrategy[Any]:
    t = field.type
    if t in _RANGES:
        lo, hi = _RANGES[t]
        if field.full_name in CAPPED:
            hi = min(hi, CAP)
            return integers_for(lo, hi, [e for e in _INT_EDGES[(lo, _RANGES[t][1])] if e <= CAP])
        return integers_for(lo, hi, _INT_EDGES[(lo, hi)])
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_STRING:
        return strings(giant=giant)
    if t == FieldDescriptor.TYPE_BYTES:
        return byte_strings(giant=giant)
    if t == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        # proto3 enums are open: unknown numbers reach the server as they are
        return st.sampled_from([*known, 99, -1, 2**31 - 1])
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, width=32 if t == FieldDescriptor.TYPE_FLOAT else 64)
    raise NotImplementedError(field.full_name)


def _value(field: Any, depth: int, *, giant: bool) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return messages_of(field.message_type, depth + 1, giant=giant)
    return _scalar(field, giant=giant)


def _repeated(field: Any, depth: int, *, giant: bool = True) -> st.SearchStrategy[list[Any]]:
    few = st.lists(_value(field, depth, giant=giant), max_size=3)
    if not giant:
        return few
    # a huge count of one small element (no giant value and no huge count inside it: the
    # request stays below 4 MiB)
    many = st.tuples(_value(field, depth, giant=False), st.integers(4, HUGE_COUNT)).map(
        lambda t: [t[0]] * t[1]
    )
    return st.one_of(few, few, many)


def _assign(msg: Message, field: Any, value: Any) -> None:
    if field.is_repeated:
        target = getattr(msg, field.name)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for v in value:
                target.add().CopyFrom(v)
        else:
            target.extend(value)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(msg, field.name).CopyFrom(value)
    else:
        setattr(msg, field.name, value)


def messages_of(
    descriptor: Descriptor, depth: int = 0, *, giant: bool = True
) -> st.SearchStrategy[Message]:
    """Messages of this type: every field either left unset or drawn as above; one member
    of each oneof at most."""
    from google.protobuf import message_factory

    cls = message_factory.GetMessageClass(descriptor)
    if depth > MAX_DEPTH:
        return st.builds(cls)
    # proto3 `optional` fields sit in a synthetic oneof of their own, named "_<field>"
    real_oneofs = [
        o for o in descriptor.oneofs if [f.name for f in o.fields] != [o.name.removeprefix("_")]
    ]

    @st.composite
    def build(draw: Callable[[st.SearchStrategy[Any]], Any]) -> Message:
        msg = cls()
        for oneof in real_oneofs:
            chosen = draw(st.sampled_from([None, *oneof.fields]))
            if chosen is not None:
                _assign(msg, chosen, draw(_value(chosen, depth, giant=giant)))
        # one time in four, every integer field set near one shared edge value (start and end,
        # index and size, first and second: a range that is valid in itself but far out)
        near = draw(st.sampled_from(_NEAR)) if draw(st.booleans()) and draw(st.booleans()) else None
        for field in descriptor.fields:
            if field.containing_oneof in real_oneofs:
                continue  # drawn above
            if near is not None and field.type in _RANGES and not field.is_repeated:
                lo, hi = _RANGES[field.type]
                hi = min(hi, CAP) if field.full_name in CAPPED else hi
                _assign(msg, field, min(max(near + draw(st.integers(-1, 2)), lo), hi))
            elif not draw(st.booleans()):
                continue  # left unset
            elif field.is_repeated:
                _assign(msg, field, draw(_repeated(field, depth, giant=giant)))
            else:
                _assign(msg, field, draw(_value(field, depth, giant=giant)))
        return msg

    return build()


def requests(cls: type[M]) -> st.SearchStrategy[M]:
    """Requests of type ``cls``, kept below the servers' receive limit; an empty one among them."""
    strategy = messages_of(cls.DESCRIPTOR).filter(lambda m: m.ByteSize() < MAX_REQUEST_BYTES)
    return st.one_of(st.just(cls()), strategy)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class Flip:
    """Change the value there by one bit (a signature or digest of the right length, wrong)."""

    bit: int


@dataclasses.dataclass(frozen=True)
class Add:
    """Add to the integer there (kept within its type's range): one more household, a grant a
    little older, a slot one bit over."""

    delta: int


# A mutation: a path of (field name, element index or None) steps and what is put at its end:
# a value, a Flip or an Add of the value there, or None to clear the field. The index of a
# repeated field is taken modulo its length.
Step = tuple[str, int | None]
Mutation = tuple[tuple[Step, ...], Any]

_DELTAS = [-1, 1, 2, -2, 8, 40, 2**11, -(2**11), 2**31, -(2**31), 2**32, 2**63, -(2**63)]


# Where a mutation may land: the steps to it (field name, whether it is repeated), the field
# there, and whether the whole field is replaced or one element of a repeated scalar.
Target = tuple[tuple[tuple[str, bool], ...], Any, bool]


@functools.cache
def _targets(descriptor: Descriptor, depth: int) -> tuple[Target, ...]:
    out: list[Target] = []
    for f in descriptor.fields:
        out.append((((f.name, False),), f, False))
        if f.type == FieldDescriptor.TYPE_MESSAGE and depth < 2:
            for steps, leaf, element in _targets(f.message_type, depth + 1):
                out.append((((f.name, f.is_repeated), *steps), leaf, element))
        elif f.is_repeated:
            out.append((((f.name, True),), f, True))
    return tuple(out)


@functools.cache
def _weighted_targets(descriptor: Descriptor) -> tuple[Target, ...]:
    """Every target once, an integer field three times: counts, offsets and sizes are where
    overflows hide, and most other changes meet the same first check."""
    return tuple(
        t for t in _targets(descriptor, 0) for _ in range(3 if t[1].type in _RANGES else 1)
    )


@st.composite
def _mutation(draw: Callable[[st.SearchStrategy[Any]], Any], descriptor: Descriptor) -> Mutation:
    steps, leaf, element = draw(st.sampled_from(_weighted_targets(descriptor)))
    path = tuple(
        (name, draw(st.integers(0, 7)) if repeated and (i < len(steps) - 1 or element) else None)
        for i, (name, repeated) in enumerate(steps)
    )
    depth = len(steps) - 1
    if element:
        values: st.SearchStrategy[Any] = _scalar(leaf, giant=True)
    elif leaf.is_repeated:
        values = _repeated(leaf, depth)
    else:
        values = _value(leaf, depth, giant=True)
    if element or not leaf.is_repeated:  # changes relative to the valid value there
        if leaf.type == FieldDescriptor.TYPE_BYTES:
            values = st.one_of(values, st.integers(0, 2**16).map(Flip))
        elif leaf.type in _RANGES:
            values = st.one_of(values, st.sampled_from(_DELTAS).map(Add))
    clear = draw(st.booleans()) and draw(st.booleans())  # one time in four: the field cleared
    return path, None if clear else draw(values)


def mutations(cls: type[Message]) -> st.SearchStrategy[Mutation]:
    """One field of a ``cls`` message changed, chosen evenly among every field down to two
    levels of nesting (an element of a repeated field at each level): replaced by a drawn
    value or cleared; a whole repeated field may also be replaced by a drawn list."""
    return _mutation(cls.DESCRIPTOR)


def mutated(base: M, mutation: Mutation) -> M:
    """A copy of ``base`` with ``mutation`` applied."""
    path, value = mutation
    out = type(base)()
    out.CopyFrom(base)
    target: Message = out
    for name, index in path[:-1]:
        child = getattr(target, name)
        if index is None:
            target = child
        else:
            if len(child) == 0:
                child.add()
            target = child[index % len(child)]
    name, index = path[-1]
    f = target.DESCRIPTOR.fields_by_name[name]
    if isinstance(value, Flip | Add) and index is not None:  # one element of a repeated scalar
        elements = getattr(target, name)
        if not len(elements):
            elements.append(0 if f.type in _RANGES else b"")
        i = index % len(elements)
        elements[i] = _relative(f, elements[i], value)
        return out
    if isinstance(value, Flip | Add):
        value = _relative(f, getattr(target, name), value)
    if index is None:
        target.ClearField(name)
        if value is not None:
            _assign(target, f, value)
    else:
        elements = getattr(target, name)
        if value is None:
            if len(elements):
                del elements[index % len(elements)]
        elif len(elements):
            elements[index % len(elements)] = value
        else:
            elements.append(value)
    return out


def _relative(field: Any, current: Any, change: Flip | Add) -> Any:
    if isinstance(change, Flip):
        data = bytearray(current or b"\x00")
        bit = change.bit % (8 * len(data))
        data[bit // 8] ^= 1 << (bit % 8)
        return bytes(data)
    lo, hi = _RANGES[field.type]
    if field.full_name in CAPPED:
        hi = min(hi, CAP)
    return min(max(int(current) + change.delta, lo), hi)


def one_element(cls: type[Message], name: str) -> st.SearchStrategy[list[Any]]:
    """A list of one element of the repeated field ``name`` of ``cls``, drawn as
    :func:`messages_of` draws the elements of that field (giant values among them)."""
    return st.lists(
        _value(cls.DESCRIPTOR.fields_by_name[name], 0, giant=True), min_size=1, max_size=1
    )


def requests_with(cls: type[M], **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[M]:
    """Requests of type ``cls`` as :func:`requests` draws them, except that each named field is
    drawn from its own strategy (a repeated field from a strategy of lists): the shape of one
    household's request, say (:func:`one_element`)."""

    def override(base: M, values: dict[str, Any]) -> M:
        out = type(base)()
        out.CopyFrom(base)
        for name, value in values.items():
            out.ClearField(name)
            _assign(out, cls.DESCRIPTOR.fields_by_name[name], value)
        return out

    return st.builds(override, requests(cls), st.fixed_dictionaries(fields)).filter(
        lambda m: m.ByteSize() < MAX_REQUEST_BYTES
    )
