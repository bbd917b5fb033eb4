"""The key custodian: decrypts household totals, never a single bank's figure.

It trusts nothing the aggregator computed or was told by a connector:
- it verifies the signature of every contribution with the connector's pinned key;
- it recomputes each field's homomorphic sum itself and refuses when the aggregator's differs;
- which connectors are banks, and which connectors make up a field's total, it knows from the
  deployment, not from the connectors' own descriptions;
- it decrypts a field only when every connector that holds that field contributed (otherwise the
  total of 72 banks, compared with the total of 73, would give away one bank's figure), and a
  bank field only with at least ``min_banks`` bank contributions;
- it decrypts each query once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hedui.core import signing
from hedui.core.errors import CryptoError
from hedui.core.paillier import Ciphertext, PrivateKey, PublicKey
from hedui.server.answers import SignedAnswer, aggregate, contributors
from hedui.server.errors import CustodianRefused

_REMEMBERED_QUERIES = 1_000_000


@dataclass(frozen=True)
class Totals:
    values: Mapping[str, int]
    refused: Mapping[str, str] = field(default_factory=dict)  # field -> reason


@dataclass(frozen=True)
class Deployment:
    """What the custodian knows of the deployment: keys, banks and who holds which field."""

    verify_keys: Mapping[str, Ed25519PublicKey]
    banks: frozenset[str]
    holders: Mapping[str, frozenset[str]]  # field -> every connector that answers it


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

    def _remember(self, query_id: str) -> None:
        if query_id in self._decrypted:
            raise CustodianRefused(f"query {query_id} was decrypted already")
        self._decrypted[query_id] = None
        if len(self._decrypted) > _REMEMBERED_QUERIES:
            self._decrypted.popitem(last=False)

    def decrypt_totals(
        self, query_id: str, answers: Sequence[SignedAnswer], claimed: Mapping[str, Ciphertext]
    ) -> Totals:
        d = self._deployment
        for answer in answers:
            key = d.verify_keys.get(answer.connector_id)
            if key is None:
                raise CustodianRefused(
                    f"{answer.connector_id} is not a connector of this deployment"
                )
            try:
                signing.verify(key, answer.signed_bytes(query_id), answer.signature)
            except CryptoError:
                raise CustodianRefused(
                    f"the answer of {answer.connector_id} is not signed by it"
                ) from None
        self._remember(query_id)
        recomputed = aggregate(self._private.public, answers)
        if set(recomputed) != set(claimed):
            raise CustodianRefused("the aggregate names other fields than the signed answers")
        values: dict[str, int] = {}
        refused: dict[str, str] = {}
        for name, answers_of_field in contributors(answers).items():
            if recomputed[name].value != claimed[name].value:
                raise CustodianRefused(
                    f"the aggregate of {name} is not the sum of the signed answers"
                )
            present = {a.connector_id for a in answers_of_field}
            expected = d.holders.get(name)
            if expected is None or not present <= expected:
                refused[name] = "a connector answered a field it does not hold"
                continue
            if present != expected:
                refused[name] = f"{len(expected - present)} of its sources did not answer"
                continue
            banks = len(present & d.banks)
            if banks and banks < self.min_banks:
                refused[name] = f"only {banks} bank answer(s); at least {self.min_banks} are needed"
                continue
            values[name] = self._private.decrypt(recomputed[name])
        return Totals(values, refused)
