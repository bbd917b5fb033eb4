"""The key custodian: releases complete totals only, and refuses what an aggregator or a forged
answer could use to learn or bend a single source's figure."""

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.audit.log import AuditLog
from hedui.audit.store import LogStore, open_log_engine
from hedui.core import grants, packing, signing
from hedui.core.answers import SignedAnswer, aggregate
from hedui.core.custody import Deployment
from hedui.core.paillier import generate_keypair
from hedui.custodian.errors import Refused as CustodianRefused
from hedui.custodian.keeper import KeyCustodian
from hedui.custodian.witness import DecryptionJournal, LogWitness
from hedui.proto.v1 import audit_pb2
from hedui.server.evidence import log_evidence

KEY = generate_keypair(2048)
BANKS = ("bank-01", "bank-02", "bank-03")
SIGNERS = {b: Ed25519PrivateKey.generate() for b in BANKS}
LAYOUT = packing.for_connectors(BANKS)
DEPLOYMENT = Deployment(
    verify_keys={b: k.public_key() for b, k in SIGNERS.items()},
    banks=frozenset(BANKS),
    holders={"deposits": frozenset(BANKS), "wealth_products": frozenset(BANKS)},
    layout=LAYOUT,
    authority_key=(AUTHORITY := Ed25519PrivateKey.generate()).public_key(),
)
LOG_KEY = Ed25519PrivateKey.generate()
ORIGIN = "hedui.test/custodian-log"
TOKENS = grants.padded([bytes(32)])


def answer(bank: str, query_id: str, plaintext: int) -> SignedAnswer:
    pub = KEY.public
    if plaintext < 2**pub.max_plaintext_bits:
        packed = pub.to_bytes(pub.encrypt(plaintext))
    else:  # what a malicious connector could send: any plaintext mod n, made by hand
        n2 = pub.n_square
        packed = ((1 + plaintext * pub.n) * pow(12345, pub.n, n2) % n2).to_bytes(
            pub.ciphertext_bytes, "big"
        )
    queried = signing.tokens_digest(TOKENS)
    data = signing.answer_bytes(query_id, bank, pub.fingerprint, queried, LAYOUT.digest(), packed)
    return SignedAnswer(bank, packed, signing.sign(SIGNERS[bank], data), pub.fingerprint, queried)


class Run:
    """A custodian with its own witness state, and the audit log it witnesses."""

    def __init__(
        self,
        min_banks: int = 3,
        deployment: Deployment = DEPLOYMENT,
        journal: DecryptionJournal | None = None,
    ) -> None:
        self.log = AuditLog(
            LogStore(open_log_engine("sqlite://")), origin=ORIGIN, signing_key=LOG_KEY
        )
        self.journal = journal or DecryptionJournal(None)
        self.custodian = new_custodian(deployment, self.journal, min_banks)

    def logged(self, query_id: str) -> int:
        entry = audit_pb2.AuditEntry(request=audit_pb2.RequestEntry(query_id=query_id))
        (receipt,) = self.log.append([entry])
        return receipt.leaf_index

    def decrypt_totals(self, query_id: str, answers, claimed, *, grant=None, leaves=None):
        if leaves is None:
            leaves = [self.logged(query_id)]
        return self.custodian.decrypt_totals(
            query_id,
            answers,
            claimed,
            grant or grant_for(query_id, {a.connector_id for a in answers}),
            log_evidence(self.log, leaves),
        )


def new_custodian(
    deployment: Deployment, journal: DecryptionJournal, min_banks: int = 3
) -> KeyCustodian:
    return KeyCustodian(
        KEY,
        deployment,
        min_banks=min_banks,
        witness=LogWitness(LOG_KEY.public_key(), ORIGIN, None),
        journal=journal,
    )


def grant_for(query_id: str, connectors, tokens=TOKENS) -> grants.Grant:
    return grants.issue(
        AUTHORITY,
        query_id=query_id,
        epoch=1,
        households=1,
        issued_unix_ms=int(time.time() * 1000),
        digests={c: grants.single_digest(tokens) for c in connectors},
    )


def custodian(min_banks: int = 3) -> Run:
    return Run(min_banks)


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


