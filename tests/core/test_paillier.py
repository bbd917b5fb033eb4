import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hedui.core.errors import CryptoError
from hedui.core.paillier import PrivateKey, PublicKey, generate_keypair

KEY = generate_keypair(1024)
OTHER = generate_keypair(1024)
values = st.integers(min_value=0, max_value=10**15)


@settings(max_examples=25, deadline=None)
@given(st.lists(values, min_size=1, max_size=8))
def test_sum_of_encryptions_decrypts_to_sum(xs: list[int]) -> None:
    pub = KEY.public
    cts = [pub.encrypt(x) for x in xs]
    assert KEY.decrypt(pub.add(cts)) == sum(xs)


@settings(max_examples=25, deadline=None)
@given(values)
def test_wire_bytes_round_trip(x: int) -> None:
    pub = KEY.public
    c = pub.encrypt(x)
    data = pub.to_bytes(c)
    assert len(data) == pub.ciphertext_bytes
    assert KEY.decrypt(pub.from_bytes(data, pub.fingerprint)) == x


def test_encryption_is_randomised() -> None:
    pub = KEY.public
    assert pub.encrypt(5).value != pub.encrypt(5).value


def test_known_randomness_is_deterministic() -> None:
    pub = KEY.public
    assert pub.encrypt(7, r=12345) == pub.encrypt(7, r=12345)
    n = pub.n
    assert pub.encrypt(7, r=12345).value == ((1 + 7 * n) * pow(12345, n, n * n)) % (n * n)


def test_negative_float_and_huge_plaintexts_are_refused() -> None:
    for bad in (-1, 2**KEY.public.bits):
        with pytest.raises(CryptoError):
            KEY.public.encrypt(bad)
    with pytest.raises(CryptoError):
        KEY.public.encrypt(1.5)  # type: ignore[arg-type]


def test_ciphertext_of_another_key_is_refused() -> None:
    c = OTHER.public.encrypt(1)
    with pytest.raises(CryptoError):
        KEY.public.add([c])
    with pytest.raises(CryptoError):
        KEY.public.from_bytes(OTHER.public.to_bytes(c), OTHER.public.fingerprint)


def test_malformed_bytes_are_refused() -> None:
    pub = KEY.public
    with pytest.raises(CryptoError):
        pub.from_bytes(b"\x01\x02", pub.fingerprint)
    with pytest.raises(CryptoError):
        pub.from_bytes(b"\x00" * pub.ciphertext_bytes, pub.fingerprint)
    with pytest.raises(CryptoError):
        pub.from_bytes(b"\xff" * pub.ciphertext_bytes, pub.fingerprint)


def test_key_files_round_trip() -> None:
    again = PrivateKey.from_json(KEY.to_json())
    assert again.public.fingerprint == KEY.public.fingerprint
    assert PublicKey.from_json(KEY.public.to_json()).n == KEY.public.n
    with pytest.raises(CryptoError):
        PrivateKey.from_json(KEY.public.to_json())
    with pytest.raises(CryptoError):
        PublicKey.from_json("not json")


def test_pooled_encryption_uses_fresh_randomness_and_decrypts() -> None:
    key = generate_keypair(1024)
    pub = key.public
    pool = pub.start_pool(8)
    try:
        cts = [
            pub.encrypt(42) for _ in range(20)
        ]  # more than the pool holds: some made on the spot
        assert len({c.value for c in cts}) == 20
        assert all(key.decrypt(c) == 42 for c in cts)
        assert key.decrypt(pub.add(cts)) == 42 * 20
    finally:
        pool.stop()


def test_fixed_base_matches_powmod() -> None:
    from hedui.core.paillier import FixedBase

    pub = generate_keypair(1024).public
    assert pub.hs is not None
    fb = FixedBase(pub.hs, pub.n_square, 448)
    for e in (0, 1, 2**447 + 12345, 2**448 - 1):
        assert fb.power(e) == pow(pub.hs, e, pub.n_square)
    with pytest.raises(CryptoError):
        fb.power(2**448)
