"""RFC 9497 oblivious pseudorandom function, ciphersuite ristretto255-SHA512, modes OPRF and VOPRF.

A client learns ``output = F(sk, input)`` for the server's key ``sk`` while the server learns
nothing about ``input``::

    client                                      server (ServerKey)
    blind_scalar, blinded = blind(input)
                        ---- blinded ---->
                                                evaluated = key.blind_evaluate([blinded])
                        <--- evaluated ---
    output = finalize(input, blind_scalar, evaluated[0])

In VOPRF mode (``Mode.VOPRF``) the server also returns a DLEQ proof that it used the private key
behind its public key (``key.blind_evaluate_with_proof``), and the client checks it in
``finalize``/``finalize_batch``; one proof covers a whole batch. A party that knows the key and
the input itself computes the same output with ``evaluate``.

Only the protocol layer lives here: expand_message_xmd (RFC 9380, SHA-512), HashToGroup,
HashToScalar, DeriveKeyPair, the DLEQ proof and the Finalize hash. Every group and scalar
operation is libsodium's ristretto255 through ``rbcl``. Elements and scalars travel as 32 bytes
(a ristretto255 encoding; a little-endian integer below the group order), a proof as 64 bytes
(c ‖ s) and an output as 64 bytes.

Error messages never contain an input, a scalar or an element.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import cast

import rbcl  # type: ignore[import-untyped]

from hedui.core.errors import CryptoError

SUITE_ID = b"ristretto255-SHA512"
ELEMENT_BYTES = 32  # Ne
SCALAR_BYTES = 32  # Ns
OUTPUT_BYTES = 64  # Nh
PROOF_BYTES = 2 * SCALAR_BYTES
MAX_INPUT_BYTES = 2**16 - 2  # RFC 9497 §5.1: inputs "MUST be smaller than 2^16-1 bytes"
MAX_BATCH = 2**16  # the composite index is I2OSP(i, 2)

Rng = Callable[[int], bytes]
"""A source of randomness: ``rng(n)`` returns ``n`` uniformly random bytes."""

# libsodium through rbcl (which ships no type information). The plain scalar multiplications
# refuse a zero scalar and an identity result; the ``_allow_scalar_zero`` ones return the
# identity (32 zero bytes) instead, but in an installed rbcl they do not check the point, so
# they only ever see points this module has already checked.
_from_hash = cast(Callable[[bytes], bytes], rbcl.crypto_core_ristretto255_from_hash)
_is_valid_point = cast(Callable[[bytes], bool], rbcl.crypto_core_ristretto255_is_valid_point)
_add = cast(Callable[[bytes, bytes], bytes], rbcl.crypto_core_ristretto255_add)
_reduce = cast(Callable[[bytes], bytes], rbcl.crypto_core_ristretto255_scalar_reduce)
_scalar_invert = cast(Callable[[bytes], bytes], rbcl.crypto_core_ristretto255_scalar_invert)
_scalar_mul = cast(Callable[[bytes, bytes], bytes], rbcl.crypto_core_ristretto255_scalar_mul)
_scalar_sub = cast(Callable[[bytes, bytes], bytes], rbcl.crypto_core_ristretto255_scalar_sub)
_mul = cast(Callable[[bytes, bytes], bytes], rbcl.crypto_scalarmult_ristretto255)
_mul_or_zero = cast(
    Callable[[bytes, bytes], bytes], rbcl.crypto_scalarmult_ristretto255_allow_scalar_zero
)
_mul_base = cast(Callable[[bytes], bytes], rbcl.crypto_scalarmult_ristretto255_base)
_mul_base_or_zero = cast(
    Callable[[bytes], bytes], rbcl.crypto_scalarmult_ristretto255_base_allow_scalar_zero
)

_IDENTITY = bytes(ELEMENT_BYTES)
_ZERO = bytes(SCALAR_BYTES)


class OprfError(CryptoError):
    """An OPRF input, key, element, scalar or proof that cannot be used."""


class Mode(IntEnum):
    """The RFC 9497 protocol variant; it is part of every domain separation tag."""

    OPRF = 0x00
    VOPRF = 0x01


@dataclass(frozen=True)
class _Suite:
    context: bytes
    hash_to_group_dst: bytes
    hash_to_scalar_dst: bytes
    derive_key_pair_dst: bytes
    seed_dst: bytes


def _make_suite(mode: Mode) -> _Suite:
    context = b"OPRFV1-" + bytes([mode]) + b"-" + SUITE_ID
    return _Suite(
        context=context,
        hash_to_group_dst=b"HashToGroup-" + context,
        hash_to_scalar_dst=b"HashToScalar-" + context,
        derive_key_pair_dst=b"DeriveKeyPair" + context,
        seed_dst=b"Seed-" + context,
    )


_SUITES = {mode: _make_suite(mode) for mode in Mode}


def context_string(mode: Mode) -> bytes:
    """``"OPRFV1-" ‖ I2OSP(mode, 1) ‖ "-" ‖ "ristretto255-SHA512"`` (RFC 9497 §3.1)."""
    return _SUITES[Mode(mode)].context


# --- hashing (RFC 9380 §5.3.1 with SHA-512, and RFC 9497 §4.1) ---------------------------


def _i2osp2(n: int) -> bytes:
    return n.to_bytes(2, "big")


def _len_prefixed(*parts: bytes) -> bytes:
    return b"".join(_i2osp2(len(p)) + p for p in parts)


_XMD_B_BYTES = hashlib.sha512().digest_size  # b_in_bytes = 64
_XMD_Z_PAD = bytes(hashlib.sha512().block_size)  # s_in_bytes = 128 zero bytes


def expand_message_xmd(msg: bytes, dst: bytes, length: int) -> bytes:
    """expand_message_xmd of RFC 9380 §5.3.1 with SHA-512."""
    ell = -(-length // _XMD_B_BYTES)
    if not 0 < length <= 0xFFFF or ell > 255 or len(dst) > 255:
        raise OprfError("expand_message_xmd: output length or DST length out of range")
    dst_prime = dst + bytes([len(dst)])
    b0 = hashlib.sha512(_XMD_Z_PAD + msg + _i2osp2(length) + b"\x00" + dst_prime).digest()
    b_i = hashlib.sha512(b0 + b"\x01" + dst_prime).digest()
    out = [b_i]
    for i in range(2, ell + 1):
        mixed = bytes(x ^ y for x, y in zip(b0, b_i, strict=True))
        b_i = hashlib.sha512(mixed + bytes([i]) + dst_prime).digest()
        out.append(b_i)
    return b"".join(out)[:length]


def _hash_to_group(data: bytes, suite: _Suite) -> bytes:
    """hash_to_ristretto255 (RFC 9380 Appendix B): expand to 64 bytes, libsodium's one-way map."""
    return _from_hash(expand_message_xmd(data, suite.hash_to_group_dst, 64))


