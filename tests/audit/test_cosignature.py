"""Witness cosignatures (c2sp.org/tlog-cosignature, Ed25519 cosignature/v1) and the policy
that requires them: the signed bytes, round trips, tampering, key separation from the log's
signatures, known answers from the specification and from transparency-dev, quorums."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.audit.checkpoint import (
    EM_DASH,
    Checkpoint,
    open_note,
    sign_checkpoint,
)
from hedui.audit.cosignature import (
    Cosigner,
    WitnessPolicy,
    add_cosignatures,
    cosign,
    cosignatures,
    cosigner_key_id,
    cosigner_vkey,
    parse_and_verify_witnessed,
    signature_line,
    signed_message,
    split_note,
    verify_cosignature,
)
from hedui.audit.errors import Unwitnessed, VerificationError

ORIGIN = "example.gov.cn/hedui/audit"
LOG_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
W1_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
W2_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(64, 96)))
W1 = Cosigner("witness.example.gov.cn/w1", W1_KEY.public_key())
W2 = Cosigner("witness.example.gov.cn/w2", W2_KEY.public_key())
CP = Checkpoint(ORIGIN, 20852163, hashlib.sha256(b"a root").digest())
BODY = CP.body()
NOTE = sign_checkpoint(CP, ORIGIN, LOG_KEY)
T = 1679315147  # the time of the specification's example


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def test_the_signed_message_is_the_specifications() -> None:
    # c2sp.org/tlog-cosignature, "Ed25519 signed message": header, time line, the whole body
    assert signed_message(BODY, T) == (
        b"cosignature/v1\ntime 1679315147\n"
        b"example.gov.cn/hedui/audit\n20852163\n" + base64.b64encode(CP.root) + b"\n"
    )


def test_a_cosignature_line_is_built_as_the_specification_says() -> None:
    """Built here by hand from the specification's text, byte for byte (Ed25519 is
    deterministic): key ID SHA-256(name || 0x0A || 0x04 || key)[:4], then the timestamp as a
    big-endian u64, then the signature."""
    name = W1.name
    key_id = hashlib.sha256(name.encode() + b"\n" + b"\x04" + _raw(W1_KEY)).digest()[:4]
    message = b"cosignature/v1\ntime %d\n" % T + BODY
    blob = key_id + T.to_bytes(8, "big") + W1_KEY.sign(message)
    want = f"{EM_DASH} {name} {base64.b64encode(blob).decode()}\n".encode()
    assert cosign(BODY, name, W1_KEY, T) == want
    assert cosigner_key_id(name, W1_KEY.public_key()) == key_id
    assert verify_cosignature(BODY, want, W1) == T


def test_extension_lines_are_cosigned() -> None:
    body = Checkpoint(ORIGIN, CP.size, CP.root, ("extension",)).body()
    line = cosign(body, W1.name, W1_KEY, T)
    assert verify_cosignature(body, line, W1) == T
    with pytest.raises(VerificationError):
        verify_cosignature(BODY, line, W1)  # the same checkpoint without its extension line


@pytest.mark.parametrize(
    "body",
    [
        Checkpoint(ORIGIN, CP.size + 1, CP.root).body(),
        Checkpoint(ORIGIN, CP.size, hashlib.sha256(b"another").digest()).body(),
        Checkpoint(ORIGIN + "x", CP.size, CP.root).body(),
    ],
    ids=["size", "root", "origin"],
)
def test_a_cosignature_covers_every_line_of_the_checkpoint(body: bytes) -> None:
    with pytest.raises(VerificationError, match="invalid cosignature"):
        verify_cosignature(body, cosign(BODY, W1.name, W1_KEY, T), W1)


def test_the_timestamp_is_signed() -> None:
    name, id_, blob = signature_line(cosign(BODY, W1.name, W1_KEY, T).decode())
    moved = id_ + (T + 1).to_bytes(8, "big") + blob[8:]
    line = f"{EM_DASH} {name} {base64.b64encode(moved).decode()}"
    with pytest.raises(VerificationError, match="invalid cosignature"):
        verify_cosignature(BODY, line, W1)


def test_a_cosignature_is_checked_against_its_witness_only() -> None:
    line = cosign(BODY, W1.name, W1_KEY, T)
    with pytest.raises(VerificationError, match="not the witness"):
        verify_cosignature(BODY, line, W2)
    impostor = Cosigner(W1.name, W2_KEY.public_key())  # W1's name, another key: another key ID
    with pytest.raises(VerificationError, match="not the witness"):
        verify_cosignature(BODY, line, impostor)


def test_a_short_or_long_signature_is_refused() -> None:
    for size in (8 + 63, 8 + 65):
        blob = W1.key_id + bytes(size)
        line = f"{EM_DASH} {W1.name} {base64.b64encode(blob).decode()}"
        with pytest.raises(VerificationError, match="bytes, want 72"):
            verify_cosignature(BODY, line, W1)


def test_the_log_key_and_the_witness_key_never_stand_in_for_each_other() -> None:
    """Signature types 0x01 and 0x04 give one Ed25519 key two key IDs, and the signed bytes
    differ: a cosignature is no log signature, a log signature no cosignature."""
    same = Cosigner(ORIGIN, LOG_KEY.public_key())  # the log's own key as a "witness"
    cosigned = add_cosignatures(NOTE, cosign(BODY, ORIGIN, LOG_KEY, T))
    # the log's line does not count as a cosignature of the same name and key
    assert [c.timestamp for c in cosignatures(NOTE, [same])] == []
    assert [c.timestamp for c in cosignatures(cosigned, [same])] == [T]
    only_cosigned = BODY + b"\n" + cosign(BODY, ORIGIN, LOG_KEY, T)
    with pytest.raises(VerificationError, match="no signature by key"):
        open_note(only_cosigned, ORIGIN, LOG_KEY.public_key())


def test_cosign_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="not a checkpoint"):
        cosign(b"just one line\n", W1.name, W1_KEY, T)
    with pytest.raises(ValueError, match="invalid key name"):
        cosign(BODY, "a name", W1_KEY, T)
    for t in (-1, 2**63):
        with pytest.raises(ValueError, match="out of range"):
            cosign(BODY, W1.name, W1_KEY, t)
    assert verify_cosignature(BODY, cosign(BODY, W1.name, W1_KEY, 2**63 - 1), W1) == 2**63 - 1


# --- verifier keys -----------------------------------------------------------------------------


def test_a_cosigner_vkey_round_trips_with_type_0x04() -> None:
    text = cosigner_vkey(W1.name, W1_KEY.public_key())
    name, id_hex, material = text.split("+")
    assert name == W1.name and bytes.fromhex(id_hex) == W1.key_id
    assert base64.b64decode(material) == b"\x04" + _raw(W1_KEY)
    assert Cosigner.from_vkey(text) == W1 and W1.vkey == text


def test_a_published_witness_vkey_parses() -> None:
    # an Ed25519 cosignature/v1 vkey (type 0x04) from transparency-dev/formats
    # note/note_cosigv1_test.go (Apache-2.0): its key ID must come out of the 0x04 rule
    c = Cosigner.from_vkey("remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2")
    assert c.name == "remora.n621.de" and c.key_id.hex() == "da77ade7"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        # a type 0x01 (log) vkey from the same Go tests: refused, not quietly converted
        ("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6", "type 0x01"),
        ("remora.n621.de+da77ade8+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2", "does not match"),
        ("remora.n621.de+da77ade7", "want <name>"),
        ("remora.n621.de+da77ade7+BOvN63jn", "33 bytes"),
        ("a b+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2", "invalid key name"),
    ],
)
def test_a_bad_vkey_is_refused(text: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        Cosigner.from_vkey(text)


@pytest.mark.parametrize(
    ("encoded", "timestamp"),
    [
        # the specification's example cosignature, made at its example time
        (
            "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZ"
            "qhf5nNo0xUe+mbIUBkBIfZ+qnA==",
            1679315147,
        ),
        # transparency-dev/formats TestCoSigV1Timestamp
        (
            "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWW"
            "OworDcFiEBYJXORmnFBOBA==",
            1727964367,
        ),
    ],
)
def test_published_cosignatures_carry_their_time_where_we_read_it(
    encoded: str, timestamp: int
) -> None:
    _, _, blob = signature_line(f"{EM_DASH} witness.example.com/w1 {encoded}")
    assert len(blob) == 72 and int.from_bytes(blob[:8], "big") == timestamp


# --- notes and policies ------------------------------------------------------------------------


def test_cosignatures_are_appended_once_and_the_log_signature_still_verifies() -> None:
    lines = cosign(BODY, W1.name, W1_KEY, T) + cosign(BODY, W2.name, W2_KEY, T + 1)
    cosigned = add_cosignatures(NOTE, lines)
    assert add_cosignatures(cosigned, lines) == cosigned
    assert open_note(cosigned, ORIGIN, LOG_KEY.public_key()) == BODY
    text, found = split_note(cosigned)
    assert text == BODY and len(found) == 3
    assert {(c.name, c.timestamp) for c in cosignatures(cosigned, [W1, W2])} == {
        (W1.name, T),
        (W2.name, T + 1),
    }


def test_malformed_lines_are_not_appended() -> None:
    for bad in (b"", b"\n", b"- witness abc=\n", f"{EM_DASH} w1 notbase64!\n".encode()):
        with pytest.raises(VerificationError):
            add_cosignatures(NOTE, bad)


def test_a_policy_needs_its_quorum() -> None:
    one = add_cosignatures(NOTE, cosign(BODY, W1.name, W1_KEY, T))
    both = add_cosignatures(one, cosign(BODY, W2.name, W2_KEY, T))
    policy = WitnessPolicy((W1, W2), quorum=1)
    assert [c.name for c in policy.check(one)] == [W1.name]
    with pytest.raises(Unwitnessed, match="0 of the trusted witnesses"):
        policy.check(NOTE)
    strict = WitnessPolicy((W1, W2), quorum=2)
    with pytest.raises(Unwitnessed, match="1 of the trusted witnesses"):
        strict.check(one)
    assert {c.name for c in strict.check(both)} == {W1.name, W2.name}


def test_one_witness_counts_once() -> None:
    twice = add_cosignatures(
        NOTE, cosign(BODY, W1.name, W1_KEY, T) + cosign(BODY, W1.name, W1_KEY, T + 5)
    )
    with pytest.raises(Unwitnessed):
        WitnessPolicy((W1, W2), quorum=2).check(twice)
    (latest,) = WitnessPolicy((W1,)).check(twice)
    assert latest.timestamp == T + 5


def test_unknown_witnesses_are_ignored_but_a_bad_known_one_rejects_the_note() -> None:
    stranger = Ed25519PrivateKey.generate()
    noted = add_cosignatures(NOTE, cosign(BODY, "stranger.example", stranger, T))
    with pytest.raises(Unwitnessed):
        WitnessPolicy((W1,)).check(noted)
    # a line by W1's name and key ID whose signature is over another checkpoint
    other = Checkpoint(ORIGIN, CP.size + 1, CP.root).body()
    forged = add_cosignatures(NOTE, cosign(other, W1.name, W1_KEY, T))
    with pytest.raises(VerificationError, match="invalid cosignature") as info:
        WitnessPolicy((W1,)).check(forged)
    assert not isinstance(info.value, Unwitnessed)


def test_a_cosignature_from_the_future_is_refused_given_the_time() -> None:
    noted = add_cosignatures(NOTE, cosign(BODY, W1.name, W1_KEY, T + 3600))
    policy = WitnessPolicy((W1,))
    assert policy.check(noted)  # without a clock: no opinion on the time
    assert policy.check(noted, now=T + 3600 - policy.clock_skew)
    with pytest.raises(VerificationError, match="in the future"):
        policy.check(noted, now=T)


def test_a_policy_is_well_formed() -> None:
    with pytest.raises(ValueError, match="at least one witness"):
        WitnessPolicy(())
    with pytest.raises(ValueError, match="named twice"):
        WitnessPolicy((W1, W1))
    with pytest.raises(ValueError, match="share one public key"):
        WitnessPolicy((W1, Cosigner("another.name", W1_KEY.public_key())))
    for quorum in (0, 3):
        with pytest.raises(ValueError, match="quorum"):
            WitnessPolicy((W1, W2), quorum=quorum)
    policy = WitnessPolicy.from_vkeys([W1.vkey, W2.vkey], quorum=2)
    assert policy.witnesses == (W1, W2) and policy.quorum == 2


def test_a_witnessed_checkpoint_needs_the_log_and_the_witnesses() -> None:
    policy = WitnessPolicy((W1,))
    cosigned = add_cosignatures(NOTE, cosign(BODY, W1.name, W1_KEY, T))
    cp, (c,) = parse_and_verify_witnessed(
        cosigned, ORIGIN, LOG_KEY.public_key(), policy, origin=ORIGIN
    )
    assert cp == CP and c.timestamp == T
    with pytest.raises(Unwitnessed):
        parse_and_verify_witnessed(NOTE, ORIGIN, LOG_KEY.public_key(), policy)
    # the witness's word without the log's: refused
    witnessed_only = BODY + b"\n" + cosign(BODY, W1.name, W1_KEY, T)
    with pytest.raises(VerificationError, match="no signature by key"):
        parse_and_verify_witnessed(witnessed_only, ORIGIN, LOG_KEY.public_key(), policy)
