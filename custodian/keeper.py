"""The key custodian: decrypts household totals, never a single bank's figure.

It trusts nothing the aggregator computed or was told by a connector:
- it verifies the signature of every contribution with the connector's pinned key;
- it recomputes each field's homomorphic sum itself and refuses when the aggregator's differs;
- which connectors are banks, and which connectors make up a field's total, it knows from the
  deployment, not from the connectors' own descriptions;
- it releases a kind's totals only when every connector of that kind contributed (otherwise
  the total of 72 banks, compared with the total of 73, would give away one bank's figure), and
  the banks' only with at least ``min_banks`` bank contributions; a kind it may not release is
  not decrypted at all, so the custodian does not see it either;
- it decrypts each query once;
- a household a connector marked (signed with its answer: no figure, e.g. a stored row that
  fails its seal) gets none of that connector's kind released, every field of the kind refused
  naming the connector and the cause (the kind's sum without that connector's figure would give
  the rest away, and a 0 in its place could be favourable);
- it decrypts only answers bound to the query's households: the token authority's grant must
  name every answering connector with the digest of the tokens that connector signed it was
  asked about, so the aggregator cannot aim one connector at one person and the rest at random
  tokens;
- it decrypts only for a query whose request entries are in the audit log, proven against a
  checkpoint on the chain it witnessed (:mod:`hedui.custodian.witness`), and records every
  decryption and refusal in its own journal;
- nothing leaves it unjournaled: the record of a decryption is on disk before the totals are
  returned, and when the journal (or the witness state) cannot be written it answers
  Unavailable, returns nothing and does not count the query as decrypted, so that the same
  request succeeds once the operator has fixed the cause.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from hedui.core import grants, signing
from hedui.core.answers import (
    WITHHOLDING,
    BatchAnswer,
    aggregate_batch,
    check_marks,
    damage_reason,
    mark_reason,
)
from hedui.core.custody import Deployment, EvidenceSource, Totals
from hedui.core.errors import CryptoError
from hedui.core.grants import GRANT_TTL_MS, Binding, Grant, authority_digest
from hedui.core.packing import DAMAGED, BatchLayout, placement
from hedui.core.paillier import Ciphertext, PrivateKey, PublicKey
from hedui.core.policy.engine import CUSTODIAN
from hedui.custodian.errors import Refused, Unavailable
from hedui.custodian.judges import Judges
from hedui.custodian.witness import DecryptionJournal, LogWitness, WitnessMoved
from hedui.proto.v1 import audit_pb2, connector_pb2, verification_pb2

_REMEMBERED_QUERIES = 1_000_000
DECRYPT_THREADS = 2  # one decryption per connector kind, on this many cores
# how long a request is proven again while other requests move the witness on (each retry is
# proven in the checkpoint the witness moved to, so one or two are the rule)
WITNESS_RETRY_SECONDS = 30.0

_R = TypeVar("_R")


class KeyCustodian:
    def __init__(
        self,
        private_key: PrivateKey,
        deployment: Deployment,
        *,
        min_banks: int,
        witness: LogWitness,
        journal: DecryptionJournal,
        judges: Judges | None = None,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        if min_banks < 2:
            raise Refused("min_banks must be at least 2")
        if deployment.authority_key is None:
            raise Refused("the custodian needs the token authority's grant key")
        self._private = private_key
        self._deployment = deployment
        self.min_banks = min_banks
        self.witness = witness
        self.journal = journal
        self._judges = judges
        self._now_ms = now_ms
        # every query id ever decrypted, from the journal: a restart must not allow a second
        # decryption of one grant
        self._decrypted: OrderedDict[str, None] = OrderedDict.fromkeys(journal.decrypted())
        self._workers = ThreadPoolExecutor(
            DECRYPT_THREADS, thread_name_prefix="decrypt", initializer=_release_gil
        )

    @property
    def deployment(self) -> Deployment:
        return self._deployment

    def _bound(
        self,
        query_id: str,
        answers: Sequence[BatchAnswer],
        grant: Grant,
        households: int,
        evidence: EvidenceSource,
    ) -> tuple[int, bytes, list[int], list[bytes]]:
        """Refuse unless the answers are bound to the grant and the query is in the log;
        (checkpoint size, root, request leaves, request entries) of the log it was proven in."""
        key = self._deployment.authority_key
        assert key is not None
        try:
            grants.verify(key, grant)
        except CryptoError:
            raise Refused("the token grant is not signed by the token authority") from None
        if grant.query_id != query_id or grant.households != households:
            raise Refused("the token grant is for another query")
        age = self._now_ms() - grant.issued_unix_ms
        if not -60_000 <= age <= GRANT_TTL_MS:
            raise Refused("the token grant has expired")
        if query_id in self._decrypted:
            raise Refused(f"query {query_id} was decrypted already")
        own = grant.placement  # no decoys: nothing placed
        if own != (0, 0):
            own = placement(self._deployment.batch_layouts.values())
        if grant.placement != own:
            raise Refused(
                "the token authority made the decoy selectors for households of {} bits, {} to "
                "a ciphertext, not this deployment's {} and {}: the registry's authority.toml "
                "and the custodian's connectors differ".format(*grant.placement, *own)
            )
        for a in answers:
            if grant.digest_for(a.connector_id) != a.queried:
                raise Refused(
                    f"the answer of {a.connector_id} is not about the tokens the grant gave it"
                )
        proof = evidence(self.witness.size)
        deadline = time.monotonic() + WITNESS_RETRY_SECONDS
        while True:
            try:
                cp = self.witness.admit(query_id, proof, households)
                break
            except WitnessMoved as e:
                # another request moved it on: prove again from there, unless the evidence is
                # a caller's that cannot be proven again here (a remote caller does it itself)
                again = evidence(e.size)
                if again.witness_size != e.size or time.monotonic() > deadline:
                    raise
                proof = again
        entries = [r.entry for r in proof.requests]
        _check_bindings(grant, entries)
        return cp.size, cp.root, [r.leaf_index for r in proof.requests], entries

    def _journal(
        self,
        query_id: str,
        answers: Sequence[BatchAnswer],
        grant: Grant,
        evidence: EvidenceSource,
        households: int,
        decrypt: Callable[[Sequence[bytes]], _R],
    ) -> _R:
        """Check the binding, decrypt, and journal the decryption or the refusal; the record
        of a decryption is on disk before its result is returned. Unavailable when the journal
        or the witness state cannot be written: nothing is returned, and the query is not
        counted as decrypted (the same request can be sent again)."""
        try:
            size, root, leaves, entries = self._bound(
                query_id, answers, grant, households, evidence
            )
            self.journal.writable()  # an unwritable journal stops it before decrypting
            result = decrypt(entries)
        except WitnessMoved:
            raise  # not a refusal: the caller proves again from the custodian's new size
        except Refused as e:
            self.journal.record(
                event="refused", query_id=query_id[:128], reason=str(e), time_ms=_now_ms()
            )
            raise
        try:
            self.journal.record(
                event="decrypted",
                query_id=query_id,
                households=households,
                request_leaves=leaves,
                tree_size=size,
                root=root.hex(),
                connectors=sorted(a.connector_id for a in answers),
                time_ms=_now_ms(),
            )
        except Unavailable:
            self._forget(query_id)  # released nothing: it may be decrypted once, later
            raise
        return result

    @property
    def public_key(self) -> PublicKey:
        return self._private.public

    def _decrypt_many(self, ciphertexts: Sequence[Ciphertext]) -> list[int]:
        """Decrypt on the custodian's worker threads (gmpy2 releases the GIL there)."""
        return list(self._workers.map(lambda c: _decrypt(self._private, c), ciphertexts))

    def _forget(self, query_id: str) -> None:
        """Undo :meth:`_remember` for a decryption whose result was not released."""
        self._decrypted.pop(query_id, None)

    def _remember(self, query_id: str) -> None:
        if query_id in self._decrypted:
            raise Refused(f"query {query_id} was decrypted already")
        self._decrypted[query_id] = None
        if len(self._decrypted) > _REMEMBERED_QUERIES:
            self._decrypted.popitem(last=False)

    def decrypt(
        self,
        query_id: str,
        answers: Sequence[BatchAnswer],
        households: int,
        grant: Grant,
        evidence: EvidenceSource,
    ) -> list[Totals]:
        return self._journal(
            query_id,
            answers,
            grant,
            evidence,
            households,
            lambda _entries: self._decrypt(query_id, answers, households, grant.placement),
        )

    def judge(
        self,
        query_id: str,
        answers: Sequence[BatchAnswer],
        households: int,
        grant: Grant,
        evidence: EvidenceSource,
        compositions: Sequence[Sequence[connector_pb2.Member]],
    ) -> list[verification_pb2.Judgement]:
        """Decrypt as :meth:`decrypt` does, then apply the programme's rules to each household
        and return only the signed judgements (issue #24: no total leaves the custodian). The
        household is the one the registry bound into the grant (``compositions`` must match
        the grant's composition digests), the programme, region and date those of the logged
        request entry; both are checked before anything is decrypted."""
        if self._judges is None:
            raise Refused("this custodian has no policy or judgement key to judge with")
        judges = self._judges
        if len(compositions) != households:
            raise Refused(f"{len(compositions)} household compositions for {households} households")

        def run(entries: Sequence[bytes]) -> list[verification_pb2.Judgement]:
            cases = judges.cases(grant, entries, compositions)  # before decrypting
            totals = self._decrypt(query_id, answers, households, grant.placement)
            return [
                judges.judge(query_id, h, case, t, self._missing(h, answers, t))
                for h, (case, t) in enumerate(zip(cases, totals, strict=True))
            ]

        return self._journal(query_id, answers, grant, evidence, households, run)

    def _missing(
        self, household: int, answers: Sequence[BatchAnswer], totals: Totals
    ) -> dict[str, tuple[str, ...]]:
        """Per field, the sources whose answer for this household is missing or invalid: every
        connector of the deployment that did not answer, every one that marked the household,
        and the custodian's own reason for each field it did not release."""
        d = self._deployment
        missing: dict[str, set[str]] = {}
        answered = {a.connector_id for a in answers}
        for kind, members in d.kinds.items():
            fields = [slot.field for slot in d.batch_layouts[kind].fields]
            for cid in members - answered:
                for f in fields:
                    missing.setdefault(f, set()).add(cid)
        for a in answers:
            if any(i == household and c in WITHHOLDING for i, c in a.marked):
                for slot in d.batch_layouts[a.kind].fields:
                    missing.setdefault(slot.field, set()).add(a.connector_id)
        for f, reason in totals.refused.items():
            missing.setdefault(f, set()).add(f"{CUSTODIAN}: {reason}")
        for f, sources in totals.missing.items():
            missing.setdefault(f, set()).update(sources)
        return {f: tuple(sorted(s)) for f, s in missing.items()}

    def _decrypt(
        self,
        query_id: str,
        answers: Sequence[BatchAnswer],
        households: int,
        placement: tuple[int, int] = (0, 0),
    ) -> list[Totals]:
        """Per connector kind, verify every answer, sum the kind's answers ciphertext by
        ciphertext, decrypt, unpack per household. A kind whose sources did not all answer (or
        with too few banks) is not decrypted at all (the custodian never sees a partial sum,
        e.g. 72 of 73 banks): each of its ciphertexts holds only that kind's slots, so nothing
        else is lost."""
        d = self._deployment
        for answer in answers:
            key = d.verify_keys.get(answer.connector_id)
            layout = d.batch_layouts.get(answer.kind)
            if (
                key is None
                or layout is None
                or answer.connector_id not in d.kinds.get(answer.kind, ())
            ):
                raise Refused(
                    f"{answer.connector_id} is not a {answer.kind} connector of this deployment"
                )
            try:
                signing.verify(
                    key, answer.signed_bytes(query_id, layout.digest()), answer.signature
                )
            except CryptoError:
                raise Refused(
                    f"the batch answer of {answer.connector_id} is not signed by it"
                ) from None
        _one_answer_each(answers)
        for answer in answers:
            # the signature covers the digest of the ciphertexts: recompute it from the
            # ciphertexts themselves, or any ciphertext could be slipped under a valid signature
            if signing.ciphertexts_digest(answer.packed) != answer.ciphertexts:
                raise Refused(
                    f"the ciphertexts of {answer.connector_id} are not the ones it signed"
                )
            expected = d.batch_layouts[answer.kind].ciphertexts(households)
            if len(answer.packed) != expected:
                raise Refused(f"the batch answer of {answer.connector_id} has the wrong shape")
            try:
                check_marks(answer.marked, households)
            except CryptoError as e:
                raise Refused(f"the batch answer of {answer.connector_id}: {e}") from None
        self._remember(query_id)
        public = self._private.public
        values: list[dict[str, int]] = [{} for _ in range(households)]
        refused: list[dict[str, str]] = [{} for _ in range(households)]
        sources: list[dict[str, tuple[str, ...]]] = [{} for _ in range(households)]
        released: list[tuple[str, BatchLayout, int]] = []  # kind, layout, its ciphertexts
        # kind -> household -> why a connector of the kind gave no figure for it (its marks)
        withheld: dict[str, dict[int, list[str]]] = {}
        # kind -> household -> the connectors that counted a damaged row of its list (decoys)
        declared: dict[str, dict[int, list[str]]] = {}
        sums: list[Ciphertext] = []
        for kind, members in sorted(d.kinds.items()):
            layout = d.batch_layouts[kind]
            of_kind = [a for a in answers if a.kind == kind]
            answered = {a.connector_id for a in of_kind}
            banks = len(answered & d.banks)
            reason = None
            if answered != members:
                reason = f"{len(members - answered)} of its sources did not answer"
            elif banks and banks < self.min_banks:
                reason = f"only {banks} bank answer(s); at least {self.min_banks} are needed"
            if reason is not None:
                for r in refused:
                    r.update(dict.fromkeys((s.field for s in layout.fields), reason))
                continue
            for a in sorted(of_kind, key=lambda a: a.connector_id):
                for index, cause in a.marked:
                    if cause not in WITHHOLDING:  # a damaged row of its list, counted
                        declared.setdefault(kind, {}).setdefault(index, []).append(a.connector_id)
                        continue
                    why = mark_reason(a.connector_id, cause)
                    withheld.setdefault(kind, {}).setdefault(index, []).append(why)
            kind_sums = aggregate_batch(public, of_kind)
            released.append((kind, layout, len(kind_sums)))
            sums += kind_sums
        plaintexts = iter(self._decrypt_many(sums))  # every kind's at once, on every core
        for kind, layout, count in released:
            mine = [next(plaintexts) for _ in range(count)]
            # no bit above the households a ciphertext holds (fewer in the last one)
            used = [layout.per_ciphertext] * (count - 1)
            used.append(households - layout.per_ciphertext * (count - 1))
            if any(m >> (n * layout.stride) for m, n in zip(mine, used, strict=True)):
                raise Refused(
                    f"an answer of kind {kind} reaches outside its own slots: an answer was forged"
                )
            plain = layout.unpack(mine, households)
            for totals in plain:
                for slot in layout.slots:
                    if totals[slot.field] > slot.max_total:
                        raise Refused(
                            f"a total of {slot.field} is out of its range: an answer was forged"
                        )
            if layout.pack(plain) != mine:  # a bit between slots (the stride is every kind's)
                raise Refused(
                    f"an answer of kind {kind} sets bits between its slots: an answer was forged"
                )
            if placement == (0, 0) and any(totals[DAMAGED] for totals in plain):
                # without decoys a connector marks a damaged household in clear, signed: a count
                # here is an anonymous veto, not a damaged row
                raise Refused(
                    f"an answer of kind {kind} counts damaged rows in a query without decoys: "
                    "an answer was forged"
                )
            marked = withheld.get(kind, {})
            for h, totals in enumerate(plain):
                if totals.pop(DAMAGED, 0):  # a member's row, counted under its selector
                    by = declared.get(kind, {}).get(h)
                    if not by:  # a count no connector signed for: an anonymous veto
                        raise Refused(
                            f"an answer of kind {kind} counts damaged rows no connector declared: "
                            "an answer was forged"
                        )
                    marked.setdefault(h, []).append(damage_reason(kind, by))
                    sources[h].update(dict.fromkeys(totals, tuple(sorted(by))))
                if h in marked:  # not even the other connectors' part of the kind's sum
                    refused[h].update(dict.fromkeys(totals, "; ".join(marked[h])))
                else:
                    values[h].update(totals)
        return [Totals(v, r, m) for v, r, m in zip(values, refused, sources, strict=True)]


