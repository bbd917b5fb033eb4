"""The key custodian: releases complete totals only, and refuses what an aggregator or a forged
answer could use to learn or bend a single source's figure.

Every test runs over one household and over more households than one ciphertext holds (the
custodian has one path for both)."""

import dataclasses
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.audit.log import AuditLog
from hedui.audit.store import LogStore, open_log_engine
from hedui.core import grants, signing
from hedui.core.answers import DAMAGED_COUNTED, DATA_INTEGRITY, DECLARED_MAXIMUM, BatchAnswer
from hedui.core.custody import Deployment, Totals, custodian_view
from hedui.core.deployment import kind_of
from hedui.core.judgement import composition_digest
from hedui.core.packing import DAMAGED
from hedui.core.packing import placement as placement_of
from hedui.core.paillier import Ciphertext, PrivateKey, PublicKey, generate_keypair
from hedui.custodian.errors import Refused as CustodianRefused
from hedui.custodian.keeper import KeyCustodian, binding_of_entry
from hedui.custodian.witness import DecryptionJournal, LogWitness
from hedui.proto.v1 import audit_pb2, connector_pb2
from hedui.server.evidence import log_evidence

KEY = generate_keypair(2048)
PUB = KEY.public
BANKS = ("bank-01", "bank-02", "bank-03")
SIGNERS = {c: Ed25519PrivateKey.generate() for c in (*BANKS, "hrss")}
AUTHORITY = Ed25519PrivateKey.generate()
LOG_KEY = Ed25519PrivateKey.generate()
ORIGIN = "hedui.test/custodian-log"


def view(connector_ids: Sequence[str]) -> Deployment:
    return custodian_view(
        connector_ids,
        {c: SIGNERS[c].public_key() for c in connector_ids},
        PUB.max_plaintext_bits,
        AUTHORITY.public_key(),
    )


BANKS_ONLY = view(BANKS)
WITH_HRSS = view(("hrss", *BANKS))
LAYOUT = BANKS_ONLY.batch_layouts["bank"]
HRSS_LAYOUT = WITH_HRSS.batch_layouts["hrss"]
# every kind of a deployment has the widest kind's household stride (one placement for decoys)
BANK_WITH_HRSS = WITH_HRSS.batch_layouts["bank"]
assert BANK_WITH_HRSS.slots == LAYOUT.slots and BANK_WITH_HRSS.stride == HRSS_LAYOUT.stride
MANY = LAYOUT.per_ciphertext + 1  # households spanning two ciphertexts of every kind here
assert LAYOUT.ciphertexts(MANY) == 2 and HRSS_LAYOUT.per_ciphertext < MANY
SIZES = pytest.mark.parametrize("n", [1, MANY], ids=["one", "many"])
# the first bit above a bank plaintext's slots: an honest sum of bank answers never sets it
OUTSIDE = LAYOUT.per_ciphertext * LAYOUT.stride
assert OUTSIDE < PUB.max_plaintext_bits


def households(n: int, seed: int = 0) -> list[list[bytes]]:
    """The padded tokens of n households."""
    return [grants.padded([(seed * 10_000 + h).to_bytes(32, "big")]) for h in range(n)]


def encrypted(plaintext: int) -> bytes:
    if 0 <= plaintext < 2**PUB.max_plaintext_bits:
        return PUB.to_bytes(PUB.encrypt(plaintext))
    # what a malicious connector could send: any plaintext mod n, made by hand
    n2 = PUB.n_square
    return ((1 + plaintext % PUB.n * PUB.n) * pow(12345, PUB.n, n2) % n2).to_bytes(
        PUB.ciphertext_bytes, "big"
    )


