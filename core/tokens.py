"""Pseudonyms for resident ID numbers (DESIGN §5).

**Connector tokens** come from an oblivious PRF (RFC 9497, ristretto255-SHA512, see
:mod:`hedui.core.oprf`) whose key only the token authority holds. For one person the PRF output
``y = F(k_epoch, ID)`` is computed once; each connector's token is then
``HMAC-SHA256(y, "hedui/token/v2" ‖ connector id)``, so tokens of different connectors cannot be
joined by anyone who does not know ``y``, and the authority's cost per member at query time is
one PRF evaluation plus one HMAC per connector. A connector learns ``y`` only for the customers
it imports, by blinded evaluation (the authority sees neither the ID nor ``y``), counted per
connector: it holds no key with which it could compute the token of an ID it chooses.

**Audit tokens** stay keyed hashes: HMAC-SHA256 under a key derived with HKDF from the audit
key (info = ``hedui/audit-token/v1``), so an auditor given an ID finds its entries.

A plain unkeyed hash of an ID number would be exhausted by brute force in minutes and is never
used.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hedui.core.errors import CryptoError
from hedui.core.resident_id import ResidentId

KEY_BYTES = 32
_TOKEN_LABEL = b"hedui/token/v2"
_AUDIT_INFO = b"hedui/audit-token/v1"
# The input whose tokens are each connector's key check value: a connector proves it imported
# under the current epoch without revealing anything about its customers.
CHECK_INPUT = b"hedui/token-key-check/v2"


def _hkdf(master: bytes, info: bytes) -> bytes:
    if len(master) != KEY_BYTES:
        raise CryptoError(f"a master key has {KEY_BYTES} bytes, this one has {len(master)}")
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(master)


def oprf_input(resident: ResidentId) -> bytes:
    """What the PRF is evaluated on: the normalised 18-character number."""
    return resident.value.encode("ascii")


def connector_token(oprf_output: bytes, connector_id: str) -> bytes:
    """One connector's token of a person from that person's PRF output."""
    cid = connector_id.encode()
    return hmac.digest(oprf_output, _TOKEN_LABEL + len(cid).to_bytes(2, "big") + cid, "sha256")


def key_check_value(check_output: bytes, connector_id: str) -> bytes:
    """The connector's key check value: its token of :data:`CHECK_INPUT`, first 16 bytes."""
    return connector_token(check_output, connector_id)[:16]


@dataclass(frozen=True)
class TokenKey:
    """A keyed hash of ID numbers (the audit token)."""

    key: bytes
    _keyed: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # HMAC with the key already absorbed: each token then costs one copy and one update
        object.__setattr__(self, "_keyed", hmac.new(self.key, digestmod=hashlib.sha256))

    def token(self, resident_id: ResidentId) -> bytes:
        return self.mac(resident_id.value.encode("ascii"))

    def mac(self, data: bytes) -> bytes:
        h = self._keyed.copy()
        h.update(data)
        return bytes(h.digest())


def audit_token_key(audit_master: bytes) -> TokenKey:
    """The key of the audit token, which lets an auditor given an ID find its entries."""
    return TokenKey(_hkdf(audit_master, _AUDIT_INFO))
