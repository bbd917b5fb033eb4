"""The one typed adapter over ``phe`` (Paillier). Nothing else in hedui imports ``phe``.

Plaintexts are non-negative integers (fen or counts) well below the modulus; ciphertexts travel
as big-endian bytes of fixed length (the byte length of n²) together with the public key's
fingerprint. Every ``encrypt`` draws fresh randomness, so two encryptions of one value differ.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import phe
from phe import util as phe_util

from hedui.core.errors import CryptoError

DEFAULT_KEY_BITS = 2048
# Values are bounded far below n so that the sum of every connector's answer never wraps.
MAX_PLAINTEXT_BITS = 128


@dataclass(frozen=True)
class Ciphertext:
    """A Paillier ciphertext under the public key with ``fingerprint``."""

    value: int
    fingerprint: bytes


class PublicKey:
    def __init__(self, n: int) -> None:
        self._key = phe.PaillierPublicKey(n)
        self.n = n
        self.n_square = n * n
        self.ciphertext_bytes = (self.n_square.bit_length() + 7) // 8
        self.fingerprint = hashlib.sha256(b"hedui/paillier/v1" + _int_bytes(n)).digest()[:16]

    @property
    def bits(self) -> int:
        return self.n.bit_length()

    def encrypt(self, value: int, *, r: int | None = None) -> Ciphertext:
        """Encrypt a non-negative integer with fresh randomness (``r`` only for known answers)."""
        if not isinstance(value, int) or value < 0 or value.bit_length() > MAX_PLAINTEXT_BITS:
            raise CryptoError(f"only integers 0..2^{MAX_PLAINTEXT_BITS} can be encrypted")
        if r is None:
            r = secrets.randbelow(self.n - 1) + 1
        return Ciphertext(int(self._key.raw_encrypt(value, r_value=r)), self.fingerprint)

    def add(self, ciphertexts: Iterable[Ciphertext]) -> Ciphertext:
        """The homomorphic sum: the product of the ciphertexts modulo n²."""
        total = 1
        for c in ciphertexts:
            self._check(c)
            total = int(phe_util.mulmod(total, c.value, self.n_square))
        return Ciphertext(total, self.fingerprint)

    def to_bytes(self, c: Ciphertext) -> bytes:
        self._check(c)
        return c.value.to_bytes(self.ciphertext_bytes, "big")

    def from_bytes(self, data: bytes, fingerprint: bytes) -> Ciphertext:
        if fingerprint != self.fingerprint:
            raise CryptoError("the ciphertext was made under another public key")
        if len(data) != self.ciphertext_bytes:
            raise CryptoError(
                f"a ciphertext has {self.ciphertext_bytes} bytes, this one has {len(data)}"
            )
        c = Ciphertext(int.from_bytes(data, "big"), fingerprint)
        self._check(c)
        return c

    def _check(self, c: Ciphertext) -> None:
        if c.fingerprint != self.fingerprint:
            raise CryptoError("the ciphertext was made under another public key")
        if not 0 < c.value < self.n_square:
            raise CryptoError("the ciphertext is out of range")

    def to_json(self) -> str:
        return json.dumps({"kind": "hedui-paillier-public", "n": str(self.n)})

    @classmethod
    def from_json(cls, text: str) -> PublicKey:
        data = _load_json(text, "hedui-paillier-public")
        return cls(int(data["n"]))


class PrivateKey:
    def __init__(self, public: PublicKey, p: int, q: int) -> None:
        if p * q != public.n:
            raise CryptoError("the private key does not belong to the public key")
        self.public = public
        self._p = p
        self._q = q
        self._key = phe.PaillierPrivateKey(public._key, p, q)

    def decrypt(self, c: Ciphertext) -> int:
        self.public._check(c)
        value = int(self._key.raw_decrypt(c.value))
        if value.bit_length() > MAX_PLAINTEXT_BITS + 16:
            raise CryptoError("the decrypted value is out of range (a negative or forged input)")
        return value

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": "hedui-paillier-private",
                "n": str(self.public.n),
                "p": str(self._p),
                "q": str(self._q),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> PrivateKey:
        data = _load_json(text, "hedui-paillier-private")
        return cls(PublicKey(int(data["n"])), int(data["p"]), int(data["q"]))


def generate_keypair(bits: int = DEFAULT_KEY_BITS) -> PrivateKey:
    if bits < 1024 or bits % 256:
        raise CryptoError("a Paillier key has at least 1024 bits, in steps of 256")
    pub, priv = phe.generate_paillier_keypair(n_length=bits)
    return PrivateKey(PublicKey(pub.n), int(priv.p), int(priv.q))


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _load_json(text: str, kind: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CryptoError(f"not a {kind} key file: {e}") from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise CryptoError(f"not a {kind} key file")
    return data