def answer(
    cid: str,
    query_id: str,
    plaintexts: Sequence[int],
    tokens: Sequence[Sequence[bytes]],
    *,
    deployment: Deployment = BANKS_ONLY,
    signer: Ed25519PrivateKey | None = None,
    layout_digest: bytes | None = None,
    marked: tuple[tuple[int, int], ...] = (),
) -> BatchAnswer:
    """cid's answer about the households of ``tokens``: one ciphertext per plaintext, signed
    (by ``signer``, cid's own key unless told) over ``layout_digest`` (its kind's unless told)
    and its ``marked`` households."""
    kind = kind_of(cid).kind
    if layout_digest is None:
        layout_digest = deployment.batch_layouts[kind].digest()
    packed = tuple(encrypted(m) for m in plaintexts)
    queried, cts = signing.batch_digests(tokens, packed)
    data = signing.answer_bytes(
        query_id, cid, PUB.fingerprint, queried, layout_digest, cts, signing.marks_digest(marked)
    )
    return BatchAnswer(
        cid,
        kind,
        packed,
        signing.sign(signer or SIGNERS[cid], data),
        PUB.fingerprint,
        queried,
        cts,
        marked,
    )


def honest(
    cid: str,
    query_id: str,
    values: Sequence[Mapping[str, int]],
    tokens: Sequence[Sequence[bytes]],
    deployment: Deployment = BANKS_ONLY,
) -> BatchAnswer:
    """cid's answer holding ``values`` (one mapping per household) in its kind's slots."""
    layout = deployment.batch_layouts[kind_of(cid).kind]
    return answer(cid, query_id, layout.pack(list(values)), tokens, deployment=deployment)


def banks(
    query_id: str,
    tokens: Sequence[Sequence[bytes]],
    deposits: int = 5,
    deployment: Deployment = BANKS_ONLY,
) -> list[BatchAnswer]:
    """Every bank holding ``deposits`` for every household."""
    values = [{"deposits": deposits}] * len(tokens)
    return [honest(b, query_id, values, tokens, deployment) for b in BANKS]


def grant_for(
    query_id: str,
    connectors: Sequence[str] | set[str],
    tokens: Sequence[Sequence[bytes]],
    *,
    households: int | None = None,
    issued_unix_ms: int | None = None,
    placement: tuple[int, int] = (0, 0),
) -> grants.Grant:
    n = len(tokens) if households is None else households
    return grants.issue(
        AUTHORITY,
        query_id=query_id,
        epoch=1,
        households=n,
        issued_unix_ms=int(time.time() * 1000) if issued_unix_ms is None else issued_unix_ms,
        digests={c: grants.batch_digest(tokens) for c in connectors},
        bindings=logged_bindings(query_id, n),
        placement=placement,
    )


AS_OF = "2026-01-05"
# the household of every request these tests log: its head, the applicant
MEMBERS = (
    connector_pb2.Member(
        relation=connector_pb2.HEAD, birth_date="1980-03-01", applicant=True, signed=True
    ),
)


def request_entry(query_id: str) -> audit_pb2.AuditEntry:
    """The request entry these tests log per household (dibao in the demo region)."""
    return audit_pb2.AuditEntry(
        request=audit_pb2.RequestEntry(
            query_id=query_id, program="dibao", region="demo", as_of=AS_OF
        )
    )


def logged_bindings(query_id: str, n: int) -> list[grants.Binding]:
    """What the registry binds the grant to for the request entries these tests log, each
    household being :data:`MEMBERS`."""
    binding = binding_of_entry(request_entry(query_id).SerializeToString())
    return [dataclasses.replace(binding, composition=composition_digest(MEMBERS))] * n


class CountingKey(PrivateKey):
    """KEY, remembering every plaintext it decrypts: what the custodian has seen."""

    def __init__(self, public: PublicKey, p: int, q: int) -> None:
        super().__init__(public, p, q)
        self.seen: list[int] = []
        self._lock = threading.Lock()  # the custodian decrypts on worker threads

    def decrypt(self, c: Ciphertext) -> int:
        m = super().decrypt(c)
        with self._lock:
            self.seen.append(m)
        return m


def counting_key() -> CountingKey:
    key = CountingKey.from_json(KEY.to_json())
    assert isinstance(key, CountingKey)
    return key


