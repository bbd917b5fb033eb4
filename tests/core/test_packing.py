from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hedui.core.custody import custodian_view
from hedui.core.deployment import default_connector_ids, kind_of
from hedui.core.errors import CryptoError
from hedui.core.packing import DAMAGED, MAX_ROWS, BatchLayout, batch_from_wire, batch_layout
from hedui.core.paillier import generate_keypair

IDS = default_connector_ids()
KEY = generate_keypair(2048)
BITS = KEY.public.max_plaintext_bits
VIEW = custodian_view(IDS, {}, BITS)
LAYOUTS = VIEW.batch_layouts
BANKS = LAYOUTS["bank"]


def wire(layout: BatchLayout) -> list[tuple[str, int, int, int]]:
    return [(s.field, s.offset, s.bits, s.max_total) for s in layout.slots]


def test_every_kind_of_the_default_deployment_fits_a_2048_bit_plaintext() -> None:
    assert sum(len(layout.fields) for layout in LAYOUTS.values()) == 21
    assert all(layout.damaged is not None for layout in LAYOUTS.values())  # one more slot each
    for layout in LAYOUTS.values():
        assert layout.per_ciphertext >= 1
        assert layout.per_ciphertext * layout.stride <= BITS
        assert sum(s.bits for s in layout.slots) <= layout.stride  # the widest kind's stride
    assert len({(x.stride, x.per_ciphertext) for x in LAYOUTS.values()}) == 1
    assert max(sum(s.bits for s in x.slots) for x in LAYOUTS.values()) == BANKS.stride
    deposits = next(s for s in BANKS.slots if s.field == "deposits")
    assert len(VIEW.kinds["bank"]) == 73
    assert deposits.max_total == 73 * kind_of("bank-01").fields[0].max_value


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
def test_every_connector_at_its_maximum_never_carries_into_a_neighbour(kind: str) -> None:
    """Overflow is impossible by construction: the worst case decrypts exactly, for every
    household of every ciphertext (here: one full ciphertext and one more household)."""
    pub = KEY.public
    layout = LAYOUTS[kind]
    households = layout.per_ciphertext + 1
    sums = None
    for cid in VIEW.kinds[kind]:
        values = {f.name: f.max_value for f in kind_of(cid).fields}
        values[DAMAGED] = MAX_ROWS  # every row of the household damaged, counted
        cts = [pub.encrypt(m) for m in layout.pack([values] * households)]
        sums = cts if sums is None else [pub.add([a, b]) for a, b in zip(sums, cts, strict=True)]
    assert sums is not None and len(sums) == 2
    totals = layout.unpack([KEY.decrypt(c) for c in sums], households)
    assert totals == [{s.field: s.max_total for s in layout.slots}] * households


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_households_unpack_to_their_own_values(data: st.DataObject) -> None:
    """Each household's values come back in its own slots, whatever its neighbours hold."""
    kind = data.draw(st.sampled_from(sorted(LAYOUTS)))
    layout = LAYOUTS[kind]
    n = data.draw(st.integers(1, 2 * layout.per_ciphertext + 1))
    values: list[Mapping[str, int]] = [
        {s.field: data.draw(st.integers(0, s.max_total)) for s in layout.slots} for _ in range(n)
    ]
    packed = layout.pack(values)
    assert len(packed) == layout.ciphertexts(n)
    assert all(m.bit_length() <= layout.per_ciphertext * layout.stride for m in packed)
    assert layout.unpack(packed, n) == values


@pytest.mark.parametrize("value", [-1, BANKS.slots[0].max_total + 1])
def test_values_outside_their_slot_are_refused(value: int) -> None:
    assert BANKS.slots[0].field == "deposits"
    with pytest.raises(CryptoError, match="outside"):
        BANKS.pack([{"deposits": 5}, {"deposits": value}])


def test_a_layout_digest_binds_slots_stride_and_households_per_ciphertext() -> None:
    digests = {
        BANKS.digest(),
        BatchLayout(BANKS.slots, BANKS.stride, BANKS.per_ciphertext - 1).digest(),
        BatchLayout(BANKS.slots, BANKS.stride + 1, BANKS.per_ciphertext).digest(),
        BatchLayout(BANKS.slots[:1], BANKS.stride, BANKS.per_ciphertext).digest(),
        batch_layout([("deposits", 10**13), ("wealth_products", 10**13)], 72, BITS).digest(),
    }
    assert len(digests) == 5


def test_wire_layouts_are_checked() -> None:
    for layout in LAYOUTS.values():
        assert batch_from_wire(wire(layout), layout.stride, layout.per_ciphertext, BITS) == layout
    with pytest.raises(CryptoError, match="overlaps"):
        batch_from_wire([("a", 0, 100, 1), ("b", 50, 100, 1)], 200, 1, BITS)
    with pytest.raises(CryptoError, match="too narrow"):  # no room for the guard bit
        batch_from_wire([("a", 0, 41, 2**40)], 41, 1, BITS)


@pytest.mark.parametrize(
    "slot",
    [
        ("a", 2**31, 100, 1),
        ("a", -1, 100, 1),
        ("a", 0, 0, 0),
        ("a", 2000, 100, 1),
        ("a", 0, 9, 512),
    ],
)
def test_wire_layouts_stay_inside_the_key(slot: tuple[str, int, int, int]) -> None:
    """Issue #11 item 7: an offset of 2^31 built a 256 MiB integer and answered UNKNOWN."""
    with pytest.raises(CryptoError, match="outside the key"):
        batch_from_wire([slot], BITS, 1, BITS)


def test_wire_slots_stay_inside_their_stride() -> None:
    """A slot past the stride would land in the next household's slots."""
    with pytest.raises(CryptoError, match="outside"):
        batch_from_wire([("a", 50, 60, 1)], 100, 2, BITS)


def test_wire_layouts_have_few_slots() -> None:
    with pytest.raises(CryptoError, match="at most"):
        batch_from_wire([(f"f{i}", i * 20, 20, 1) for i in range(65)], BITS, 1, BITS)


@pytest.mark.parametrize(("stride", "per"), [(2**32 - 1, 1), (100, 21), (0, 1), (100, 0)])
def test_batch_wire_layouts_stay_inside_the_key(stride: int, per: int) -> None:
    with pytest.raises(CryptoError, match="do not fit"):
        batch_from_wire([("a", 0, 50, 1)], stride, per, 2046)
