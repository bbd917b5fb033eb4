"""A token authority in the test process: the real OPRF protocol without gRPC, for tests of
what sits on top of tokens (CSV import, stores). The gRPC path is tested end to end."""

from __future__ import annotations

from collections.abc import Sequence

from hedui.core import oprf
from hedui.core.resident_id import ResidentId
from hedui.core.tokens import CHECK_INPUT, connector_token, key_check_value


class LocalTokenizer:
    def __init__(self, connector_id: str, seed: bytes = bytes(32), epoch: int = 1) -> None:
        self.connector_id = connector_id
        self.epoch = epoch
        self._key = oprf.ServerKey.derive(seed, b"hedui-test/epoch/%d" % epoch)

    def _outputs(self, inputs: Sequence[bytes]) -> list[bytes]:
        blinded = [oprf.blind(x) for x in inputs]
        evaluated = self._key.blind_evaluate([b for _, b in blinded])
        return [oprf.finalize(x, r, e) for x, (r, _), e in zip(inputs, blinded, evaluated)]

    def tokens(self, id_numbers: Sequence[str]) -> list[bytes]:
        return [
            connector_token(y, self.connector_id)
            for y in self._outputs([i.encode() for i in id_numbers])
        ]

    def check_value(self) -> bytes:
        return key_check_value(self._outputs([CHECK_INPUT])[0], self.connector_id)

    def token(self, resident: ResidentId) -> bytes:
        """What the authority computes for this person at query time (it knows the ID)."""
        return connector_token(self._key.evaluate(resident.value.encode()), self.connector_id)