class Run:
    """A custodian with its own witness state, and the audit log it witnesses."""

    def __init__(
        self,
        min_banks: int = 3,
        deployment: Deployment = BANKS_ONLY,
        journal: DecryptionJournal | None = None,
        key: PrivateKey = KEY,
    ) -> None:
        self.log = AuditLog(
            LogStore(open_log_engine("sqlite://")), origin=ORIGIN, signing_key=LOG_KEY
        )
        self.journal = journal or DecryptionJournal(None)
        self.custodian = new_custodian(deployment, self.journal, min_banks, key)

    def logged(self, query_id: str, count: int = 1) -> list[int]:
        entry = request_entry(query_id)
        return [r.leaf_index for r in self.log.append([entry] * count)]

    def decrypt(
        self,
        query_id: str,
        answers: Sequence[BatchAnswer],
        tokens: Sequence[Sequence[bytes]],
        *,
        grant: grants.Grant | None = None,
        leaves: Sequence[int] | None = None,
    ) -> list[Totals]:
        if leaves is None:
            leaves = self.logged(query_id, len(tokens))
        if grant is None:
            grant = grant_for(query_id, {a.connector_id for a in answers}, tokens)
        return self.custodian.decrypt(
            query_id, answers, len(tokens), grant, log_evidence(self.log, leaves)
        )


def new_custodian(
    deployment: Deployment,
    journal: DecryptionJournal,
    min_banks: int = 3,
    key: PrivateKey = KEY,
) -> KeyCustodian:
    return KeyCustodian(
        key,
        deployment,
        min_banks=min_banks,
        witness=LogWitness(LOG_KEY.public_key(), ORIGIN, None),
        journal=journal,
    )


@SIZES
def test_complete_totals_are_released_once(n: int) -> None:
    tokens = households(n)
    answers = [
        honest(b, "q1", [{"deposits": 100 * i + h, "wealth_products": i} for h in range(n)], tokens)
        for i, b in enumerate(BANKS, 1)
    ]
    run = Run()
    totals = run.decrypt("q1", answers, tokens)
    assert [t.values for t in totals] == [
        {"deposits": 600 + 3 * h, "wealth_products": 6} for h in range(n)
    ]
    assert not any(t.refused for t in totals)
    with pytest.raises(CustodianRefused, match="decrypted already"):
        run.decrypt("q1", answers, tokens)
    assert [r["event"] for r in run.journal.records] == ["decrypted", "refused"]


@SIZES
@pytest.mark.parametrize("missing", ["bank-03", "hrss"])
def test_a_kind_whose_source_did_not_answer_is_neither_released_nor_seen(
    n: int, missing: str
) -> None:
    """72 of 73 banks, compared with 73, would give away one bank's figure: a kind with a
    missing source is not decrypted at all; the other kinds are released."""
    tokens = households(n)
    wages = [{"monthly_wage": 1000 + h} for h in range(n)]
    answers = [
        honest("hrss", "q2", wages, tokens, WITH_HRSS),
        *(honest(b, "q2", [{"deposits": 7}] * n, tokens, WITH_HRSS) for b in BANKS),
    ]
    answers = [a for a in answers if a.connector_id != missing]
    key = counting_key()
    totals = Run(min_banks=2, deployment=WITH_HRSS, key=key).decrypt("q2", answers, tokens)
    assert len(totals) == n
    refused_kind, released_kind = ("bank", "hrss") if missing == "bank-03" else ("hrss", "bank")
    refused_layout = WITH_HRSS.batch_layouts[refused_kind]
    released_layout = WITH_HRSS.batch_layouts[released_kind]
    for h, t in enumerate(totals):
        assert t.refused == {
            s.field: "1 of its sources did not answer" for s in refused_layout.fields
        }
        assert set(t.values) == {s.field for s in released_layout.fields}
        if released_kind == "hrss":
            assert t.values["monthly_wage"] == 1000 + h
        else:
            assert t.values["deposits"] == 21
    # only the released kind's sums were decrypted
    assert len(key.seen) == released_layout.ciphertexts(n)


@SIZES
def test_too_few_banks_are_neither_released_nor_seen(n: int) -> None:
    tokens = households(n)
    key = counting_key()
    totals = Run(min_banks=4, key=key).decrypt("q2b", banks("q2b", tokens), tokens)
    reason = "only 3 bank answer(s); at least 4 are needed"
    assert [(dict(t.values), dict(t.refused)) for t in totals] == [
        ({}, {"deposits": reason, "wealth_products": reason})
    ] * n
    assert key.seen == []


