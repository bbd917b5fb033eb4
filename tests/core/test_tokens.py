import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hedui.core.errors import CryptoError
from hedui.core.resident_id import ResidentId
from hedui.core.tokens import TokenMaster, audit_token_key, derive_connector_key

MASTER = bytes(range(32))
ALICE = ResidentId("11010519491231002X")
BOB = ResidentId("110105194912310021")


def test_token_is_hmac_under_hkdf_derived_key() -> None:
    info = b"hedui/token/v1" + b"\x00\x07bank-01" + b"\x00\x011"
    key = HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(MASTER)
    assert derive_connector_key(MASTER, "bank-01", 1) == key
    expected = hmac.new(key, ALICE.value.encode(), hashlib.sha256).digest()
    assert TokenMaster(MASTER).for_connector("bank-01").token(ALICE) == expected


def test_tokens_differ_by_connector_epoch_and_person() -> None:
    m = TokenMaster(MASTER)
    tokens = {
        m.for_connector("bank-01").token(ALICE),
        m.for_connector("bank-02").token(ALICE),
        TokenMaster(MASTER, epoch=2).for_connector("bank-01").token(ALICE),
        m.for_connector("bank-01").token(BOB),
        audit_token_key(MASTER).token(ALICE),
    }
    assert len(tokens) == 5


def test_token_is_not_a_plain_hash() -> None:
    t = TokenMaster(MASTER).for_connector("tax").token(ALICE)
    assert t != hashlib.sha256(ALICE.value.encode()).digest()
    assert len(t) == 32


def test_connector_id_and_epoch_cannot_be_shifted() -> None:
    # "bank-1" + epoch "11" must not collide with "bank-11" + epoch "1".
    assert derive_connector_key(MASTER, "bank-1", 11) != derive_connector_key(MASTER, "bank-11", 1)


def test_short_master_key_is_refused() -> None:
    with pytest.raises(CryptoError):
        derive_connector_key(b"short", "tax", 1)
