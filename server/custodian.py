"""The key custodian: decrypts household totals, never a single bank's figure.

It trusts nothing the aggregator computed or was told by a connector:
- it verifies the signature of every contribution with the connector's pinned key;
- it recomputes each field's homomorphic sum itself and refuses when the aggregator's differs;
- which connectors are banks, and which connectors make up a field's total, it knows from the
  deployment, not from the connectors' own descriptions;
- it releases a field's total only when every connector that holds that field contributed
  (otherwise the total of 72 banks, compared with the total of 73, would give away one bank's
  figure), and a bank field only with at least ``min_banks`` bank contributions; the slots it
  may not release are masked with random values before the one decryption, so the custodian
  does not see them either;
- it decrypts each query once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hedui.core import signing
from hedui.core.errors import CryptoError
from hedui.core.packing import BatchLayout, Layout
from hedui.core.paillier import Ciphertext, PrivateKey, PublicKey
from hedui.server.answers import BatchAnswer, SignedAnswer, aggregate, aggregate_batch
from hedui.server.errors import CustodianRefused

_REMEMBERED_QUERIES = 1_000_000


@dataclass(frozen=True)
class Totals:
    values: Mapping[str, int]
    refused: Mapping[str, str] = field(default_factory=dict)  # field -> reason


@dataclass(frozen=True)
class Deployment:
    """What the custodian knows of the deployment: keys, banks, who holds which field, and the
    slot layout every answer must be packed in."""

    verify_keys: Mapping[str, Ed25519PublicKey]
    banks: frozenset[str]
    holders: Mapping[str, frozenset[str]]  # field -> every connector that answers it
    layout: Layout
    kinds: Mapping[str, frozenset[str]] = field(default_factory=dict)  # kind -> its connectors
    batch_layouts: Mapping[str, BatchLayout] = field(default_factory=dict)  # kind -> layout


class Custodian(Protocol):
    """What the verification service needs of the custodian, in process or remote."""

    @property
    def public_key(self) -> PublicKey: ...
    @property
    def batch_layouts(self) -> Mapping[str, BatchLayout]: ...
    def decrypt_totals(
        self, query_id: str, answers: Sequence[SignedAnswer], claimed: Ciphertext
    ) -> Totals: ...
    def decrypt_batch(
        self, query_id: str, answers: Sequence[BatchAnswer], households: int
    ) -> list[Totals]: ...


class KeyCustodian:
    def __init__(self, private_key: PrivateKey, deployment: Deployment, *, min_banks: int) -> None:
        if min_banks < 2:
            raise CustodianRefused("min_banks must be at least 2")
        self._private = private_key
        self._deployment = deployment
        self.min_banks = min_banks
        self._decrypted: OrderedDict[str, None] = OrderedDict()

    @property
    def public_key(self) -> PublicKey:
        return self._private.public

    @property
    def batch_layouts(self) -> Mapping[str, BatchLayout]:
        return self._deployment.batch_layouts

    def _remember(self, query_id: str) -> None:
        if query_id in self._decrypted:
            raise CustodianRefused(f"query {query_id} was decrypted already")
        self._decrypted[query_id] = None
        if len(self._decrypted) > _REMEMBERED_QUERIES:
            self._decrypted.popitem(last=False)

    def decrypt_totals(
        self, query_id: str, answers: Sequence[SignedAnswer], claimed: Ciphertext
    ) -> Totals:
        """Verify, recompute, mask what may not be seen, decrypt once, release complete totals."""
        d = self._deployment
        digest = d.layout.digest()
        for answer in answers:
            key = d.verify_keys.get(answer.connector_id)
            if key is None:
                raise CustodianRefused(
                    f"{answer.connector_id} is not a connector of this deployment"
                )
            try:
                signing.verify(key, answer.signed_bytes(query_id, digest), answer.signature)
            except CryptoError:
                raise CustodianRefused(
                    f"the answer of {answer.connector_id} is not signed by it for this query and layout"
                ) from None
        _one_answer_each(answers)
        self._remember(query_id)
        public = self._private.public
        recomputed = aggregate(public, answers)
        if recomputed.value != claimed.value:
            raise CustodianRefused("the aggregate is not the product of the signed answers")
        present = {a.connector_id for a in answers}
        refused: dict[str, str] = {}
        for slot in d.layout.slots:
            holders = d.holders.get(slot.field, frozenset())
            answered = holders & present
            banks = len(answered & d.banks)
            if answered != holders:
                refused[slot.field] = f"{len(holders - answered)} of its sources did not answer"
            elif banks and banks < self.min_banks:
                refused[slot.field] = (
                    f"only {banks} bank answer(s); at least {self.min_banks} are needed"
                )
        # Slots that may not be seen are masked before decrypting: the custodian itself never
        # sees a partial sum (e.g. 72 of 73 banks), from which a difference would give one bank.
        mask, _ = d.layout.mask(f for f in refused if d.holders.get(f, frozenset()) & present)
        masked = public.add([recomputed, public.encrypt(mask, r=1)]) if mask else recomputed
        plain = d.layout.unpack(_decrypt(self._private, masked))
        for slot in d.layout.slots:  # a carry or a wrap shows here: refuse rather than guess
            if slot.field not in refused and plain[slot.field] > slot.max_total:
                raise CustodianRefused(
                    f"the total of {slot.field} is out of its range: an answer was forged"
                )
        values = {s.field: plain[s.field] for s in d.layout.slots if s.field not in refused}
        return Totals(values, refused)

    def decrypt_batch(
        self, query_id: str, answers: Sequence[BatchAnswer], households: int
    ) -> list[Totals]:
        """The batch path: per connector kind, verify every answer, sum the kind's answers
        ciphertext by ciphertext, decrypt, unpack per household. A kind whose sources did not
        all answer (or with too few banks) is not decrypted at all: each of its ciphertexts
        holds only that kind's slots, so nothing else is lost."""
        d = self._deployment
        for answer in answers:
            key = d.verify_keys.get(answer.connector_id)
            layout = d.batch_layouts.get(answer.kind)
            if (
                key is None
                or layout is None
                or answer.connector_id not in d.kinds.get(answer.kind, ())
            ):
                raise CustodianRefused(
                    f"{answer.connector_id} is not a {answer.kind} connector of this deployment"
                )
            try:
                signing.verify(
                    key, answer.signed_bytes(query_id, layout.digest()), answer.signature
                )
            except CryptoError:
                raise CustodianRefused(
                    f"the batch answer of {answer.connector_id} is not signed by it"
                ) from None
        _one_answer_each(answers)
        for answer in answers:
            expected = d.batch_layouts[answer.kind].ciphertexts(households)
            if len(answer.packed) != expected:
                raise CustodianRefused(
                    f"the batch answer of {answer.connector_id} has the wrong shape"
                )
        self._remember(query_id)
        public = self._private.public
        values: list[dict[str, int]] = [{} for _ in range(households)]
        refused: list[dict[str, str]] = [{} for _ in range(households)]
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
                    r.update(dict.fromkeys((s.field for s in layout.slots), reason))
                continue
            sums = aggregate_batch(public, of_kind)
            plain = layout.unpack([_decrypt(self._private, c) for c in sums], households)
            for totals in plain:
                for slot in layout.slots:
                    if totals[slot.field] > slot.max_total:
                        raise CustodianRefused(
                            f"a total of {slot.field} is out of its range: an answer was forged"
                        )
            for h, totals in enumerate(plain):
                values[h].update(totals)
        return [Totals(v, r) for v, r in zip(values, refused, strict=True)]


def _one_answer_each(answers: Sequence[SignedAnswer] | Sequence[BatchAnswer]) -> None:
    """One answer per connector: counting one twice would reveal it by difference."""
    ids = [a.connector_id for a in answers]
    if len(set(ids)) != len(ids):
        raise CustodianRefused("a connector's answer appears twice in the aggregate")


def _decrypt(key: PrivateKey, c: Ciphertext) -> int:
    try:
        return key.decrypt(c)
    except CryptoError:
        raise CustodianRefused(
            "the aggregate decrypts out of range: an answer was forged"
        ) from None
