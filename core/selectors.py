"""Encrypted selectors: a connector's answer over decoy households is the members' sum (issue #26).

The token authority asks every connector about a household together with the k - 1 other
households of its decoy group (:mod:`hedui.connectors.decoys`), and sends with each token an
encrypted selector under the key custodian's Paillier key: Enc(1) for a member of the household
asked about, Enc(0) for another household's member or a padding fake. A connector cannot tell
them apart. It answers, per ciphertext of its kind's layout, the product over the tokens it holds
of selector^(its packed row): by the homomorphism that is Enc(Σ over members of their rows), the
same plaintext as the plain sum of the members' rows it answered before, and the custodian
decrypts it as before.

Several households share a ciphertext (household p of a ciphertext at bit p·stride), so the
rows of household p must be shifted by p·stride. Rather than raise each selector to a shifted
row (an exponent as long as the plaintext), the product is built by Horner's rule over the
households of the ciphertext: acc ← acc^(2^stride) · C_p from the last household to the first,
where C_p is the product of household p's selectors raised to their unshifted rows; one
squaring per bit of the plaintext per ciphertext, whatever the number of tokens. The result is
re-randomised once (a fresh encryption of 0), like every answer.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

import gmpy2

from hedui.core.errors import CryptoError
from hedui.core.packing import BatchLayout
from hedui.core.paillier import Ciphertext, PublicKey


def selector_set(public: PublicKey, members: int, total: int) -> tuple[list[bytes], list[int]]:
    """A household's selectors, shuffled: ``members`` encryptions of 1 and ``total - members``
    of 0, each with fresh randomness, and where each of the ``total`` positions (members first,
    then decoys and fakes) went in the shuffled list."""
    if not 0 <= members <= total:
        raise CryptoError(f"{members} members among {total} selectors")
    order = list(range(total))
    secrets.SystemRandom().shuffle(order)  # position i's selector is at order[i]
    out = [b""] * total
    for position, at in enumerate(order):
        out[at] = public.to_bytes(public.encrypt(1 if position < members else 0))
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
    token asked without a selector, b"": counted in full, as a household of a path without
    decoys is in a batch with others)."""
    n2 = gmpy2.mpz(public.n_square)
    one = gmpy2.mpz(public.n + 1)  # Enc(1) with no randomness: the final re-randomisation hides it
    shift = gmpy2.mpz(1) << layout.stride
    out = []
    for start in range(0, len(households), layout.per_ciphertext):
        chunk = households[start : start + layout.per_ciphertext]
        acc = gmpy2.mpz(1)
        for held in reversed(chunk):
            if acc != 1:
                acc = gmpy2.powmod(acc, shift, n2)
            for selector, row in held:
                value = row_value(layout, row)
                if not value:
                    continue
                if selector:
                    c = gmpy2.mpz(public.from_bytes(selector, public.fingerprint).value)
                    if gmpy2.gcd(c, public.n) != 1:
                        raise CryptoError("a selector is not a ciphertext of this key")
                else:  # a token asked without a selector counts in full: (1 + n)^value
                    c = one
                acc = acc * gmpy2.powmod(c, value, n2) % n2
        fresh = public.encrypt(0)
        out.append(Ciphertext(int(acc * fresh.value % n2), public.fingerprint))
    return out