@SIZES
def test_an_answer_counted_twice_is_refused(n: int) -> None:
    tokens = households(n)
    answers = banks("q3", tokens)
    with pytest.raises(CustodianRefused, match="twice"):
        Run().decrypt("q3", [*answers, answers[0]], tokens)


@SIZES
@pytest.mark.parametrize(
    ("forged", "refusal"),
    [
        # "minus 100" where the others hold 10: the sum wraps below zero
        (-100, "decrypts out of range: an answer was forged"),
        # a value in the deposits slot's guard bit: the total is above any honest total
        (
            1 << (LAYOUT.slots[0].offset + LAYOUT.slots[0].bits - 1),
            "a total of deposits is out of its range: an answer was forged",
        ),
        # a value above the kind's slots, where no honest sum of the kind can reach
        (1 << OUTSIDE, "reaches outside its own slots: an answer was forged"),
    ],
    ids=["wraps", "guard-bit", "outside-slots"],
)
def test_forged_answers_that_leave_their_range_are_refused(
    n: int, forged: int, refusal: str
) -> None:
    """Caught: a sum that wraps, carries or reaches above its slots. Not caught (a known limit,
    no range proofs): a forged "negative" value small enough to keep every slot in range."""
    assert LAYOUT.slots[0].field == "deposits"
    tokens = households(n)
    answers = banks("q5", tokens)[:2]
    plaintexts = LAYOUT.pack([{"deposits": 5}] * n)
    plaintexts[-1] = forged  # in the last ciphertext: every one of them is checked
    answers.append(answer("bank-03", "q5", plaintexts, tokens))
    run = Run()
    with pytest.raises(CustodianRefused, match=refusal):
        run.decrypt("q5", answers, tokens)
    assert run.journal.records[-1]["event"] == "refused"


@SIZES
@pytest.mark.parametrize("forgery", ["another query", "another key", "another layout"])
def test_an_answer_not_signed_by_its_connector_for_this_query_is_refused(
    n: int, forgery: str
) -> None:
    tokens = households(n)
    answers = banks("q6", tokens)
    plaintexts = LAYOUT.pack([{"deposits": 5}] * n)
    if forgery == "another query":
        answers[0] = answer("bank-01", "q7", plaintexts, tokens)
    elif forgery == "another key":
        answers[0] = answer("bank-01", "q6", plaintexts, tokens, signer=SIGNERS["bank-02"])
    else:  # the layout of hrss, whose slots are wider
        answers[0] = answer("bank-01", "q6", plaintexts, tokens, layout_digest=HRSS_LAYOUT.digest())
    with pytest.raises(CustodianRefused, match="answer of bank-01 is not signed by it"):
        Run().decrypt("q6", answers, tokens)


def test_an_answer_of_a_connector_outside_the_deployment_or_its_kind_is_refused() -> None:
    tokens = households(1)
    answers = banks("qk", tokens)
    hrss = honest("hrss", "qk", [{"monthly_wage": 5}], tokens, WITH_HRSS)
    with pytest.raises(CustodianRefused, match="hrss is not a hrss connector"):
        Run().decrypt("qk", [*answers, hrss], tokens)
    answers = banks("qk", tokens, deployment=WITH_HRSS)
    as_bank = dataclasses.replace(hrss, kind="bank")
    with pytest.raises(CustodianRefused, match="hrss is not a bank connector"):
        Run(deployment=WITH_HRSS).decrypt("qk", [*answers, as_bank], tokens)


def test_a_grant_placing_decoy_selectors_for_other_slots_is_refused() -> None:
    """A registry whose connectors differ from the custodian's makes selectors for other
    household slots: refused by name before anything is decrypted; its own placement passes."""
    tokens = households(MANY)
    for placement, refused in (((LAYOUT.stride + 8, 2), True), (placement_of([LAYOUT]), False)):
        query = f"qp-{refused}"
        answers = banks(query, tokens)
        grant = dataclasses.replace(
            grant_for(query, BANKS, tokens), placement=placement, signature=b""
        )
        grant = dataclasses.replace(grant, signature=signing.sign(AUTHORITY, grant.signed_bytes()))
        run = Run()
        if refused:
            with pytest.raises(CustodianRefused, match="made the decoy selectors for households"):
                run.decrypt(query, answers, tokens, grant=grant)
        else:
            assert [
                t.values["deposits"] for t in run.decrypt(query, answers, tokens, grant=grant)
            ] == [15] * MANY


