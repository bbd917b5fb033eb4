"""Encrypted selectors: a connector's answer over decoy households is the members' sum (issue #26).

The token authority asks every connector about a household together with the k - 1 other
households of its decoy group (:mod:`hedui.connectors.decoys`), and sends with each token an
encrypted selector under the key custodian's Paillier key: for a member of the household asked
about, Enc(2^place), where ``place`` is the first bit of the household's slots in a plaintext
(household i of a batch at (i mod per_ciphertext) * stride: the grant's placement, one stride
for every kind); Enc(0) for another household's member or a padding fake. A connector cannot
tell them apart. It answers, per ciphertext of its kind's layout, the product over the tokens it
holds of selector^(its packed row): by the homomorphism that is Enc(Σ over members of their
rows, each household at its place), the same plaintext as the packed sums it answers without
decoys, and the custodian decrypts it as before. A connector's cost is one exponentiation by a
row (at most a stride's bits) per held token with a non-zero row, whatever the households'
places. The result is re-randomised once (a fresh encryption of 0), like every answer.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

import gmpy2

from hedui.core.errors import CryptoError
from hedui.core.packing import BatchLayout
from hedui.core.paillier import Ciphertext, PublicKey


def selector_set(
    public: PublicKey, members: int, total: int, place: int = 0
) -> tuple[list[bytes], list[int]]:
    """A household's selectors, shuffled: ``members`` encryptions of 2^place and ``total -
    members`` of 0, each with fresh randomness, and where each of the ``total`` positions
    (members first, then decoys and fakes) went in the shuffled list."""
    if not 0 <= members <= total:
        raise CryptoError(f"{members} members among {total} selectors")
    order = list(range(total))
    secrets.SystemRandom().shuffle(order)  # position i's selector is at order[i]
    out = [b""] * total
    for position, at in enumerate(order):
        out[at] = public.to_bytes(public.encrypt(1 << place if position < members else 0))
    return out, order


def row_value(layout: BatchLayout, row: Mapping[str, int]) -> int:
    """One token's row packed into a household's slots (unshifted), within the slots' bounds."""
    m = 0
    for s in layout.slots:
        v = row.get(s.field, 0)
        if not 0 <= v <= s.max_total:
            raise CryptoError(f"{s.field} = {v} is outside 0..{s.max_total}")
        m |= v << s.offset
    return m


def selected_sums(
    public: PublicKey,
    layout: BatchLayout,
    households: Sequence[Sequence[tuple[bytes, Mapping[str, int]]]],
) -> list[Ciphertext]:
    """The answer's ciphertexts: per ciphertext of ``layout``, Enc(Σ over the households it
    holds of Σ selected rows, each household at its place), from each household's
    (selector bytes, row) of the tokens this connector holds (a marked household: none; a
    token asked without a selector, b"": counted in full at its household's place, as a
    household of a path without decoys is in a batch with others). The selectors must have
    been made for this layout's placement (the grant's, checked before)."""
    n = gmpy2.mpz(public.n)
    n2 = gmpy2.mpz(public.n_square)
    out = []
    for start in range(0, len(households), layout.per_ciphertext):
        chunk = households[start : start + layout.per_ciphertext]
        acc = gmpy2.mpz(1)
        for p, held in enumerate(chunk):
            for selector, row in held:
                value = row_value(layout, row)
                if not value:
                    continue
                if selector:
                    c = gmpy2.mpz(public.from_bytes(selector, public.fingerprint).value)
                    if gmpy2.gcd(c, n) != 1:
                        raise CryptoError("a selector is not a ciphertext of this key")
                    acc = acc * gmpy2.powmod(c, value, n2) % n2
                else:  # (1 + n)^(value at its place) = 1 + n * (value at its place) mod n^2
                    acc = acc * ((1 + n * (gmpy2.mpz(value) << (p * layout.stride))) % n2) % n2
        fresh = public.encrypt(0)
        out.append(Ciphertext(int(acc * fresh.value % n2), public.fingerprint))
    return out
