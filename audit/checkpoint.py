"""C2SP checkpoints (c2sp.org/tlog-checkpoint) signed as Ed25519 notes (c2sp.org/signed-note).

A signed checkpoint::

    example.gov.cn/hedui/audit
    20852163
    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=

    — example.gov.cn/hedui/audit <base64 of the 4-byte key ID and the 64-byte signature>

The body (origin, decimal tree size, base64 root hash, optional extension lines) is the signed
note text; after a blank line come signature lines ``— <key name> base64(key ID || signature)``
with an em dash (U+2014). The key ID is SHA-256(key name || "\\n" || 0x01 || public key)[:4].
Signatures by keys other than the trusted one (another name or another key ID) are ignored.

Malformed or unverifiable notes raise ``VerificationError``; bad arguments of the signing side
(an invalid key name, an impossible checkpoint) and malformed vkeys raise ``ValueError``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hedui.audit.errors import VerificationError

EM_DASH = "\u2014"
ED25519_TYPE = b"\x01"
HASH_SIZE = 32
MAX_TREE_SIZE = 2**64 - 1
MAX_SIGNATURES = 100  # the spec asks verifiers to accept at least 16

_SIGNATURE_PREFIX = EM_DASH + " "
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
_KEY_ID = re.compile(r"[0-9a-fA-F]{8}")


# --- keys --------------------------------------------------------------------------------------


def _is_valid_name(name: str) -> bool:
    """Key names are non-empty, without Unicode spaces, plus signs or control characters."""
    return bool(name) and "+" not in name and not any(c.isspace() or c < " " for c in name)


def _check_name(name: str) -> None:
    if not _is_valid_name(name):
        raise ValueError(f"invalid key name {name!r}: must be non-empty, without spaces or '+'")


def _raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """The 4-byte key ID of an Ed25519 note key."""
    material = name.encode() + b"\n" + ED25519_TYPE + _raw_public_key(public_key)
    return hashlib.sha256(material).digest()[:4]


def _b64decode(text: str) -> bytes | None:
    """Standard padded base64 in its one canonical spelling, or None."""
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII input
        return None
    return raw if base64.b64encode(raw).decode() == text else None


def vkey(name: str, public_key: Ed25519PublicKey) -> str:
    """The verifier key text ``<name>+<hex key ID>+<base64(0x01 || public key)>``."""
    _check_name(name)
    material = base64.b64encode(ED25519_TYPE + _raw_public_key(public_key)).decode()
    return f"{name}+{key_id(name, public_key).hex()}+{material}"


def vkey_parts(text: str, what: str = "vkey") -> tuple[str, str, bytes]:
    """A vkey's name, key ID (hex) and key material (type byte and 32 bytes), each checked for
    form (the type and the key ID against the key are the caller's to check); ``ValueError``
    naming ``what`` if malformed."""
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise ValueError(f"malformed {what}: want <name>+<key ID>+<key>")
    name, id_hex, material = parts
    _check_name(name)
    if not _KEY_ID.fullmatch(id_hex):
        raise ValueError(f"malformed {what}: key ID {id_hex!r} is not 8 hex digits")
    raw = _b64decode(material)
    if raw is None or len(raw) != 1 + 32:
        raise ValueError(f"malformed {what}: key is not base64 of 33 bytes")
    return name, id_hex, raw


def parse_vkey(text: str) -> tuple[str, Ed25519PublicKey]:
    """The key name and Ed25519 public key of a vkey; ``ValueError`` if malformed."""
    name, id_hex, raw = vkey_parts(text)
    if raw[:1] != ED25519_TYPE:
        raise ValueError(f"unsupported vkey: signature type {raw[0]:#04x}, want 0x01 (Ed25519)")
    public_key = Ed25519PublicKey.from_public_bytes(raw[1:])
    if key_id(name, public_key) != bytes.fromhex(id_hex):
        raise ValueError(f"malformed vkey: key ID {id_hex} does not match the key")
    return name, public_key


# --- notes -------------------------------------------------------------------------------------


def _decode_text(data: bytes, what: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationError(f"{what} is not valid UTF-8") from None
    if any(c < " " and c != "\n" for c in text):
        raise VerificationError(f"{what} contains a control character")
    return text


def sign_note(text: bytes, name: str, private_key: Ed25519PrivateKey) -> bytes:
    """The signed note: ``text`` (non-empty, ending in a newline), a blank line, one signature."""
    _check_name(name)
    try:
        _decode_text(text, "note text")
    except VerificationError as e:
        raise ValueError(str(e)) from None
    if not text.endswith(b"\n"):
        raise ValueError("note text must end with a newline")
    signature = key_id(name, private_key.public_key()) + private_key.sign(text)
    line = f"{_SIGNATURE_PREFIX}{name} {base64.b64encode(signature).decode()}\n"
    return text + b"\n" + line.encode()


def _parse_signature_line(line: str) -> tuple[str, bytes, bytes]:
    """(key name, key ID, signature) of one signature line."""
    if not line.startswith(_SIGNATURE_PREFIX):
        raise VerificationError(
            f"malformed signature line {line!r}: want an em dash (U+2014), a space, a key name"
        )
    name, _, encoded = line[len(_SIGNATURE_PREFIX) :].rpartition(" ")
    signature = _b64decode(encoded)
    if not _is_valid_name(name) or signature is None or len(signature) < 5:
        raise VerificationError(f"malformed signature line {line!r}")
    return name, signature[:4], signature[4:]


def split_note(note: bytes) -> tuple[bytes, list[str]]:
    """(text, signature lines) of a signed note, strictly (nothing is verified here): the text
    ends in a newline, a blank line follows, then 1..MAX_SIGNATURES well-formed lines."""
    decoded = _decode_text(note, "note")
    split = decoded.rfind("\n\n")
    if split < 0:
        raise VerificationError("malformed note: no blank line before the signatures")
    text, signatures = decoded[: split + 1], decoded[split + 2 :]
    if not signatures.endswith("\n"):
        raise VerificationError("malformed note: the signatures do not end with a newline")
    lines = signatures[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise VerificationError(f"note has {len(lines)} signatures, at most {MAX_SIGNATURES}")
    for line in lines:
        _parse_signature_line(line)
    return text.encode(), lines


def open_note(note: bytes, verifier_name: str, public_key: Ed25519PublicKey) -> bytes:
    """The text of ``note`` once a signature by the key (``verifier_name``, ``public_key``)
    verifies. Lines by other keys are ignored; a bad signature by this key rejects the note."""
    _check_name(verifier_name)
    signed, lines = split_note(note)
    want_id = key_id(verifier_name, public_key)
    verified = False
    for line in lines:
        name, id_, signature = _parse_signature_line(line)
        if name != verifier_name or id_ != want_id:
            continue
        try:
            public_key.verify(signature, signed)
        except InvalidSignature:
            raise VerificationError(f"invalid signature by key {name}+{id_.hex()}") from None
        verified = True
    if not verified:
        raise VerificationError(f"note has no signature by key {verifier_name}+{want_id.hex()}")
    return signed


# --- checkpoints -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: its origin line, tree size and RFC 6962 root hash."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for line in (self.origin, *self.extensions):
            if not line or any(c < " " for c in line):
                raise ValueError(f"invalid checkpoint line {line!r}: empty or control characters")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise ValueError(f"tree size {self.size} out of range")
        if len(self.root) != HASH_SIZE:
            raise ValueError(f"root hash has {len(self.root)} bytes, want {HASH_SIZE}")

    def body(self) -> bytes:
        """The note text: origin, size and base64 root lines, then any extension lines."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        return "".join(line + "\n" for line in (*lines, *self.extensions)).encode()

    @classmethod
    def from_body(cls, body: bytes) -> Checkpoint:
        """Parse a checkpoint body strictly (it is not verified here)."""
        text = _decode_text(body, "checkpoint")
        if not text.endswith("\n"):
            raise VerificationError("malformed checkpoint: no final newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise VerificationError(f"malformed checkpoint: {len(lines)} lines, want at least 3")
        origin, size_line, root_line, *extensions = lines
        if not origin:
            raise VerificationError("malformed checkpoint: empty origin")
        if not _SIZE.fullmatch(size_line) or int(size_line) > MAX_TREE_SIZE:
            raise VerificationError(f"malformed checkpoint: tree size {size_line!r}")
        root = _b64decode(root_line)
        if root is None:
            raise VerificationError(f"malformed checkpoint: root hash {root_line!r} is not base64")
        if len(root) != HASH_SIZE:
            raise VerificationError(f"root hash has {len(root)} bytes, want {HASH_SIZE}")
        if not all(extensions):
            raise VerificationError("malformed checkpoint: empty extension line")
        return cls(origin, int(size_line), root, tuple(extensions))


def sign_checkpoint(cp: Checkpoint, name: str, private_key: Ed25519PrivateKey) -> bytes:
    """The full signed note of ``cp``, signed by the key ``name``."""
    return sign_note(cp.body(), name, private_key)


def parse_and_verify(
    note: bytes,
    verifier_name: str,
    public_key: Ed25519PublicKey,
    *,
    origin: str | None = None,
) -> Checkpoint:
    """The checkpoint of a signed note that the given key signed, optionally of that ``origin``."""
    cp = Checkpoint.from_body(open_note(note, verifier_name, public_key))
    if origin is not None and cp.origin != origin:
        raise VerificationError(f"checkpoint origin {cp.origin!r}, want {origin!r}")
    return cp
