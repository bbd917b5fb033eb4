"""The key custodian: decrypts household totals, never a single bank's figure.

It trusts nothing the aggregator computed: it verifies the signature of every contribution with
the connector's pinned key, recomputes each field's homomorphic sum itself, refuses when the
aggregator's sum differs, and refuses a bank-side field with fewer than ``min_banks`` bank
contributions (one bank's figure would otherwise be decrypted alone).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hedui.core import signing
from hedui.core.errors import CryptoError
from hedui.core.paillier import Ciphertext, PrivateKey, PublicKey
from hedui.server.answers import SignedAnswer, aggregate, contributors
from hedui.server.errors import CustodianRefused


@dataclass(frozen=True)
class Totals:
    values: Mapping[str, int]
    refused: Mapping[str, str] = field(default_factory=dict)  # field -> reason


class KeyCustodian:
    def __init__(
        self,
        private_key: PrivateKey,
        verify_keys: Mapping[str, Ed25519PublicKey],
        *,
        min_banks: int,
    ) -> None:
        if min_banks < 2:
            raise CustodianRefused("min_banks must be at least 2")
        self._private = private_key
        self._verify_keys = dict(verify_keys)
        self.min_banks = min_banks

    @property
    def public_key(self) -> PublicKey:
        return self._private.public

    def decrypt_totals(
        self, query_id: str, answers: Sequence[SignedAnswer], claimed: Mapping[str, Ciphertext]
    ) -> Totals:
        for answer in answers:
            key = self._verify_keys.get(answer.connector_id)
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
            banks = sum(1 for a in answers_of_field if a.is_bank)
            if banks and banks < self.min_banks:
                refused[name] = (
                    f"only {banks} bank answer(s); at least {self.min_banks} are needed to decrypt"
                )
                continue
            values[name] = self._private.decrypt(recomputed[name])
        return Totals(values, refused)