def _hash_to_scalar(data: bytes, dst: bytes) -> bytes:
    return _reduce(expand_message_xmd(data, dst, 64))


# --- checked conversions from bytes ------------------------------------------------------


def _check_input(data: bytes, what: str = "an OPRF input") -> None:
    if not isinstance(data, bytes):
        raise OprfError(f"{what} must be bytes")
    if len(data) > MAX_INPUT_BYTES:
        raise OprfError(f"{what} has at most {MAX_INPUT_BYTES} bytes, this one has {len(data)}")


def _element(data: bytes, what: str) -> bytes:
    """DeserializeElement: a canonical ristretto255 encoding, not the identity.

    The libsodium in rbcl 1.1.2 (1.0.18) ignores bit 255 when it decodes, so an element with
    that bit set would pass as the element without it (and 00…0080 as the identity); RFC 9496
    §4.3.1 rejects it, and so do we, before asking libsodium.
    """
    if not isinstance(data, bytes) or len(data) != ELEMENT_BYTES:
        raise OprfError(f"{what} must be {ELEMENT_BYTES} bytes")
    if data[-1] & 0x80 or not _is_valid_point(data) or hmac.compare_digest(data, _IDENTITY):
        raise OprfError(f"{what} is not a valid non-identity ristretto255 element")
    return data


def _scalar(data: bytes, what: str, *, nonzero: bool) -> bytes:
    """DeserializeScalar: 32 bytes, little-endian, below the group order (and not zero)."""
    if not isinstance(data, bytes) or len(data) != SCALAR_BYTES:
        raise OprfError(f"{what} must be {SCALAR_BYTES} bytes")
    if not hmac.compare_digest(_reduce(data + _ZERO), data):
        raise OprfError(f"{what} is not a canonical scalar (it is not below the group order)")
    if nonzero and hmac.compare_digest(data, _ZERO):
        raise OprfError(f"{what} must not be zero")
    return data


def random_scalar(rng: Rng = secrets.token_bytes) -> bytes:
    """RandomScalar: a uniformly random non-zero scalar (64 random bytes reduced mod the order)."""
    for _ in range(16):
        wide = rng(64)
        if not isinstance(wide, bytes) or len(wide) != 64:
            raise OprfError("the random source returned the wrong number of bytes")
        s = _reduce(wide)
        if not hmac.compare_digest(s, _ZERO):
            return s
    raise OprfError("the random source keeps returning zero")