@SIZES
def test_an_answer_about_other_tokens_than_granted_is_refused(n: int) -> None:
    """The aggregator aiming bank-01 at one person and the others at random tokens."""
    tokens = households(n)
    answers = banks("q8", tokens)
    run = Run()
    aimed = grants.issue(
        AUTHORITY,
        query_id="q8",
        epoch=1,
        households=n,
        issued_unix_ms=int(time.time() * 1000),
        digests={
            **{b: grants.batch_digest(tokens) for b in BANKS},
            "bank-01": grants.batch_digest(households(n, seed=1)),
        },
        bindings=logged_bindings("q8", n),
    )
    with pytest.raises(CustodianRefused, match="bank-01 is not about the tokens the grant gave it"):
        run.decrypt("q8", answers, tokens, grant=aimed)
    forged = dataclasses.replace(grant_for("q8", BANKS, tokens), signature=b"\x00" * 64)
    with pytest.raises(CustodianRefused, match="not signed by the token authority"):
        run.decrypt("q8", answers, tokens, grant=forged)
    for other in (
        grant_for("q8-other", BANKS, tokens),
        grant_for("q8", BANKS, tokens, households=n + 1),
    ):
        with pytest.raises(CustodianRefused, match="the token grant is for another query"):
            run.decrypt("q8", answers, tokens, grant=other)
    assert [r["event"] for r in run.journal.records] == ["refused"] * 4
    totals = run.decrypt("q8", answers, tokens)
    assert [t.values["deposits"] for t in totals] == [15] * n


@SIZES
def test_a_query_that_is_not_in_the_log_is_refused_and_journaled(n: int) -> None:
    tokens = households(n)
    answers = banks("q9", tokens)
    run = Run()
    other = run.logged("another query", n)
    with pytest.raises(CustodianRefused, match="not a request of this query"):
        run.decrypt("q9", answers, tokens, leaves=other)
    assert run.journal.records[-1]["event"] == "refused"
    leaves = run.logged("q9", n)
    totals = run.decrypt("q9", answers, tokens, leaves=leaves)
    assert [t.values["deposits"] for t in totals] == [15] * n
    record = run.journal.records[-1]
    assert record["event"] == "decrypted" and record["query_id"] == "q9"
    assert record["households"] == n and record["connectors"] == list(BANKS)
    assert record["tree_size"] == run.log.store.size() and record["request_leaves"] == leaves


def test_every_household_needs_its_own_logged_request() -> None:
    tokens = households(MANY)
    answers = banks("qh", tokens)
    run = Run()
    leaves = run.logged("qh", MANY)
    with pytest.raises(CustodianRefused, match=f"{MANY} logged request\\(s\\) are needed"):
        run.decrypt("qh", answers, tokens, leaves=leaves[:-1])
    with pytest.raises(CustodianRefused, match="shown twice"):
        run.decrypt("qh", answers, tokens, leaves=[*leaves[:-1], leaves[0]])
    assert len(run.decrypt("qh", answers, tokens, leaves=leaves)) == MANY


@SIZES
def test_a_forked_log_is_refused_by_the_witness(n: int) -> None:
    run = Run()
    tokens = households(n)
    run.decrypt("q10", banks("q10", tokens), tokens)
    # an insider with the log key signs another history, with the query it wants decrypted
    fork = AuditLog(LogStore(open_log_engine("sqlite://")), origin=ORIGIN, signing_key=LOG_KEY)
    fork.append([audit_pb2.AuditEntry(request=audit_pb2.RequestEntry(query_id="x"))] * (n + 3))
    receipts = fork.append(
        [audit_pb2.AuditEntry(request=audit_pb2.RequestEntry(query_id="q11"))] * n
    )
    with pytest.raises(CustodianRefused, match="fork or a rollback"):
        run.custodian.decrypt(
            "q11",
            banks("q11", tokens),
            n,
            grant_for("q11", BANKS, tokens),
            log_evidence(fork, [r.leaf_index for r in receipts]),
        )


