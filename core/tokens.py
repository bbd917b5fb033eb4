"""Keyed pseudonyms for resident ID numbers (DESIGN §5).

The verification service holds a 32-byte token master key. For each connector it derives a
key with HKDF-SHA256 (info = ``hedui/token/v1`` ‖ connector id ‖ key epoch) and sends
``token = HMAC-SHA256(connector key, normalised ID)``. Tokens of different connectors cannot
be joined, and no one without a key can test candidate IDs against a token. A plain unkeyed
hash of an ID number would be exhausted by brute force in minutes and is never used.

The audit log uses a separate key the same way (info = ``hedui/audit-token/v1``).
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
_TOKEN_INFO = b"hedui/token/v1"
_AUDIT_INFO = b"hedui/audit-token/v1"


def _hkdf(master: bytes, info: bytes) -> bytes:
    if len(master) != KEY_BYTES:
        raise CryptoError(f"a master key has {KEY_BYTES} bytes, this one has {len(master)}")
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(master)


def _len_prefixed(*parts: bytes) -> bytes:
    return b"".join(len(p).to_bytes(2, "big") + p for p in parts)


def derive_connector_key(master: bytes, connector_id: str, epoch: int) -> bytes:
    """The token key of one connector in one key epoch."""
    info = _TOKEN_INFO + _len_prefixed(connector_id.encode(), str(epoch).encode())
    return _hkdf(master, info)


@dataclass(frozen=True)
class TokenKey:
    """The key one party uses to turn ID numbers into its tokens."""

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

    def check_value(self) -> bytes:
        """A key check value: shows two parties hold the same key without revealing it."""
        return self.mac(b"hedui/token-key-check/v1")[:16]


@dataclass(frozen=True)
class TokenMaster:
    """The service's token master key; it hands out per-connector token keys."""

    master: bytes
    epoch: int = 1

    def for_connector(self, connector_id: str) -> TokenKey:
        return TokenKey(derive_connector_key(self.master, connector_id, self.epoch))


def audit_token_key(audit_master: bytes) -> TokenKey:
    """The key of the audit token, which lets an auditor given an ID find its entries."""
    return TokenKey(_hkdf(audit_master, _AUDIT_INFO))