def test_an_answer_about_other_tokens_than_granted_is_refused() -> None:
    """The aggregator aiming bank-01 at one person and the others at random tokens."""
    answers = [answer(b, "q8", LAYOUT.pack({"deposits": 5})) for b in BANKS]
    other = grant_for("q8", BANKS, tokens=grants.padded([b"\x01" * 32]))
    run = custodian()
    with pytest.raises(CustodianRefused, match="not about the tokens the grant gave it"):
        run.decrypt_totals("q8", answers, aggregate(KEY.public, answers), grant=other)
    forged = grants.Grant("q8", 1, 1, 0, grant_for("q8", BANKS).digests, b"\x00" * 64)
    with pytest.raises(CustodianRefused, match="not signed by the token authority"):
        run.decrypt_totals("q8", answers, aggregate(KEY.public, answers), grant=forged)
    assert [r["event"] for r in run.journal.records] == ["refused", "refused"]


def test_a_query_that_is_not_in_the_log_is_refused_and_journaled() -> None:
    answers = [answer(b, "q9", LAYOUT.pack({"deposits": 5})) for b in BANKS]
    run = custodian()
    other = run.logged("another query")
    with pytest.raises(CustodianRefused, match="not a request of this query"):
        run.decrypt_totals("q9", answers, aggregate(KEY.public, answers), leaves=[other])
    assert run.journal.records[-1]["event"] == "refused"
    totals = run.decrypt_totals("q9", answers, aggregate(KEY.public, answers))
    assert totals.values["deposits"] == 15
    record = run.journal.records[-1]
    assert record["event"] == "decrypted" and record["query_id"] == "q9"
    assert record["tree_size"] == run.log.store.size() and record["request_leaves"] == [1]


def test_a_forked_log_is_refused_by_the_witness() -> None:
    run = custodian()
    answers = [answer(b, "q10", LAYOUT.pack({"deposits": 5})) for b in BANKS]
    run.decrypt_totals("q10", answers, aggregate(KEY.public, answers))
    # an insider with the log key signs another history, with the query it wants decrypted
    fork = AuditLog(LogStore(open_log_engine("sqlite://")), origin=ORIGIN, signing_key=LOG_KEY)
    fork.append([audit_pb2.AuditEntry(request=audit_pb2.RequestEntry(query_id="x"))] * 3)
    (receipt,) = fork.append([audit_pb2.AuditEntry(request=audit_pb2.RequestEntry(query_id="q11"))])
    answers = [answer(b, "q11", LAYOUT.pack({"deposits": 5})) for b in BANKS]
    with pytest.raises(CustodianRefused, match="fork or a rollback"):
        run.custodian.decrypt_totals(
            "q11",
            answers,
            aggregate(KEY.public, answers),
            grant_for("q11", BANKS),
            log_evidence(fork, [receipt.leaf_index]),
        )


def _batch_run(tmp_journal: DecryptionJournal | None = None) -> tuple[Run, object]:
    """A custodian over the batch layout of the three banks."""
    from hedui.core.custody import custodian_view

    view = custodian_view(
        BANKS,
        {b: k.public_key() for b, k in SIGNERS.items()},
        KEY.public.max_plaintext_bits,
        AUTHORITY.public_key(),
    )
    return Run(deployment=view, journal=tmp_journal), view.batch_layouts["bank"]


def _batch_answer(bank: str, query_id: str, deposits: list[int], layout, households_tokens):
    from hedui.core.answers import BatchAnswer

    pub = KEY.public
    plain = layout.pack([{"deposits": d, "wealth_products": 0} for d in deposits])
    packed = tuple(pub.to_bytes(pub.encrypt(m)) for m in plain)
    queried, cts = signing.batch_digests(households_tokens, packed)
    data = signing.answer_bytes(query_id, bank, pub.fingerprint, queried, layout.digest(), cts)
    return BatchAnswer(
        bank, "bank", packed, signing.sign(SIGNERS[bank], data), pub.fingerprint, queried, cts
    )


