import hashlib
import hmac

import pytest

from hedui.core import grants, oprf
from hedui.core.errors import CryptoError
from hedui.core.resident_id import ResidentId
from hedui.core.tokens import audit_token_key, connector_token, key_check_value, oprf_input

MASTER = bytes(range(32))
ALICE = ResidentId("11010519491231002X")
BOB = ResidentId("110105194912310021")
KEY = oprf.ServerKey.derive(bytes(32), b"hedui/token-authority/epoch/1")


def test_connector_token_is_hmac_of_the_oprf_output() -> None:
    y = KEY.evaluate(oprf_input(ALICE))
    expected = hmac.new(y, b"hedui/token/v2\x00\x07bank-01", hashlib.sha256).digest()
    assert connector_token(y, "bank-01") == expected
    # a connector gets the same output by blinded evaluation, without the key
    blind, blinded = oprf.blind(oprf_input(ALICE))
    (evaluated,) = KEY.blind_evaluate([blinded])
    assert oprf.finalize(oprf_input(ALICE), blind, evaluated) == y


def test_tokens_differ_by_connector_epoch_and_person() -> None:
    other_epoch = oprf.ServerKey.derive(bytes(32), b"hedui/token-authority/epoch/2")
    y = KEY.evaluate(oprf_input(ALICE))
    tokens = {
        connector_token(y, "bank-01"),
        connector_token(y, "bank-02"),
        connector_token(other_epoch.evaluate(oprf_input(ALICE)), "bank-01"),
        connector_token(KEY.evaluate(oprf_input(BOB)), "bank-01"),
        audit_token_key(MASTER).token(ALICE),
    }
    assert len(tokens) == 5


def test_token_is_not_a_plain_hash() -> None:
    t = connector_token(KEY.evaluate(oprf_input(ALICE)), "tax")
    assert t != hashlib.sha256(ALICE.value.encode()).digest()
    assert len(t) == 32
    assert len(key_check_value(t, "tax")) == 16


def test_short_audit_key_is_refused() -> None:
    with pytest.raises(CryptoError):
        audit_token_key(b"short")


@pytest.mark.parametrize(("members", "size"), [(1, 8), (7, 8), (8, 8), (9, 16), (17, 24)])
def test_token_lists_are_padded_to_a_multiple_of_eight(members: int, size: int) -> None:
    real = [bytes([i]) * 32 for i in range(members)]
    out = grants.padded(real)
    assert len(out) == size and set(real) <= set(out) and out == sorted(out)
