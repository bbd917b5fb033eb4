"""The one typed adapter over ``phe`` (Paillier). Nothing else in hedui imports ``phe``.

Plaintexts are non-negative integers (fen, counts, or several of them packed into slots, see
``packing``) below n/4, so sums of a deployment's answers never wrap; ciphertexts travel as
big-endian bytes of fixed length (the byte length of n²) with the public key's fingerprint.
Every ``encrypt`` draws fresh randomness, so two encryptions of one value differ.

Fresh randomness, cheaply (issue #5). Classic Paillier obfuscates with r^n mod n² for a random
r: a 2048-bit exponentiation modulo a 4096-bit number, almost the whole cost of an encryption.
Like Damgård, Jurik and Nielsen [DJN10, §4.1 "a more efficient variant"] the key owner publishes
h_s = h^n mod n² with h = -x² mod n for a secret random x, and an obfuscator is h_s^α mod n² for
a fresh random α of ``EXPONENT_BITS`` bits: an exponentiation with a fixed base, which a
precomputed window table turns into ``EXPONENT_BITS / WINDOW`` multiplications.

Security assumption: the decisional composite residuosity assumption (as for Paillier) and the
short-exponent assumption that h_s^α with α of 448 bits is indistinguishable from a random
element of the subgroup of n-th residues (the same kind of assumption as short-exponent
Diffie-Hellman [vOW96, KK04]); 448 bits is four times the 112-bit security level of a 2048-bit
modulus (NIST SP 800-57). [DJN10] I. Damgård, M. Jurik, J. B. Nielsen, "A generalization of
Paillier's public-key system with applications to electronic voting", Int. J. Inf. Secur. 9(6),
2010. [vOW96] P. van Oorschot, M. Wiener, "On Diffie-Hellman key agreement with short
exponents", EUROCRYPT 1996. [KK04] T. Koshiba, K. Kurosawa, "Short exponent Diffie-Hellman
problems", PKC 2004.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import gmpy2
import phe
from phe import util as phe_util

from hedui.core.errors import CryptoError

DEFAULT_KEY_BITS = 2048
EXPONENT_BITS = 448
WINDOW = 8


@dataclass(frozen=True)
class Ciphertext:
    """A Paillier ciphertext under the public key with ``fingerprint``."""

    value: int
    fingerprint: bytes


def exponent_bits_for(modulus_bits: int) -> int:
    """448 bits for 2048-bit keys (4 × 112-bit security), 512 for 3072-bit (4 × 128)."""
    return EXPONENT_BITS if modulus_bits <= 2048 else 512


class FixedBase:
    """base^e mod m for exponents of up to ``bits`` bits, from a precomputed window table."""

    def __init__(self, base: int, modulus: int, bits: int, window: int = WINDOW) -> None:
        self._m = gmpy2.mpz(modulus)
        self._window = window
        self._mask = (1 << window) - 1
        self._table: list[list[Any]] = []
        row_base = gmpy2.mpz(base) % self._m
        for _ in range(-(-bits // window)):
            row = [gmpy2.mpz(1)]
            for _ in range((1 << window) - 1):
                row.append(row[-1] * row_base % self._m)
            self._table.append(row)
            row_base = row[-1] * row_base % self._m  # base^(2^window) for the next row
        self.bits = bits

    def power(self, exponent: int) -> int:
        if exponent < 0 or exponent.bit_length() > self.bits:
            raise CryptoError(f"the exponent must have at most {self.bits} bits")
        acc = gmpy2.mpz(1)
        m, w, mask = self._m, self._window, self._mask
        for row in self._table:
            digit = exponent & mask
            if digit:
                acc = acc * row[digit] % m
            exponent >>= w
            if not exponent:
                break
        return int(acc)


class RandomnessPool:
    """Obfuscators h_s^α made ahead of time by a background thread, each handed out once.

    An answer takes one at once; if the pool ever runs dry it makes one on the spot.
    """

    def __init__(
        self, public: PublicKey, capacity: int, *, exponent_bits: int = EXPONENT_BITS
    ) -> None:
        if public.hs is None:
            raise CryptoError("this public key has no h_s: generate the key pair again")
        exponent_bits = max(exponent_bits, exponent_bits_for(public.bits))
        self._base = FixedBase(public.hs, public.n_square, exponent_bits)
        self._exponent_bits = exponent_bits
        self._capacity = capacity
        self._ready: deque[int] = deque()
        self._wanted = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._fill, name="paillier-randomness", daemon=True)
        self._thread.start()

    def fresh(self) -> int:
        return self._base.power(secrets.randbits(self._exponent_bits))

    def _fill(self) -> None:
        while not self._stopped:
            while len(self._ready) < self._capacity and not self._stopped:
                self._ready.append(self.fresh())
            self._wanted.wait(1.0)
            self._wanted.clear()

    def take(self) -> int:
        try:
            value = self._ready.popleft()
        except IndexError:
            value = self.fresh()
        if len(self._ready) < self._capacity // 2:
            self._wanted.set()
        return value

    def __len__(self) -> int:
        return len(self._ready)

    def stop(self) -> None:
        self._stopped = True
        self._wanted.set()


class PublicKey:
    def __init__(self, n: int, hs: int | None = None) -> None:
        self._key = phe.PaillierPublicKey(n)
        self.n = n
        self.n_square = n * n
        self.hs = hs
        self.ciphertext_bytes = (self.n_square.bit_length() + 7) // 8
        material = b"hedui/paillier/v1" + _int_bytes(n) + (_int_bytes(hs) if hs else b"")
        self.fingerprint = hashlib.sha256(material).digest()[:16]
        self.max_plaintext_bits = n.bit_length() - 2
        self._pool: RandomnessPool | None = None

    @property
    def bits(self) -> int:
        return self.n.bit_length()

    def start_pool(self, capacity: int = 256) -> RandomnessPool:
        """Make obfuscators ahead of time from now on (one pool per key and process)."""
        if self._pool is None:
            self._pool = RandomnessPool(self, capacity)
        return self._pool

    def encrypt(self, value: int, *, r: int | None = None) -> Ciphertext:
        """Encrypt a non-negative integer with fresh randomness (``r`` only for known answers).

        With a pool (``start_pool``), the obfuscator is h_s^α; else r^n for a random r.
        """
        if not isinstance(value, int) or value < 0 or value.bit_length() > self.max_plaintext_bits:
            raise CryptoError(f"only integers 0..2^{self.max_plaintext_bits} can be encrypted")
        if r is None and self._pool is not None:
            nude = (1 + value * self.n) % self.n_square  # (1+n)^m, as g = n + 1
            return Ciphertext(
                int(phe_util.mulmod(nude, self._pool.take(), self.n_square)), self.fingerprint
            )
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
        doc = {"kind": "hedui-paillier-public", "n": str(self.n)}
        if self.hs is not None:
            doc["hs"] = str(self.hs)
        return json.dumps(doc)

    @classmethod
    def from_json(cls, text: str) -> PublicKey:
        data = _load_json(text, "hedui-paillier-public")
        return cls(int(data["n"]), int(data["hs"]) if "hs" in data else None)


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
        if value.bit_length() > self.public.max_plaintext_bits:
            raise CryptoError("the decrypted value is out of range (a negative or forged input)")
        return value

    def to_json(self) -> str:
        doc = {
            "kind": "hedui-paillier-private",
            "n": str(self.public.n),
            "p": str(self._p),
            "q": str(self._q),
        }
        if self.public.hs is not None:
            doc["hs"] = str(self.public.hs)
        return json.dumps(doc)

    @classmethod
    def from_json(cls, text: str) -> PrivateKey:
        data = _load_json(text, "hedui-paillier-private")
        hs = int(data["hs"]) if "hs" in data else None
        key = cls(PublicKey(int(data["n"]), hs), int(data["p"]), int(data["q"]))
        if hs is not None:  # h_s must be an n-th residue (an encryption of 0) of full order
            n = key.public.n
            if (
                hs in (0, 1)
                or gmpy2.gcd(hs, n) != 1
                or int(key._key.raw_decrypt(hs)) != 0  # phe directly: an n-th residue decrypts to 0
            ):
                raise CryptoError("the key file's h_s is not a valid n-th residue")
        return key


def generate_keypair(bits: int = DEFAULT_KEY_BITS) -> PrivateKey:
    if bits < 1024 or bits % 256:
        raise CryptoError("a Paillier key has at least 1024 bits, in steps of 256")
    pub, priv = phe.generate_paillier_keypair(n_length=bits)
    n = int(pub.n)
    x = secrets.randbelow(n - 2) + 2
    hs = int(gmpy2.powmod((-x * x) % n, n, n * n))  # h_s = h^n mod n², h = -x² mod n [DJN10]
    return PrivateKey(PublicKey(n, hs), int(priv.p), int(priv.q))


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
