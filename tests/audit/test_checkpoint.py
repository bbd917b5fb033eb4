"""C2SP checkpoints and signed notes: round trips, tampering, strict format, known answers."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from hedui.audit.checkpoint import (
    EM_DASH,
    Checkpoint,
    key_id,
    open_note,
    parse_and_verify,
    parse_vkey,
    sign_checkpoint,
    sign_note,
    vkey,
)
from hedui.audit.errors import VerificationError

ORIGIN = "example.gov.cn/hedui/audit"
NAME = ORIGIN
ROOT = hashlib.sha256(b"a root").digest()
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
PUB = KEY.public_key()
CP = Checkpoint(ORIGIN, 20852163, ROOT)

# Known answers from golang.org/x/mod/sumdb/note (note_test.go, BSD-3-Clause).
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    b"If you think cryptography is the answer to your problem,\n"
    b"then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6"
    "KE6RyyBwJnAM=\n"
).encode()
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33W"
    "Wd1RvMc+QQ=\n"
).encode()

# A real signed tree head of the Go checksum database, a checkpoint whose origin line is
# "go.sum database tree", with the key the Go toolchain pins (cmd/go, GOSUMDB default).
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTE = (
    "go.sum database tree\n"
    "31700353\n"
    "qINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n"
    "\n"
    "— sum.golang.org Az3grnmrIUEDFqHzAElIQCPNoRFRAAdFo47fooyWKMHb89k11GJh5zHIfNCOBmwn/C3YI8oW9/C8"
    "DJ87F61QqspBYwM=\n"
).encode()


def _peter_key() -> Ed25519PrivateKey:
    seed = base64.b64decode(PETER_SKEY.split("+", 4)[4])
    assert seed[0] == 1
    return Ed25519PrivateKey.from_private_bytes(seed[1:])


def _signed_body(body: bytes) -> bytes:
    """A validly signed note around an arbitrary body, to reach the checkpoint format checks."""
    return sign_note(body, NAME, KEY)


# --- known answers -----------------------------------------------------------------------------


def test_go_note_known_answers() -> None:
    peter = _peter_key()
    assert vkey("PeterNeumann", peter.public_key()) == PETER_VKEY
    assert key_id("PeterNeumann", peter.public_key()).hex() == "c74f20a3"
    assert sign_note(GO_TEXT, "PeterNeumann", peter) == GO_TEXT + b"\n" + PETER_SIG

    note = GO_TEXT + b"\n" + PETER_SIG + ENOCH_SIG
    for text in (PETER_VKEY, ENOCH_VKEY):
        name, public_key = parse_vkey(text)
        assert open_note(note, name, public_key) == GO_TEXT


def test_sumdb_checkpoint_known_answer() -> None:
    name, public_key = parse_vkey(SUMDB_VKEY)
    cp = parse_and_verify(SUMDB_NOTE, name, public_key)
    assert cp == Checkpoint(
        "go.sum database tree",
        31700353,
        base64.b64decode("qINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs="),
    )
    assert cp.body() + b"\n" == SUMDB_NOTE[: SUMDB_NOTE.index(EM_DASH.encode())]
    with pytest.raises(VerificationError, match="invalid signature"):
        parse_and_verify(SUMDB_NOTE.replace(b"31700353", b"31700354"), name, public_key)


# --- format and round trip ---------------------------------------------------------------------


def test_body_format() -> None:
    assert CP.body() == f"{ORIGIN}\n20852163\n{base64.b64encode(ROOT).decode()}\n".encode()
    with_ext = Checkpoint(ORIGIN, 0, ROOT, ("ext one", "ext two"))
    assert with_ext.body().endswith(b"\next one\next two\n")


def test_round_trip() -> None:
    note = sign_checkpoint(CP, NAME, KEY)
    body, _, signatures = note.partition(b"\n\n")
    assert body + b"\n" == CP.body()
    line = signatures.decode()
    assert line.startswith(f"{EM_DASH} {NAME} ") and line.endswith("\n")
    raw = base64.b64decode(line.rsplit(" ", 1)[1])
    assert len(raw) == 4 + 64 and raw[:4] == key_id(NAME, PUB)
    assert parse_and_verify(note, NAME, PUB) == CP
    assert parse_and_verify(note, NAME, PUB, origin=ORIGIN) == CP


def test_round_trip_with_extensions() -> None:
    cp = Checkpoint(ORIGIN, 7, ROOT, ("— extension with a dash", "x"))
    assert parse_and_verify(sign_checkpoint(cp, NAME, KEY), NAME, PUB) == cp


def test_empty_tree() -> None:
    cp = Checkpoint(ORIGIN, 0, hashlib.sha256(b"").digest())
    assert b"\n0\n" in cp.body()
    assert parse_and_verify(sign_checkpoint(cp, NAME, KEY), NAME, PUB) == cp


def test_key_id_is_sha256_of_name_newline_type_key() -> None:
    raw = bytes.fromhex(vkey(NAME, PUB).split("+")[1])
    pub_bytes = base64.b64decode(vkey(NAME, PUB).split("+", 2)[2])[1:]
    assert raw == hashlib.sha256(NAME.encode() + b"\n\x01" + pub_bytes).digest()[:4]


@settings(max_examples=40, deadline=None)
@given(
    origin=st.text(st.characters(codec="utf-8", min_codepoint=0x20), min_size=1, max_size=40),
    size=st.integers(min_value=0, max_value=2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
)
def test_round_trip_property(origin: str, size: int, root: bytes) -> None:
    cp = Checkpoint(origin, size, root)
    assert parse_and_verify(sign_checkpoint(cp, NAME, KEY), NAME, PUB, origin=origin) == cp


# --- tampering and keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"\n20852163\n", b"\n20852164\n"),
        (b"\n20852163\n", b"\n2085216\n"),
        (ORIGIN.encode(), b"example.gov.cn/hedui/audiT"),
        (base64.b64encode(ROOT), base64.b64encode(hashlib.sha256(b"another root").digest())),
    ],
    ids=["size", "shorter-size", "origin", "root"],
)
def test_tampered_body_fails(old: bytes, new: bytes) -> None:
    note = sign_checkpoint(CP, NAME, KEY)
    assert old in note
    with pytest.raises(VerificationError, match="invalid signature"):
        parse_and_verify(note.replace(old, new, 1), NAME, PUB)


def test_every_single_byte_change_fails() -> None:
    note = sign_checkpoint(CP, NAME, KEY)
    for i in range(len(note)):
        for flip in (0x01, 0x20, 0x80):
            mutated = bytearray(note)
            mutated[i] ^= flip
            with pytest.raises(VerificationError):
                parse_and_verify(bytes(mutated), NAME, PUB)


def test_wrong_origin_fails() -> None:
    note = sign_checkpoint(CP, NAME, KEY)
    with pytest.raises(VerificationError, match="origin"):
        parse_and_verify(note, NAME, PUB, origin="example.gov.cn/other-log")


def test_signature_by_another_key_fails() -> None:
    # Same name, other key: a different key ID, so the line is not ours and is ignored.
    with pytest.raises(VerificationError, match="no signature by key"):
        parse_and_verify(sign_checkpoint(CP, NAME, OTHER_KEY), NAME, PUB)
    # Our key, other name.
    with pytest.raises(VerificationError, match="no signature by key"):
        parse_and_verify(sign_checkpoint(CP, "example.gov.cn/other", KEY), NAME, PUB)


def _signature_line(name: str, id_: bytes, signature: bytes) -> bytes:
    return f"{EM_DASH} {name} {base64.b64encode(id_ + signature).decode()}\n".encode()


def test_unknown_key_lines_are_ignored() -> None:
    note = sign_checkpoint(CP, NAME, KEY)
    body = CP.body()
    ours = key_id(NAME, PUB)
    extra = [
        sign_checkpoint(CP, "witness.example/w1", OTHER_KEY).split(b"\n\n")[1],
        _signature_line(NAME, bytes(4), b"\x00" * 64),  # our name, another key ID
        _signature_line("another.example/log", ours, b"\x00" * 64),  # our key ID, another name
        _signature_line("pq.example/mldsa", b"\x12\x34\x56\x78", b"\x01" * 2420),
    ]
    own = note.split(b"\n\n")[1]
    for lines in ([*extra, own], [own, *extra]):
        assert parse_and_verify(body + b"\n" + b"".join(lines), NAME, PUB) == CP


def test_bad_signature_by_our_key_rejects_the_note() -> None:
    note = sign_checkpoint(CP, NAME, KEY)
    body, _, own = note.partition(b"\n\n")
    bad = _signature_line(NAME, key_id(NAME, PUB), b"\x00" * 64)
    with pytest.raises(VerificationError, match="invalid signature"):
        parse_and_verify(body + b"\n\n" + own + bad, NAME, PUB)
    short = _signature_line(NAME, key_id(NAME, PUB), b"\x00" * 10)
    with pytest.raises(VerificationError, match="invalid signature"):
        parse_and_verify(body + b"\n\n" + short + own, NAME, PUB)


def test_too_many_signatures() -> None:
    note = sign_checkpoint(CP, NAME, KEY)
    body, _, own = note.partition(b"\n\n")
    assert parse_and_verify(body + b"\n\n" + own * 16, NAME, PUB) == CP
    with pytest.raises(VerificationError, match="at most 100"):
        parse_and_verify(body + b"\n\n" + own * 101, NAME, PUB)


# --- strict note and checkpoint syntax ---------------------------------------------------------


@pytest.mark.parametrize(
    "note",
    [
        GO_TEXT,
        GO_TEXT + b"\n",
        GO_TEXT + b"\n" + PETER_SIG[:-1],
        b"\x01" + GO_TEXT + b"\n" + PETER_SIG,
        b"\xff" + GO_TEXT + b"\n" + PETER_SIG,
        GO_TEXT + b"\n" + PETER_SIG.replace(b"PeterNeumann", b"Bad Name"),
        GO_TEXT + b"\n" + PETER_SIG + b"Unexpected line.\n",
        GO_TEXT + b"\n" + PETER_SIG + b"\n",
        GO_TEXT.replace(b"\n", b"\r\n") + b"\r\n" + PETER_SIG,
    ],
    ids=[
        "no-signatures",
        "blank-line-only",
        "no-final-newline",
        "control-character",
        "invalid-utf8",
        "space-in-name",
        "trailing-line",
        "trailing-blank-line",
        "crlf",
    ],
)
def test_malformed_notes_from_go(note: bytes) -> None:
    name, public_key = parse_vkey(PETER_VKEY)
    with pytest.raises(VerificationError):
        open_note(note, name, public_key)


@pytest.mark.parametrize(
    "dash",
    ["-", "--", "\u2013", "\u2015", "\u2212", EM_DASH + EM_DASH],
    ids=["hyphen", "double-hyphen", "en-dash", "horizontal-bar", "minus", "two-em-dashes"],
)
def test_signature_lines_need_the_em_dash(dash: str) -> None:
    note = sign_checkpoint(CP, NAME, KEY)
    assert EM_DASH.encode() == b"\xe2\x80\x94" and note.count(b"\xe2\x80\x94") == 1
    with pytest.raises(VerificationError, match="em dash"):
        parse_and_verify(note.replace(EM_DASH.encode(), dash.encode()), NAME, PUB)


@pytest.mark.parametrize(
    "replacement",
    [f"{EM_DASH}{NAME} ", f"{EM_DASH}  {NAME} ", f"{EM_DASH}\u00a0{NAME} ", f"{EM_DASH} {NAME}  "],
    ids=["no-space", "two-spaces", "nbsp", "two-spaces-before-signature"],
)
def test_signature_line_spacing_is_exact(replacement: str) -> None:
    note = sign_checkpoint(CP, NAME, KEY)
    mangled = note.replace(f"{EM_DASH} {NAME} ".encode(), replacement.encode())
    with pytest.raises(VerificationError, match=r"malformed signature line|em dash"):
        parse_and_verify(mangled, NAME, PUB)


ROOT_B64 = base64.b64encode(ROOT).decode()
URLSAFE_ROOT = base64.urlsafe_b64encode(b"\xff" * 32).decode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (f"{ORIGIN}\n5\n", "2 lines, want at least 3"),
        (f"\n5\n{ROOT_B64}\n", "empty origin"),
        (f"{ORIGIN}\n05\n{ROOT_B64}\n", "tree size '05'"),
        (f"{ORIGIN}\n00\n{ROOT_B64}\n", "tree size '00'"),
        (f"{ORIGIN}\n+5\n{ROOT_B64}\n", "tree size"),
        (f"{ORIGIN}\n-1\n{ROOT_B64}\n", "tree size"),
        (f"{ORIGIN}\n 5\n{ROOT_B64}\n", "tree size"),
        (f"{ORIGIN}\n5 \n{ROOT_B64}\n", "tree size"),
        (f"{ORIGIN}\n1_000\n{ROOT_B64}\n", "tree size"),
        (f"{ORIGIN}\n\u0665\n{ROOT_B64}\n", "tree size"),  # ARABIC-INDIC DIGIT FIVE
        (f"{ORIGIN}\n0x10\n{ROOT_B64}\n", "tree size"),
        (f"{ORIGIN}\n{2**64}\n{ROOT_B64}\n", "tree size"),
        (f"{ORIGIN}\n{'9' * 5000}\n{ROOT_B64}\n", "tree size"),
        (f"{ORIGIN}\n\n{ROOT_B64}\n", "tree size ''"),
        (f"{ORIGIN}\n5\n{ROOT.hex()}\n", "48 bytes, want 32"),  # hex is base64 too
        (f"{ORIGIN}\n5\n{ROOT_B64.rstrip('=')}\n", "not base64"),
        (f"{ORIGIN}\n5\n{ROOT_B64[:-2]}B=\n", "not base64"),  # non-canonical final bits
        (f"{ORIGIN}\n5\n{base64.b64encode(ROOT[:31]).decode()}\n", "31 bytes, want 32"),
        (f"{ORIGIN}\n5\n{base64.b64encode(ROOT + b'!').decode()}\n", "33 bytes, want 32"),
        (f"{ORIGIN}\n5\n{URLSAFE_ROOT}\n", "not base64"),
        (f"{ORIGIN}\n5\n{ROOT_B64}\n\nextension\n", "empty extension line"),
    ],
)
def test_strict_checkpoint_syntax(body: str, message: str) -> None:
    note = _signed_body(body.encode())
    with pytest.raises(VerificationError, match=message):
        parse_and_verify(note, NAME, PUB)


def test_body_parse_accepts_largest_size() -> None:
    note = _signed_body(f"{ORIGIN}\n{2**64 - 1}\n{ROOT_B64}\n".encode())
    assert parse_and_verify(note, NAME, PUB).size == 2**64 - 1


# --- the signing side and vkeys ----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"origin": ""},
        {"origin": "two\nlines"},
        {"origin": "tab\there"},
        {"size": -1},
        {"size": 2**64},
        {"root": ROOT[:31]},
        {"root": ROOT + b"\x00"},
        {"extensions": ("",)},
        {"extensions": ("a\nb",)},
    ],
)
def test_checkpoint_rejects_impossible_fields(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"origin": ORIGIN, "size": 1, "root": ROOT, **kwargs}
    with pytest.raises(ValueError):
        Checkpoint(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "has space", "has+plus", "tab\tname", "nbsp\u00a0name"])
def test_invalid_key_names(name: str) -> None:
    with pytest.raises(ValueError, match="invalid key name"):
        sign_checkpoint(CP, name, KEY)
    with pytest.raises(ValueError, match="invalid key name"):
        vkey(name, PUB)


def test_sign_note_needs_a_final_newline() -> None:
    with pytest.raises(ValueError, match="newline"):
        sign_note(b"no newline", NAME, KEY)
    with pytest.raises(ValueError, match="control character"):
        sign_note(b"a\rb\n", NAME, KEY)


def test_vkey_round_trip() -> None:
    text = vkey(NAME, PUB)
    name, public_key = parse_vkey(text)
    assert name == NAME and vkey(name, public_key) == text
    assert parse_and_verify(sign_checkpoint(CP, NAME, KEY), name, public_key) == CP


def test_vkey_manglings_are_rejected() -> None:
    # The mangling checks of golang.org/x/mod/sumdb/note TestNewVerifier.
    b = PETER_VKEY.encode()
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if (i, j) != (0, len(b)):
                with pytest.raises(ValueError):
                    parse_vkey(b[i:j].decode())
    for i in range(len(b)):
        mutated = bytearray(b)
        mutated[i] += 1
        with pytest.raises(ValueError):
            parse_vkey(mutated.decode())
    with pytest.raises(ValueError, match="33 bytes"):  # wrong key length, adjusted key ID
        parse_vkey("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==")
    with pytest.raises(ValueError, match="unsupported"):  # unknown algorithm, adjusted key ID
        parse_vkey("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
