"""Witness cosignatures of checkpoints: C2SP tlog-cosignature, the Ed25519 ``cosignature/v1``.

A witness that verified a checkpoint's log signature and its consistency with every checkpoint
it cosigned before adds a note signature line of its own::

    example.gov.cn/hedui/audit
    20852163
    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=

    — example.gov.cn/hedui/audit <the log's signature>
    — witness.example.gov.cn/w1 base64(key ID || u64 big-endian timestamp || Ed25519 signature)

The Ed25519 signature is over ``"cosignature/v1\\n" "time <timestamp>\\n"`` followed by the
whole checkpoint body (extension lines included, signature lines not); the timestamp is POSIX
seconds in decimal without leading zeros, and at most 2**63 - 1. The key ID is
SHA-256(name || "\\n" || 0x04 || public key)[:4], and the witness's vkey is
``<name>+<hex key ID>+base64(0x04 || public key)`` (c2sp.org/tlog-cosignature, signature type
0x04 of c2sp.org/signed-note). The same Ed25519 key under type 0x01 (a log key) has another
key ID, so a log's signature is never taken for a cosignature, nor the reverse.

A :class:`WitnessPolicy` names the witnesses a party trusts and how many of them (at least one)
must have cosigned a checkpoint before the party relies on it (issue #23: no checkpoint taken
on the log's word alone). Malformed or unverifiable cosignatures raise ``VerificationError``;
a checkpoint without the quorum raises :class:`~hedui.audit.errors.Unwitnessed`; bad arguments
of the signing side and malformed vkeys raise ``ValueError``.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hedui.audit.checkpoint import (
    EM_DASH,
    MAX_SIGNATURES,
    Checkpoint,
    _check_name,
    _decode_text,
    _parse_signature_line,
    _raw_public_key,
    parse_and_verify,
    vkey_parts,
)
from hedui.audit.checkpoint import split_note as split_note  # its users read notes here too
from hedui.audit.errors import Unwitnessed, VerificationError

COSIGNATURE_TYPE = b"\x04"  # c2sp.org/signed-note: timestamped Ed25519 checkpoint cosignatures
HEADER = b"cosignature/v1\n"
MAX_TIMESTAMP = 2**63 - 1
SIGNATURE_SIZE = 8 + 64  # u64 timestamp || Ed25519 signature
DEFAULT_CLOCK_SKEW = 600  # seconds a cosignature's time may be ahead of the verifier's clock

_SIGNATURE_PREFIX = EM_DASH + " "


# --- keys --------------------------------------------------------------------------------------


def check_key_name(name: str) -> None:
    """``ValueError`` unless ``name`` is a valid note key name (non-empty, no space, no '+')."""
    _check_name(name)


def cosigner_key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """The 4-byte key ID of an Ed25519 cosigner key (signature type 0x04)."""
    material = name.encode() + b"\n" + COSIGNATURE_TYPE + _raw_public_key(public_key)
    return hashlib.sha256(material).digest()[:4]


def cosigner_vkey(name: str, public_key: Ed25519PublicKey) -> str:
    """The witness's verifier key ``<name>+<hex key ID>+<base64(0x04 || public key)>``."""
    _check_name(name)
    material = base64.b64encode(COSIGNATURE_TYPE + _raw_public_key(public_key)).decode()
    return f"{name}+{cosigner_key_id(name, public_key).hex()}+{material}"


@dataclass(frozen=True, eq=False)
class Cosigner:
    """A witness as a verifier knows it: its key name and Ed25519 public key."""

    name: str
    public_key: Ed25519PublicKey = field(compare=False)
    key_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        object.__setattr__(self, "key_id", cosigner_key_id(self.name, self.public_key))

    @property
    def raw_key(self) -> bytes:
        return _raw_public_key(self.public_key)

    @property
    def vkey(self) -> str:
        return cosigner_vkey(self.name, self.public_key)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Cosigner)
            and other.name == self.name
            and other.raw_key == self.raw_key
        )

    def __hash__(self) -> int:
        return hash((self.name, self.raw_key))

    @classmethod
    def from_vkey(cls, text: str) -> Cosigner:
        """Parse a cosigner vkey (type 0x04); ``ValueError`` if malformed or of another type
        (a log's type 0x01 vkey is refused: its key ID is not the cosignature's)."""
        name, id_hex, raw = vkey_parts(text.strip(), "witness vkey")
        if raw[:1] != COSIGNATURE_TYPE:
            raise ValueError(
                f"not a witness vkey: signature type {raw[0]:#04x}, want 0x04 "
                "(Ed25519 cosignature/v1, c2sp.org/tlog-cosignature)"
            )
        cosigner = cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]))
        if cosigner.key_id != bytes.fromhex(id_hex):
            raise ValueError(f"malformed witness vkey: key ID {id_hex} does not match the key")
        return cosigner