@SIZES
def test_a_ciphertext_swapped_under_a_valid_signature_is_refused(n: int) -> None:
    """The aggregator keeps bank-01's answer and puts Enc(0) under the others' signatures:
    the custodian would have decrypted bank-01's own figures per household."""
    tokens = households(n)
    answers = [honest(b, "qb", [{"deposits": 7 + h} for h in range(n)], tokens) for b in BANKS]
    zero = tuple(PUB.to_bytes(PUB.encrypt(0)) for _ in answers[1].packed)
    forged = [answers[0], *(dataclasses.replace(a, packed=zero) for a in answers[1:])]
    run = Run()
    grant = grant_for("qb", BANKS, tokens)
    leaves = run.logged("qb", n)
    with pytest.raises(CustodianRefused, match="not the ones it signed"):
        run.decrypt("qb", forged, tokens, grant=grant, leaves=leaves)
    totals = run.decrypt("qb", answers, tokens, grant=grant, leaves=leaves)
    assert [t.values["deposits"] for t in totals] == [3 * (7 + h) for h in range(n)]


def test_an_answer_of_the_wrong_shape_is_refused() -> None:
    """An answer with fewer ciphertexts than the households need, even signed."""
    tokens = households(MANY)
    answers = banks("qs", tokens)
    plaintexts = LAYOUT.pack([{"deposits": 5}] * MANY)[:-1]
    answers[2] = answer("bank-03", "qs", plaintexts, tokens)
    with pytest.raises(CustodianRefused, match="bank-03 has the wrong shape"):
        Run().decrypt("qs", answers, tokens)


@SIZES
def test_a_restarted_custodian_still_refuses_a_second_decryption(n: int, tmp_path: Path) -> None:
    run = Run(journal=DecryptionJournal(tmp_path / "decryptions.jsonl"))
    tokens = households(n)
    answers = banks("qr", tokens)
    grant = grant_for("qr", BANKS, tokens)
    leaves = run.logged("qr", n)
    run.decrypt("qr", answers, tokens, grant=grant, leaves=leaves)
    restarted = new_custodian(BANKS_ONLY, DecryptionJournal(tmp_path / "decryptions.jsonl"))
    with pytest.raises(CustodianRefused, match="decrypted already"):
        restarted.decrypt("qr", answers, n, grant, log_evidence(run.log, leaves))


@SIZES
@pytest.mark.parametrize(
    "age_ms", [grants.GRANT_TTL_MS + 1000, -120_000], ids=["expired", "from-the-future"]
)
def test_an_expired_grant_is_refused(n: int, age_ms: int) -> None:
    tokens = households(n)
    old = grant_for("qe", BANKS, tokens, issued_unix_ms=int(time.time() * 1000) - age_ms)
    with pytest.raises(CustodianRefused, match="expired"):
        Run().decrypt("qe", banks("qe", tokens), tokens, grant=old)