# --- keys -------------------------------------------------------------------------------


def derive_key_pair(seed: bytes, info: bytes, mode: Mode = Mode.OPRF) -> tuple[bytes, bytes]:
    """DeriveKeyPair (RFC 9497 §3.2.1): ``(skS, pkS)`` from a secret 32-byte seed and public info."""
    if not isinstance(seed, bytes) or len(seed) != SCALAR_BYTES:
        raise OprfError(f"a key seed must be {SCALAR_BYTES} bytes")
    _check_input(info, "the key info")
    suite = _SUITES[Mode(mode)]
    derive_input = seed + _len_prefixed(info)
    for counter in range(256):
        sk = _hash_to_scalar(derive_input + bytes([counter]), suite.derive_key_pair_dst)
        if not hmac.compare_digest(sk, _ZERO):
            return sk, _mul_base(sk)
    raise OprfError("DeriveKeyPair found no non-zero key")  # pragma: no cover (probability 2^-2000)


def generate_key_pair(rng: Rng = secrets.token_bytes) -> tuple[bytes, bytes]:
    """GenerateKeyPair (RFC 9497 §3.2): a random ``(skS, pkS)``."""
    sk = random_scalar(rng)
    return sk, _mul_base(sk)


def public_key_for(private_key: bytes) -> bytes:
    """``pkS = skS * G`` for a private key."""
    return _mul_base(_scalar(private_key, "a private key", nonzero=True))


# --- the DLEQ proof (RFC 9497 §2.2) ------------------------------------------------------


def _composite_seed(suite: _Suite, pk: bytes) -> bytes:
    return hashlib.sha512(_len_prefixed(pk, suite.seed_dst)).digest()


def _composite_weight(suite: _Suite, seed: bytes, i: int, c: bytes, d: bytes) -> bytes:
    transcript = _i2osp2(len(seed)) + seed + _i2osp2(i) + _len_prefixed(c, d) + b"Composite"
    return _hash_to_scalar(transcript, suite.hash_to_scalar_dst)


def _compute_composites(
    suite: _Suite, pk: bytes, blinded: Sequence[bytes], evaluated: Sequence[bytes]
) -> tuple[bytes, bytes]:
    """ComputeComposites: ``M = Σ dᵢ·Cᵢ`` and ``Z = Σ dᵢ·Dᵢ`` (client side, no key)."""
    seed = _composite_seed(suite, pk)
    m = z = _IDENTITY
    for i, (c, d) in enumerate(zip(blinded, evaluated, strict=True)):
        di = _composite_weight(suite, seed, i, c, d)
        m = _add(_mul_or_zero(di, c), m)
        z = _add(_mul_or_zero(di, d), z)
    return m, z


def _compute_composites_fast(
    suite: _Suite, sk: bytes, pk: bytes, blinded: Sequence[bytes], evaluated: Sequence[bytes]
) -> tuple[bytes, bytes]:
    """ComputeCompositesFast: as ``_compute_composites`` but ``Z = k·M`` (server side)."""
    seed = _composite_seed(suite, pk)
    m = _IDENTITY
    for i, (c, d) in enumerate(zip(blinded, evaluated, strict=True)):
        m = _add(_mul_or_zero(_composite_weight(suite, seed, i, c, d), c), m)
    return m, _mul_or_zero(sk, m)


def _challenge(suite: _Suite, pk: bytes, m: bytes, z: bytes, t2: bytes, t3: bytes) -> bytes:
    transcript = _len_prefixed(pk, m, z, t2, t3) + b"Challenge"
    return _hash_to_scalar(transcript, suite.hash_to_scalar_dst)


def _generate_proof(
    suite: _Suite,
    sk: bytes,
    pk: bytes,
    blinded: Sequence[bytes],
    evaluated: Sequence[bytes],
    r: bytes,
) -> bytes:
    """GenerateProof(k, A = G, B = pkS, C, D) with the random scalar ``r``."""
    m, z = _compute_composites_fast(suite, sk, pk, blinded, evaluated)
    t2 = _mul_base(r)
    t3 = _mul_or_zero(r, m)
    c = _challenge(suite, pk, m, z, t2, t3)
    s = _scalar_sub(r, _scalar_mul(c, sk))
    return c + s