# --- signing and verifying ---------------------------------------------------------------------


def signed_message(body: bytes, timestamp: int) -> bytes:
    """What a cosignature/v1 signs: the header line, the time line, the checkpoint body."""
    return HEADER + b"time %d\n" % timestamp + body


def _check_timestamp(timestamp: int) -> None:
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError(f"cosignature timestamp {timestamp} out of range 0..2**63-1")


def cosign(body: bytes, name: str, private_key: Ed25519PrivateKey, timestamp: int) -> bytes:
    """The cosignature line (ending in a newline) of the witness key (``name``,
    ``private_key``) over the checkpoint ``body`` at ``timestamp`` (POSIX seconds)."""
    _check_name(name)
    _check_timestamp(timestamp)
    try:
        Checkpoint.from_body(body)
    except VerificationError as e:
        raise ValueError(f"not a checkpoint body: {e}") from None
    signature = private_key.sign(signed_message(body, timestamp))
    blob = cosigner_key_id(name, private_key.public_key()) + struct.pack(">Q", timestamp)
    line = f"{_SIGNATURE_PREFIX}{name} {base64.b64encode(blob + signature).decode()}\n"
    return line.encode()


@dataclass(frozen=True)
class Cosignature:
    """A verified cosignature: whose, and when (POSIX seconds) the witness made it."""

    name: str
    key_id: bytes
    timestamp: int


def _verify_blob(body: bytes, blob: bytes, cosigner: Cosigner) -> int:
    """The timestamp of a cosignature's signature bytes (after the key ID) once it verifies."""
    where = f"cosignature by {cosigner.name}+{cosigner.key_id.hex()}"
    if len(blob) != SIGNATURE_SIZE:
        raise VerificationError(f"{where} has {len(blob)} bytes, want {SIGNATURE_SIZE}")
    (timestamp,) = struct.unpack(">Q", blob[:8])
    if timestamp > MAX_TIMESTAMP:
        raise VerificationError(f"{where} has a timestamp beyond 2**63-1")
    try:
        cosigner.public_key.verify(blob[8:], signed_message(body, timestamp))
    except InvalidSignature:
        raise VerificationError(f"invalid {where}") from None
    return int(timestamp)


def verify_cosignature(body: bytes, line: bytes | str, cosigner: Cosigner) -> int:
    """The timestamp of the cosignature ``line`` (with or without its newline) by ``cosigner``
    over the checkpoint ``body``; ``VerificationError`` unless it is that witness's and valid."""
    text = _decode_text(line, "cosignature line") if isinstance(line, bytes) else line
    name, id_, blob = _parse_signature_line(text.removesuffix("\n"))
    if name != cosigner.name or id_ != cosigner.key_id:
        raise VerificationError(
            f"the line is by key {name}+{id_.hex()}, not the witness "
            f"{cosigner.name}+{cosigner.key_id.hex()}"
        )
    Checkpoint.from_body(body)
    return _verify_blob(body, blob, cosigner)


# --- notes -------------------------------------------------------------------------------------


def signature_line(line: str) -> tuple[str, bytes, bytes]:
    """(key name, key ID, signature bytes) of a well-formed signature line (with or without
    its newline); ``VerificationError`` otherwise."""
    return _parse_signature_line(line.removesuffix("\n"))


def line_key(line: str) -> tuple[str, bytes]:
    """(key name, key ID) of a well-formed signature line (``VerificationError`` otherwise)."""
    name, id_, _ = signature_line(line)
    return name, id_


def parse_signature_lines(lines: bytes) -> list[str]:
    """The signature lines of a witness's answer (one or more, each ending in a newline)."""
    text = _decode_text(lines, "signature lines")
    if not text.endswith("\n") or text == "\n":
        raise VerificationError("malformed signature lines: want lines ending in a newline")
    found = text[:-1].split("\n")
    for line in found:
        _parse_signature_line(line)
    return found