@SIZES
def test_a_connector_cannot_reach_outside_its_kinds_slots(n: int) -> None:
    """Every kind is summed and decrypted apart, so a bank cannot touch hrss's wage total; what
    it writes above its own kind's slots is refused, not decrypted into anyone's total."""
    tokens = households(n)
    wages = [{"monthly_wage": 500000}] * n
    honest_banks = BANK_WITH_HRSS.pack([{"deposits": 5}] * n)
    # "plus 4" of hrss's wage, written above the banks' slots (within the plaintext's bits)
    outside = BANK_WITH_HRSS.per_ciphertext * BANK_WITH_HRSS.stride
    reaching = [m + (4 << outside) for m in honest_banks]
    answers = [
        honest("hrss", "qx", wages, tokens, WITH_HRSS),
        *(answer(b, "qx", honest_banks, tokens, deployment=WITH_HRSS) for b in BANKS[:2]),
        answer("bank-03", "qx", reaching, tokens, deployment=WITH_HRSS),
    ]
    run = Run(deployment=WITH_HRSS)
    with pytest.raises(CustodianRefused, match="kind bank reaches outside its own slots"):
        run.decrypt("qx", answers, tokens)
    # "plus 4" in the bits between the banks' last slot and the next household (the stride is
    # hrss's, wider than the banks' slots)
    gap = sum(slot.bits for slot in BANK_WITH_HRSS.slots)
    assert gap < BANK_WITH_HRSS.stride
    between = [m + (4 << gap) for m in honest_banks]
    answers = [
        honest("hrss", "qz", wages, tokens, WITH_HRSS),
        *(answer(b, "qz", honest_banks, tokens, deployment=WITH_HRSS) for b in BANKS[:2]),
        answer("bank-03", "qz", between, tokens, deployment=WITH_HRSS),
    ]
    with pytest.raises(CustodianRefused, match="kind bank sets bits between its slots"):
        run.decrypt("qz", answers, tokens)
    answers = [
        honest("hrss", "qy", wages, tokens, WITH_HRSS),
        *(answer(b, "qy", honest_banks, tokens, deployment=WITH_HRSS) for b in BANKS),
    ]
    totals = run.decrypt("qy", answers, tokens)
    assert [(t.values["monthly_wage"], t.values["deposits"]) for t in totals] == [(500000, 15)] * n
    assert not any(t.refused for t in totals)


@SIZES
def test_a_bank_marked_household_gets_no_bank_total_and_the_others_theirs(n: int) -> None:
    """bank-02 marks the last household (a stored row fails its seal): its slots are zero and
    the mark is signed. The custodian releases no bank field for that household, not even the
    other banks' sum (which, next to a complete one, would give bank-02's figure away), names
    bank-02 and the cause, and releases every other household's totals."""
    tokens = households(n)
    last = n - 1
    answers = [
        honest(b, "qm", [{"deposits": 10 + h} for h in range(n)], tokens)
        for b in ("bank-01", "bank-03")
    ]
    zeroed: list[Mapping[str, int]] = [{"deposits": 0 if h == last else 10 + h} for h in range(n)]
    answers.insert(
        1, answer("bank-02", "qm", LAYOUT.pack(zeroed), tokens, marked=((last, DATA_INTEGRITY),))
    )
    totals = Run().decrypt("qm", answers, tokens)
    why = "bank-02: stored data fails its integrity check"
    assert totals[last].refused == {"deposits": why, "wealth_products": why}
    assert totals[last].values == {}
    assert [t.values for t in totals[:last]] == [
        {"deposits": 3 * (10 + h), "wealth_products": 0} for h in range(last)
    ]
    assert not any(t.refused for t in totals[:last])