def _proof_holds(
    suite: _Suite, pk: bytes, blinded: Sequence[bytes], evaluated: Sequence[bytes], proof: bytes
) -> bool:
    """VerifyProof(A = G, B = pkS, C, D, proof); all elements already checked."""
    if not isinstance(proof, bytes) or len(proof) != PROOF_BYTES:
        raise OprfError(f"a proof must be {PROOF_BYTES} bytes")
    c = _scalar(proof[:SCALAR_BYTES], "the proof's challenge", nonzero=False)
    s = _scalar(proof[SCALAR_BYTES:], "the proof's response", nonzero=False)
    m, z = _compute_composites(suite, pk, blinded, evaluated)
    t2 = _add(_mul_base_or_zero(s), _mul_or_zero(c, pk))
    t3 = _add(_mul_or_zero(s, m), _mul_or_zero(c, z))
    return hmac.compare_digest(_challenge(suite, pk, m, z, t2, t3), c)


def _check_batch(count: int, *others: int) -> None:
    if count == 0:
        raise OprfError("a batch needs at least one element")
    if count > MAX_BATCH:
        raise OprfError(f"a batch has at most {MAX_BATCH} elements, this one has {count}")
    if any(n != count for n in others):
        raise OprfError("the lists of a batch differ in length")


def verify_proof(
    public_key: bytes,
    blinded_elements: Sequence[bytes],
    evaluated_elements: Sequence[bytes],
    proof: bytes,
) -> bool:
    """VerifyProof for ``evaluated_elements[i] = skS · blinded_elements[i]`` with one batched proof.

    Malformed elements or a malformed proof raise ``OprfError``; a well-formed proof that does
    not hold gives ``False``.
    """
    _check_batch(len(blinded_elements), len(evaluated_elements))
    pk = _element(public_key, "the server's public key")
    blinded = [_element(b, "a blinded element") for b in blinded_elements]
    evaluated = [_element(e, "an evaluated element") for e in evaluated_elements]
    return _proof_holds(_SUITES[Mode.VOPRF], pk, blinded, evaluated, proof)


# --- server ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerKey:
    """The server's OPRF key for one mode: the private scalar and its public element.

    Clients of a VOPRF server need ``public_key`` to check proofs; an OPRF server never needs to
    publish it. Keys compare by mode and public key (which fixes the private key), never by
    the secret bytes.
    """

    private_key: bytes = field(repr=False, compare=False)
    mode: Mode = Mode.OPRF
    public_key: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", Mode(self.mode))
        object.__setattr__(self, "public_key", public_key_for(self.private_key))

    @classmethod
    def derive(cls, seed: bytes, info: bytes, mode: Mode = Mode.OPRF) -> ServerKey:
        """The key DeriveKeyPair gives for a secret 32-byte seed, public info and the mode."""
        sk, _ = derive_key_pair(seed, info, mode)
        return cls(sk, mode)

    @classmethod
    def generate(cls, mode: Mode = Mode.OPRF, rng: Rng = secrets.token_bytes) -> ServerKey:
        """A fresh random key."""
        sk, _ = generate_key_pair(rng)
        return cls(sk, mode)

    def _evaluate_all(self, blinded_elements: Sequence[bytes]) -> tuple[list[bytes], list[bytes]]:
        _check_batch(len(blinded_elements))
        blinded = [_element(b, "a blinded element") for b in blinded_elements]
        return blinded, [_mul(self.private_key, b) for b in blinded]

    def blind_evaluate(self, blinded_elements: Sequence[bytes]) -> list[bytes]:
        """BlindEvaluate of the OPRF mode: ``skS · blindedElement`` for each element, in order.

        Raises ``OprfError`` if any element is malformed, not a ristretto255 element or the
        identity, or if this is a VOPRF key (use ``blind_evaluate_with_proof``).
        """
        if self.mode is not Mode.OPRF:
            raise OprfError("a VOPRF key evaluates with blind_evaluate_with_proof")
        return self._evaluate_all(blinded_elements)[1]

    def blind_evaluate_with_proof(
        self,
        blinded_elements: Sequence[bytes],
        *,
        rng: Rng = secrets.token_bytes,
        proof_scalar: bytes | None = None,
    ) -> tuple[list[bytes], bytes]:
        """BlindEvaluate of the VOPRF mode: the evaluated elements and one DLEQ proof for all.

        ``proof_scalar`` fixes the proof's random scalar ``r`` (known-answer tests only); else it
        is drawn from ``rng``.
        """
        if self.mode is not Mode.VOPRF:
            raise OprfError("only a VOPRF key makes proofs")
        blinded, evaluated = self._evaluate_all(blinded_elements)
        if proof_scalar is None:
            r = random_scalar(rng)
        else:
            r = _scalar(proof_scalar, "the proof scalar", nonzero=True)
        suite = _SUITES[self.mode]
        proof = _generate_proof(suite, self.private_key, self.public_key, blinded, evaluated, r)
        return evaluated, proof

    def evaluate(self, input: bytes) -> bytes:
        """The PRF output for an input the server knows itself (RFC 9497 ``Evaluate``)."""
        return evaluate(self.private_key, input, self.mode)