def add_cosignatures(note: bytes, lines: bytes | Iterable[str]) -> bytes:
    """``note`` with the signature ``lines`` appended (a line already there is not repeated).
    Only their form is checked: a verifier checks the cosignatures of the witnesses it trusts
    (:meth:`WitnessPolicy.check`) and ignores the others."""
    text, existing = split_note(note)
    new = parse_signature_lines(lines) if isinstance(lines, bytes) else list(lines)
    for line in new:
        _parse_signature_line(line)
    merged = existing + [line for line in dict.fromkeys(new) if line not in existing]
    if len(merged) > MAX_SIGNATURES:
        raise VerificationError(
            f"note would have {len(merged)} signatures, at most {MAX_SIGNATURES}"
        )
    return text + b"\n" + "".join(line + "\n" for line in merged).encode()


def cosignatures(note: bytes, cosigners: Iterable[Cosigner]) -> list[Cosignature]:
    """The cosignatures on ``note`` by the given witnesses, each verified. Lines of other keys
    are ignored; a line of one of these keys that does not verify rejects the note (signed-note:
    a bad signature by a known key is a malformed note)."""
    text, lines = split_note(note)
    Checkpoint.from_body(text)
    known = {(c.name, c.key_id): c for c in cosigners}
    found: list[Cosignature] = []
    for line in lines:
        name, id_, blob = _parse_signature_line(line)
        cosigner = known.get((name, id_))
        if cosigner is not None:
            found.append(Cosignature(name, id_, _verify_blob(text, blob, cosigner)))
    return found


@dataclass(frozen=True)
class WitnessPolicy:
    """The witnesses a party trusts and how many of them must have cosigned a checkpoint."""

    witnesses: tuple[Cosigner, ...]
    quorum: int = 1
    clock_skew: int = DEFAULT_CLOCK_SKEW  # how far ahead of `now` a cosignature may be dated

    def __post_init__(self) -> None:
        if not self.witnesses:
            raise ValueError("a witness policy names at least one witness")
        if len(set(self.witnesses)) != len(self.witnesses):
            raise ValueError("a witness is named twice in the witness policy")
        raws = [w.raw_key for w in self.witnesses]
        if len(set(raws)) != len(raws):
            # tlog-cosignature: an Ed25519 cosignature does not commit to the witness's name, so
            # one key under two names would count one witness twice
            raise ValueError("two witnesses of the policy share one public key")
        if not 1 <= self.quorum <= len(self.witnesses):
            raise ValueError(
                f"quorum {self.quorum} out of range: 1 to {len(self.witnesses)} (the witnesses named)"
            )
        if self.clock_skew < 0:
            raise ValueError("clock_skew must not be negative")

    @classmethod
    def from_vkeys(cls, vkeys: Sequence[str], quorum: int = 1) -> WitnessPolicy:
        return cls(tuple(Cosigner.from_vkey(v) for v in vkeys), quorum)

    def check(self, note: bytes, *, now: float | None = None) -> tuple[Cosignature, ...]:
        """The cosignatures of distinct trusted witnesses on ``note`` (a signed checkpoint) once
        at least ``quorum`` of them verify; :class:`Unwitnessed` when fewer do, and
        ``VerificationError`` when one of them does not verify or, given ``now``, is dated more
        than ``clock_skew`` seconds in the future. The log's own signature is not checked here
        (see :func:`hedui.audit.checkpoint.parse_and_verify`)."""
        found: dict[str, Cosignature] = {}
        for c in cosignatures(note, self.witnesses):
            if now is not None and c.timestamp > now + self.clock_skew:
                raise VerificationError(
                    f"the cosignature by {c.name} is dated {c.timestamp}, in the future"
                )
            if c.name not in found or c.timestamp > found[c.name].timestamp:
                found[c.name] = c
        if len(found) < self.quorum:
            names = ", ".join(w.name for w in self.witnesses)
            raise Unwitnessed(
                f"the checkpoint is cosigned by {len(found)} of the trusted witnesses ({names}); "
                f"{self.quorum} needed"
            )
        return tuple(found.values())


def parse_and_verify_witnessed(
    note: bytes,
    verifier_name: str,
    public_key: Ed25519PublicKey,
    policy: WitnessPolicy,
    *,
    origin: str | None = None,
    now: float | None = None,
) -> tuple[Checkpoint, tuple[Cosignature, ...]]:
    """The checkpoint of ``note`` once the log's key signed it (as
    :func:`~hedui.audit.checkpoint.parse_and_verify`) and the witnesses of ``policy`` cosigned
    it (:meth:`WitnessPolicy.check`), with their cosignatures."""
    cp = parse_and_verify(note, verifier_name, public_key, origin=origin)
    return cp, policy.check(note, now=now)