@SIZES
def test_a_damaged_row_counted_under_encryption_withholds_its_kind_for_that_household(
    n: int,
) -> None:
    """With decoys a connector counts a damaged row in the household's damaged-rows slot (issue
    #26) and declares, signed, that the household's list holds one (the same for every
    household of the group). The custodian withholds the kind for a household whose count is
    not zero, naming the connectors that declared it (hrss; bank-01 and bank-02, one of which
    holds the member's row), releases every other household's totals of the kind, and refuses a
    count that no connector declared, or one in a query without decoys."""
    tokens = households(n)
    last = n - 1
    layouts = WITH_HRSS.batch_layouts
    everyone = tuple((h, DAMAGED_COUNTED) for h in range(n))  # the group's lists: all of them

    def counting(cid: str, values: list[dict[str, int]], declared: bool) -> BatchAnswer:
        packed = layouts[kind_of(cid).kind].pack(values)
        marked = everyone if declared else ()
        return answer(cid, "qd", packed, tokens, deployment=WITH_HRSS, marked=marked)

    hrss = [{"monthly_wage": 100 + h, DAMAGED: int(h == last)} for h in range(n)]
    bank_01 = [{"deposits": 5, DAMAGED: int(h == 0)} for h in range(n)]
    answers = [
        counting("hrss", hrss, True),
        counting("bank-01", bank_01, True),
        counting("bank-02", [{"deposits": 5}] * n, True),  # a decoy's row: counted 0
        counting("bank-03", [{"deposits": 5}] * n, False),
    ]
    placed = grant_for("qd", ["hrss", *BANKS], tokens, placement=placement_of(layouts.values()))
    with pytest.raises(CustodianRefused, match="counts damaged rows in a query without decoys"):
        Run(deployment=WITH_HRSS).decrypt("qd", answers, tokens)  # an anonymous veto
    undeclared = [
        answers[0],
        counting("bank-01", bank_01, False),
        counting("bank-02", [{"deposits": 5}] * n, False),
        answers[3],
    ]
    with pytest.raises(CustodianRefused, match="counts damaged rows no connector declared"):
        Run(deployment=WITH_HRSS).decrypt("qd", undeclared, tokens, grant=placed)
    totals = Run(deployment=WITH_HRSS).decrypt("qd", answers, tokens, grant=placed)
    hrss_why = "hrss: stored data fails its integrity check"
    bank_why = "bank: a member's stored data fails its integrity check at one of bank-01, bank-02"
    hrss_fields = kind_of("hrss").field_names
    assert {f: totals[last].refused.get(f) for f in hrss_fields} == dict.fromkeys(
        hrss_fields, hrss_why
    )
    assert totals[0].refused.get("deposits") == bank_why
    assert totals[0].refused.get("wealth_products") == bank_why
    assert {f: totals[last].missing.get(f) for f in hrss_fields} == dict.fromkeys(
        hrss_fields, ("hrss",)
    )
    assert totals[0].missing["deposits"] == ("bank-01", "bank-02")
    if last:  # the damaged household's other kind is released
        assert totals[last].values["deposits"] == 15 and "deposits" not in totals[last].refused
    for h in range(1, last):
        assert not totals[h].refused and not totals[h].missing
        assert (totals[h].values["monthly_wage"], totals[h].values["deposits"]) == (100 + h, 15)
    assert all(DAMAGED not in t.values for t in totals)


@pytest.mark.parametrize(
    "marked",
    [((1, DATA_INTEGRITY), (0, DATA_INTEGRITY)), ((0, 1), (0, 2)), ((MANY, 1),), ((0, 9),)],
    ids=["out-of-order", "twice", "beyond-the-query", "unknown-cause"],
)
def test_marks_not_in_their_one_signed_form_are_refused(
    marked: tuple[tuple[int, int], ...],
) -> None:
    tokens = households(MANY)
    answers = banks("qf", tokens)
    answers[0] = answer(
        "bank-01", "qf", LAYOUT.pack([{"deposits": 5}] * MANY), tokens, marked=marked
    )
    with pytest.raises(CustodianRefused, match="bank-01"):
        Run().decrypt("qf", answers, tokens)


@SIZES
def test_a_mark_stripped_or_added_by_the_aggregator_is_refused(n: int) -> None:
    """Stripping a mark would make the marked household's figure a (favourable) 0; adding one
    would take a figure away: both break the connector's signature."""
    tokens = households(n)
    answers = banks("qx", tokens)
    marked = ((0, DATA_INTEGRITY),)
    zeroed: list[Mapping[str, int]] = [{"deposits": 0 if h == 0 else 5} for h in range(n)]
    answers[2] = answer("bank-03", "qx", LAYOUT.pack(zeroed), tokens, marked=marked)
    run = Run()
    grant = grant_for("qx", BANKS, tokens)
    leaves = run.logged("qx", n)
    for forged in (
        dataclasses.replace(answers[2], marked=()),  # stripped
        dataclasses.replace(answers[2], marked=((0, DECLARED_MAXIMUM),)),  # another cause
        dataclasses.replace(answers[0], marked=((n - 1, DATA_INTEGRITY),)),  # added
    ):
        others = [a for a in answers if a.connector_id != forged.connector_id]
        with pytest.raises(CustodianRefused, match=f"{forged.connector_id} is not signed by it"):
            run.decrypt("qx", [*others, forged], tokens, grant=grant, leaves=leaves)
    totals = run.decrypt("qx", answers, tokens, grant=grant, leaves=leaves)
    assert totals[0].refused["deposits"] == "bank-03: stored data fails its integrity check"
    assert [t.values.get("deposits") for t in totals] == [None] + [15] * (n - 1)