def evaluate(private_key: bytes, input: bytes, mode: Mode = Mode.OPRF) -> bytes:
    """Evaluate (RFC 9497 §3.3.1): ``Hash(len ‖ input ‖ len ‖ skS·HashToGroup(input) ‖ "Finalize")``.

    Equals what a client gets from ``blind``, ``blind_evaluate`` and ``finalize`` in ``mode``.
    """
    sk = _scalar(private_key, "a private key", nonzero=True)
    element = _input_element(input, _SUITES[Mode(mode)])
    return _finalize_hash(input, _mul(sk, element))


# --- client ------------------------------------------------------------------------------


def _input_element(input: bytes, suite: _Suite) -> bytes:
    _check_input(input)
    element = _hash_to_group(input, suite)
    if hmac.compare_digest(element, _IDENTITY):  # pragma: no cover (probability 2^-252)
        raise OprfError("the input maps to the identity element")
    return element


def _finalize_hash(input: bytes, unblinded: bytes) -> bytes:
    return hashlib.sha512(_len_prefixed(input, unblinded) + b"Finalize").digest()


def blind(
    input: bytes,
    blind_scalar: bytes | None = None,
    *,
    mode: Mode = Mode.OPRF,
    rng: Rng = secrets.token_bytes,
) -> tuple[bytes, bytes]:
    """Blind (RFC 9497 §3.3.1): ``(blind, blindedElement)``; keep ``blind``, send the element.

    ``blind_scalar`` fixes the blind (known-answer tests only); else it is drawn from ``rng``.
    ``mode`` must be the server's mode: it enters HashToGroup.
    """
    element = _input_element(input, _SUITES[Mode(mode)])
    if blind_scalar is None:
        r = random_scalar(rng)
    else:
        r = _scalar(blind_scalar, "the blind", nonzero=True)
    return r, _mul(r, element)


def finalize(
    input: bytes,
    blind: bytes,
    evaluated_element: bytes,
    *,
    blinded_element: bytes | None = None,
    public_key: bytes | None = None,
    proof: bytes | None = None,
) -> bytes:
    """Finalize (RFC 9497 §3.3.1 and §3.3.2): the 64-byte PRF output of one input.

    OPRF mode: give only ``input``, ``blind`` and the server's ``evaluated_element``. VOPRF
    mode: also give ``blinded_element`` (what ``blind`` returned), the server's ``public_key``
    and its ``proof``; a proof that does not hold raises ``OprfError``.
    """
    return finalize_batch(
        [input],
        [blind],
        [evaluated_element],
        blinded_elements=None if blinded_element is None else [blinded_element],
        public_key=public_key,
        proof=proof,
    )[0]


def finalize_batch(
    inputs: Sequence[bytes],
    blinds: Sequence[bytes],
    evaluated_elements: Sequence[bytes],
    *,
    blinded_elements: Sequence[bytes] | None = None,
    public_key: bytes | None = None,
    proof: bytes | None = None,
) -> list[bytes]:
    """Finalize for a batch, in order; in VOPRF mode one batched proof covers every element.

    The VOPRF arguments (``blinded_elements``, ``public_key``, ``proof``) come all or none.
    """
    verifiable = (blinded_elements is not None, public_key is not None, proof is not None)
    if any(verifiable) and not all(verifiable):
        raise OprfError("VOPRF finalize needs the blinded elements, the public key and the proof")
    _check_batch(len(inputs), len(blinds), len(evaluated_elements))
    for data in inputs:
        _check_input(data)
    evaluated = [_element(e, "an evaluated element") for e in evaluated_elements]
    inverses = [_scalar_invert(_scalar(b, "a blind", nonzero=True)) for b in blinds]
    if blinded_elements is not None and public_key is not None and proof is not None:
        if not verify_proof(public_key, blinded_elements, evaluated, proof):
            raise OprfError("the server's proof does not verify")
    return [
        _finalize_hash(data, _mul(inv, e))
        for data, inv, e in zip(inputs, inverses, evaluated, strict=True)
    ]
