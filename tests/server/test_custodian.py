"""The key custodian: releases complete totals only, and refuses what an aggregator or a forged
answer could use to learn or bend a single source's figure."""

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.core import packing, signing
from hedui.core.paillier import generate_keypair
from hedui.server.answers import SignedAnswer, aggregate
from hedui.server.custodian import Deployment, KeyCustodian
from hedui.server.errors import CustodianRefused

KEY = generate_keypair(2048)
BANKS = ("bank-01", "bank-02", "bank-03")
SIGNERS = {b: Ed25519PrivateKey.generate() for b in BANKS}
LAYOUT = packing.for_connectors(BANKS)
DEPLOYMENT = Deployment(
    verify_keys={b: k.public_key() for b, k in SIGNERS.items()},
    banks=frozenset(BANKS),
    holders={"deposits": frozenset(BANKS), "wealth_products": frozenset(BANKS)},
    layout=LAYOUT,
)


def answer(bank: str, query_id: str, plaintext: int) -> SignedAnswer:
    pub = KEY.public
    if plaintext < 2**pub.max_plaintext_bits:
        packed = pub.to_bytes(pub.encrypt(plaintext))
    else:  # what a malicious connector could send: any plaintext mod n, made by hand
        n2 = pub.n_square
        packed = ((1 + plaintext * pub.n) * pow(12345, pub.n, n2) % n2).to_bytes(
            pub.ciphertext_bytes, "big"
        )
    queried = signing.tokens_digest([bytes(32)])
    data = signing.answer_bytes(query_id, bank, pub.fingerprint, queried, LAYOUT.digest(), packed)
    return SignedAnswer(bank, packed, signing.sign(SIGNERS[bank], data), pub.fingerprint, queried)


def custodian(min_banks: int = 3) -> KeyCustodian:
    return KeyCustodian(KEY, DEPLOYMENT, min_banks=min_banks)


def test_complete_totals_are_released_once() -> None:
    answers = [
        answer(b, "q1", LAYOUT.pack({"deposits": 100 * i, "wealth_products": i}))
        for i, b in enumerate(BANKS, 1)
    ]
    c = custodian()
    totals = c.decrypt_totals("q1", answers, aggregate(KEY.public, answers))
    assert totals.values == {"deposits": 600, "wealth_products": 6} and not totals.refused
    with pytest.raises(CustodianRefused, match="decrypted already"):
        c.decrypt_totals("q1", answers, aggregate(KEY.public, answers))


def test_a_partial_bank_sum_is_neither_released_nor_seen() -> None:
    answers = [answer(b, "q2", LAYOUT.pack({"deposits": 7})) for b in BANKS[:2]]
    totals = custodian(min_banks=2).decrypt_totals("q2", answers, aggregate(KEY.public, answers))
    assert totals.values == {} and set(totals.refused) == {"deposits", "wealth_products"}


def test_an_answer_counted_twice_is_refused() -> None:
    answers = [answer(b, "q3", LAYOUT.pack({"deposits": 5})) for b in BANKS]
    doubled = [*answers, answers[0]]
    with pytest.raises(CustodianRefused, match="twice"):
        custodian().decrypt_totals("q3", doubled, aggregate(KEY.public, doubled))


def test_an_aggregate_that_is_not_the_product_is_refused() -> None:
    answers = [answer(b, "q4", LAYOUT.pack({"deposits": 5})) for b in BANKS]
    wrong = aggregate(KEY.public, answers[:2])
    with pytest.raises(CustodianRefused, match="not the product"):
        custodian().decrypt_totals("q4", answers, wrong)


@pytest.mark.parametrize(
    "forged",
    [
        KEY.public.n - 100,  # "minus 100" where the others hold 10: the sum wraps below zero
        1 << (LAYOUT.slot("deposits").bits - 1),  # a value in the deposits slot's mask/guard room
    ],
)
def test_forged_answers_that_leave_their_range_are_refused(forged: int) -> None:
    """Caught: a sum that wraps or carries. Not caught (a known limit, no range proofs): a forged
    "negative" value small enough to keep every slot in range; see the closing notes."""
    answers = [answer(b, "q5", LAYOUT.pack({"deposits": 5})) for b in BANKS[:2]]
    answers.append(answer("bank-03", "q5", forged))
    with pytest.raises(CustodianRefused, match="forged"):
        custodian().decrypt_totals("q5", answers, aggregate(KEY.public, answers))


def test_an_answer_signed_for_another_query_is_refused() -> None:
    answers = [answer(b, "q6", 0) for b in BANKS]
    with pytest.raises(CustodianRefused, match="not signed"):
        custodian().decrypt_totals("q7", answers, aggregate(KEY.public, answers))
