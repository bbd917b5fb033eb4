import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hedui.core.deployment import default_connector_ids, kind_of
from hedui.core.errors import CryptoError
from hedui.core.packing import MASK_BITS, batch_from_wire, for_connectors, from_wire
from hedui.core.paillier import generate_keypair

IDS = default_connector_ids()
LAYOUT = for_connectors(IDS)
KEY = generate_keypair(2048)


def test_the_default_deployment_fits_one_2048_bit_plaintext() -> None:
    assert len(LAYOUT.slots) == 21
    assert LAYOUT.fits(KEY.public.max_plaintext_bits)
    deposits = LAYOUT.slot("deposits")
    assert deposits.max_total == 73 * kind_of("bank-01").fields[0].max_value


def test_every_connector_at_its_maximum_never_carries_into_a_neighbour() -> None:
    """Overflow is impossible by construction: the worst case decrypts exactly."""
    pub = KEY.public
    cts = [pub.encrypt(LAYOUT.pack({f.name: f.max_value for f in kind_of(c).fields})) for c in IDS]
    totals = LAYOUT.unpack(KEY.decrypt(pub.add(cts)))
    assert totals == {s.field: s.max_total for s in LAYOUT.slots}


@settings(max_examples=10, deadline=None)
@given(st.data())
def test_masked_slots_hide_their_value_and_leave_the_others(data: st.DataObject) -> None:
    values = {s.field: data.draw(st.integers(0, s.max_total)) for s in LAYOUT.slots}
    masked = data.draw(st.sets(st.sampled_from([s.field for s in LAYOUT.slots]), max_size=5))
    mask, parts = LAYOUT.mask(masked)
    out = LAYOUT.unpack(LAYOUT.pack(values) + mask)
    for s in LAYOUT.slots:
        if s.field in masked:
            assert out[s.field] == values[s.field] + parts[s.field]
        else:
            assert out[s.field] == values[s.field]


def test_values_outside_their_slot_are_refused() -> None:
    with pytest.raises(CryptoError):
        LAYOUT.pack({"deposits": LAYOUT.slot("deposits").max_total + 1})
    with pytest.raises(CryptoError):
        LAYOUT.pack({"nope": 1})


def test_wire_layouts_are_checked() -> None:
    assert (
        from_wire(((s.field, s.offset, s.bits, s.max_total) for s in LAYOUT.slots), 2046) == LAYOUT
    )
    with pytest.raises(CryptoError, match="overlaps"):
        from_wire([("a", 0, 100, 1), ("b", 50, 100, 1)], 2046)
    with pytest.raises(CryptoError):
        from_wire([("a", 0, MASK_BITS + 5, 2**40)], 2046)


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
        from_wire([slot], 2046)


def test_wire_layouts_have_few_slots() -> None:
    with pytest.raises(CryptoError, match="at most"):
        from_wire([(f"f{i}", i * 20, 20, 1) for i in range(65)], 2046)


@pytest.mark.parametrize(("stride", "per"), [(2**32 - 1, 1), (100, 21), (0, 1), (100, 0)])
def test_batch_wire_layouts_stay_inside_the_key(stride: int, per: int) -> None:
    with pytest.raises(CryptoError, match="do not fit"):
        batch_from_wire([("a", 0, 50, 1)], stride, per, 2046)