def test_a_batch_ciphertext_swapped_under_a_valid_signature_is_refused() -> None:
    """The aggregator keeps bank-01's answer and puts Enc(0) under the others' signatures:
    the custodian would have decrypted bank-01's own figures per household."""
    import dataclasses

    run, layout = _batch_run()
    households = [TOKENS, grants.padded([b"\x02" * 32])]
    answers = [_batch_answer(b, "qb", [7, 9], layout, households) for b in BANKS]
    zero = tuple(KEY.public.to_bytes(KEY.public.encrypt(0)) for _ in answers[1].packed)
    forged = [answers[0], *(dataclasses.replace(a, packed=zero) for a in answers[1:])]
    grant = grants.issue(
        AUTHORITY,
        query_id="qb",
        epoch=1,
        households=2,
        issued_unix_ms=int(time.time() * 1000),
        digests={b: grants.batch_digest(households) for b in BANKS},
    )
    leaves = [run.logged("qb"), run.logged("qb")]
    with pytest.raises(CustodianRefused, match="not the ones it signed"):
        run.custodian.decrypt_batch("qb", forged, 2, grant, log_evidence(run.log, leaves))
    totals = run.custodian.decrypt_batch("qb", answers, 2, grant, log_evidence(run.log, leaves))
    assert [t.values["deposits"] for t in totals] == [21, 27]


def test_a_restarted_custodian_still_refuses_a_second_decryption(tmp_path) -> None:
    run = Run(journal=DecryptionJournal(tmp_path / "decryptions.jsonl"))
    answers = [answer(b, "qr", LAYOUT.pack({"deposits": 5})) for b in BANKS]
    grant = grant_for("qr", BANKS)
    run.decrypt_totals("qr", answers, aggregate(KEY.public, answers), grant=grant)
    restarted = new_custodian(DEPLOYMENT, DecryptionJournal(tmp_path / "decryptions.jsonl"))
    with pytest.raises(CustodianRefused, match="decrypted already"):
        restarted.decrypt_totals(
            "qr", answers, aggregate(KEY.public, answers), grant, log_evidence(run.log, [0])
        )


def test_an_expired_grant_is_refused() -> None:
    answers = [answer(b, "qe", LAYOUT.pack({"deposits": 5})) for b in BANKS]
    old = grants.issue(
        AUTHORITY,
        query_id="qe",
        epoch=1,
        households=1,
        issued_unix_ms=int(time.time() * 1000) - grants.GRANT_TTL_MS - 1000,
        digests={b: grants.single_digest(TOKENS) for b in BANKS},
    )
    with pytest.raises(CustodianRefused, match="expired"):
        custodian().decrypt_totals("qe", answers, aggregate(KEY.public, answers), grant=old)


def test_a_connector_cannot_reach_into_another_kinds_slots() -> None:
    """A bank adding a "negative" wage to its answer would have lowered hrss's wage total: every
    kind is summed and decrypted apart, so the bank's slots wrap and the answer is refused."""
    from hedui.core.custody import custodian_view

    ids = ("hrss", *BANKS)
    signers = {**SIGNERS, "hrss": Ed25519PrivateKey.generate()}
    view = custodian_view(
        ids,
        {c: k.public_key() for c, k in signers.items()},
        KEY.public.max_plaintext_bits,
        AUTHORITY.public_key(),
    )
    pub = KEY.public

    def signed(cid: str, plaintext: int, query_id: str = "qx") -> SignedAnswer:
        layout = packing.kind_layout(view.layout, cid)
        m, n2 = plaintext % pub.n, pub.n_square  # "negative": by hand, as a forger would
        packed = ((1 + m * pub.n) * pow(12345, pub.n, n2) % n2).to_bytes(
            pub.ciphertext_bytes, "big"
        )
        queried = signing.tokens_digest(TOKENS)
        data = signing.answer_bytes(
            query_id, cid, pub.fingerprint, queried, layout.digest(), packed
        )
        return SignedAnswer(cid, packed, signing.sign(signers[cid], data), pub.fingerprint, queried)

    wage = view.layout.slot("monthly_wage")
    honest = packing.kind_layout(view.layout, "bank-01").pack({"deposits": 5})
    answers = [
        signed("hrss", view.layout.pack({"monthly_wage": 500000})),
        signed("bank-01", honest),
        signed("bank-02", honest),
        signed("bank-03", honest - (400000 << wage.offset)),  # "minus 400000" of hrss's wage
    ]
    run = Run(deployment=view)
    with pytest.raises(CustodianRefused, match="forged"):
        run.decrypt_totals("qx", answers, aggregate(pub, answers))
    answers = [
        signed("hrss", view.layout.pack({"monthly_wage": 500000}), "qy"),
        *(signed(b, honest, "qy") for b in BANKS),
    ]
    totals = run.decrypt_totals("qy", answers, aggregate(pub, answers))
    assert totals.values["monthly_wage"] == 500000 and totals.values["deposits"] == 15