def _release_gil() -> None:
    """Let gmpy2 release the GIL during big-number arithmetic on this (worker) thread."""
    import gmpy2  # type: ignore[import-not-found,unused-ignore]

    gmpy2.get_context().allow_release_gil = True


def _now_ms() -> int:
    return int(time.time() * 1000)


def _one_answer_each(answers: Sequence[BatchAnswer]) -> None:
    """One answer per connector: counting one twice would reveal it by difference."""
    ids = [a.connector_id for a in answers]
    if len(set(ids)) != len(ids):
        raise Refused("a connector's answer appears twice in the aggregate")


def _decrypt(key: PrivateKey, c: Ciphertext) -> int:
    try:
        return key.decrypt(c)
    except CryptoError:
        raise Refused("the aggregate decrypts out of range: an answer was forged") from None


def binding_of_entry(entry_bytes: bytes) -> Binding:
    """What a logged request entry says its household was asked for (as the registry binds it
    into the grant: :func:`hedui.core.grants.authority_digest`)."""
    request = audit_pb2.AuditEntry.FromString(entry_bytes).request
    c = request.consent
    return Binding(
        bytes(request.applicant_audit_token),
        authority_digest(
            program=request.program,
            campaign=c.campaign,
            case_number=c.case_number,
            signed_on=c.signed_on,
            form_sha256=bytes(c.form_sha256),
            signer_audit_tokens=[bytes(t) for t in c.signer_audit_tokens],
        ),
    )


def _check_bindings(grant: Grant, entries: Sequence[bytes]) -> None:
    """Refuse unless the logged request entries name exactly the applicants and authorisations
    the registry granted the households for (issue #23: an insider who logs applicant A and
    asks the registry for household B gets nothing decrypted)."""
    if len(grant.bindings) != grant.households:
        raise Refused(
            "the token grant does not say which applicants it was granted for (a registry "
            "older than grant bindings: upgrade it)"
        )
    try:
        logged = [binding_of_entry(e) for e in entries]
    except Exception:
        raise Refused("a logged request is not an audit entry") from None
    if [b.asked for b in logged] != [b.asked for b in grant.bindings]:  # in the grant's order
        raise Refused(
            "the logged requests are not the applicants or authorisations the token grant was "
            "issued for"
        )
