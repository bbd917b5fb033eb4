import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import rbcl  # type: ignore[import-untyped]

from hedui.core import oprf
from hedui.core.errors import CryptoError
from hedui.core.oprf import Mode, OprfError, ServerKey

VECTOR_FILE = Path(__file__).resolve().parents[1] / "vectors" / "oprf" / "ristretto255-sha512.json"
ORDER = 2**252 + 27742317777372353535851937790883648493


def _load_suites() -> list[dict[str, Any]] | None:
    try:
        return list(json.loads(VECTOR_FILE.read_text()))
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Case:
    mode: Mode
    seed: bytes
    key_info: bytes
    sk: bytes
    pk: bytes | None
    inputs: list[bytes]
    blinds: list[bytes]
    blinded: list[bytes]
    evaluated: list[bytes]
    outputs: list[bytes]
    proof: bytes | None
    proof_scalar: bytes | None


def _hexes(field: str) -> list[bytes]:
    return [bytes.fromhex(x) for x in field.split(",")]


def _cases() -> list[Any]:
    suites = _load_suites()
    if suites is None:
        # a missing file must fail the run, not quietly select zero tests
        return [pytest.param(None, id="vector-file-missing")]
    params = []
    for suite in suites:
        if suite["identifier"] != "ristretto255-SHA512" or suite["mode"] not in (0, 1):
            continue
        mode = Mode(suite["mode"])
        for n, v in enumerate(suite["vectors"], start=1):
            proof = v.get("Proof")
            case = Case(
                mode=mode,
                seed=bytes.fromhex(suite["seed"]),
                key_info=bytes.fromhex(suite["keyInfo"]),
                sk=bytes.fromhex(suite["skSm"]),
                pk=bytes.fromhex(suite["pkSm"]) if "pkSm" in suite else None,
                inputs=_hexes(v["Input"]),
                blinds=_hexes(v["Blind"]),
                blinded=_hexes(v["BlindedElement"]),
                evaluated=_hexes(v["EvaluationElement"]),
                outputs=_hexes(v["Output"]),
                proof=bytes.fromhex(proof["proof"]) if proof else None,
                proof_scalar=bytes.fromhex(proof["r"]) if proof else None,
            )
            assert len(case.inputs) == v["Batch"]
            params.append(pytest.param(case, id=f"{mode.name}-{n}-batch{v['Batch']}"))
    return params


def _need(case: Case | None) -> Case:
    if case is None:
        pytest.fail(f"the RFC 9497 test vectors are missing: {VECTOR_FILE}")
    return case


def test_vector_file_has_both_modes() -> None:
    suites = _load_suites()
    assert suites is not None, f"missing {VECTOR_FILE}"
    counts = {
        s["mode"]: len(s["vectors"]) for s in suites if s["identifier"] == "ristretto255-SHA512"
    }
    assert counts == {0: 2, 1: 3}  # RFC 9497 A.1.1 and A.1.2


@pytest.mark.parametrize("case", _cases())
def test_derive_key_pair(case: Case | None) -> None:
    c = _need(case)
    sk, pk = oprf.derive_key_pair(c.seed, c.key_info, c.mode)
    assert sk == c.sk
    if c.pk is not None:
        assert pk == c.pk
    assert ServerKey.derive(c.seed, c.key_info, c.mode) == ServerKey(c.sk, c.mode)


@pytest.mark.parametrize("case", _cases())
def test_rfc9497_vector(case: Case | None) -> None:
    c = _need(case)
    key = ServerKey(c.sk, c.mode)

    blinded = []
    for data, b, expected in zip(c.inputs, c.blinds, c.blinded, strict=True):
        blind_scalar, element = oprf.blind(data, b, mode=c.mode)
        assert blind_scalar == b
        assert element == expected
        blinded.append(element)

    if c.mode is Mode.OPRF:
        evaluated = key.blind_evaluate(blinded)
        outputs = oprf.finalize_batch(c.inputs, c.blinds, evaluated)
    else:
        assert key.public_key == c.pk
        evaluated, proof = key.blind_evaluate_with_proof(blinded, proof_scalar=c.proof_scalar)
        assert proof == c.proof
        assert oprf.verify_proof(key.public_key, blinded, evaluated, proof)
        outputs = oprf.finalize_batch(
            c.inputs, c.blinds, evaluated, blinded_elements=blinded, public_key=c.pk, proof=proof
        )
    assert evaluated == c.evaluated
    assert outputs == c.outputs
    assert [key.evaluate(data) for data in c.inputs] == c.outputs
    assert [oprf.evaluate(c.sk, data, c.mode) for data in c.inputs] == c.outputs

    if len(c.inputs) == 1:
        extra = {}
        if c.mode is Mode.VOPRF:
            extra = {"blinded_element": blinded[0], "public_key": c.pk, "proof": c.proof}
        assert oprf.finalize(c.inputs[0], c.blinds[0], evaluated[0], **extra) == c.outputs[0]


def test_expand_message_xmd_rfc9380_vectors() -> None:
    # RFC 9380 Appendix K.3, expand_message_xmd(SHA-512), msg "abc"; 0x80 bytes takes two blocks
    dst = b"QUUX-V01-CS02-with-expander-SHA512-256"
    assert oprf.expand_message_xmd(b"abc", dst, 0x20) == bytes.fromhex(
        "0da749f12fbe5483eb066a5f595055679b976e93abe9be6f0f6318bce7aca8dc"
    )
    assert oprf.expand_message_xmd(b"abc", dst, 0x80) == bytes.fromhex(
        "7f1dddd13c08b543f2e2037b14cefb255b44c83cc397c1786d975653e36a6b11"
        "bdd7732d8b38adb4a0edc26a0cef4bb45217135456e58fbca1703cd6032cb134"
        "7ee720b87972d63fbf232587043ed2901bce7f22610c0419751c065922b48843"
        "1851041310ad659e4b23520e1772ab29dcdeb2002222a363f0c2b1c972b3efe1"
    )


def test_context_strings() -> None:
    assert oprf.context_string(Mode.OPRF) == b"OPRFV1-\x00-ristretto255-SHA512"
    assert oprf.context_string(Mode.VOPRF) == b"OPRFV1-\x01-ristretto255-SHA512"


@pytest.mark.parametrize("mode", list(Mode))
def test_blind_finalize_round_trip_equals_evaluate(mode: Mode) -> None:
    key = ServerKey.generate(mode)
    inputs = [b"", b"110105194912310021", bytes(range(256)) * 4]
    blinds, blinded = zip(*(oprf.blind(data, mode=mode) for data in inputs), strict=True)
    if mode is Mode.OPRF:
        evaluated = key.blind_evaluate(blinded)
        outputs = oprf.finalize_batch(inputs, blinds, evaluated)
    else:
        evaluated, proof = key.blind_evaluate_with_proof(blinded)
        outputs = oprf.finalize_batch(
            inputs,
            blinds,
            evaluated,
            blinded_elements=blinded,
            public_key=key.public_key,
            proof=proof,
        )
    assert outputs == [key.evaluate(data) for data in inputs]
    assert all(len(out) == oprf.OUTPUT_BYTES for out in outputs)
    assert len(set(outputs)) == len(inputs)
    # a fresh blind hides the input: the same input blinds to a different element
    assert oprf.blind(inputs[1], mode=mode)[1] != blinded[1]


def test_output_depends_on_key_and_mode() -> None:
    sk, _ = oprf.generate_key_pair()
    other, _ = oprf.generate_key_pair()
    outputs = {
        oprf.evaluate(sk, b"x", Mode.OPRF),
        oprf.evaluate(sk, b"x", Mode.VOPRF),
        oprf.evaluate(other, b"x", Mode.OPRF),
        oprf.evaluate(sk, b"y", Mode.OPRF),
    }
    assert len(outputs) == 4


def _le(n: int) -> bytes:
    return n.to_bytes(32, "little")


# RFC 9496 Appendix A.2: encodings a ristretto255 decoder must reject (the same list is in
# libsodium's test/default/core_ristretto255.c)
RFC9496_INVALID_ENCODINGS = {
    "non-canonical field encodings": [
        "00ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "f3ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ],
    "negative field elements": [
        "0100000000000000000000000000000000000000000000000000000000000000",
        "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "ed57ffd8c914fb201471d1c3d245ce3c746fcbe63a3679d51b6a516ebebe0e20",
        "c34c4e1826e5d403b78e246e88aa051c36ccf0aafebffe137d148a2bf9104562",
        "c940e5a4404157cfb1628b108db051a8d439e1a421394ec4ebccb9ec92a8ac78",
        "47cfc5497c53dc8e61c91d17fd626ffb1c49e2bca94eed052281b510b1117a24",
        "f1c6165d33367351b0da8f6e4511010c68174a03b6581212c71c0e1d026c3c72",
        "87260f7a2f12495118360f02c26a470f450dadf34a413d21042b43b9d93e1309",
    ],
    "non-square x^2": [
        "26948d35ca62e643e26a83177332e6b6afeb9d08e4268b650f1f5bbd8d81d371",
        "4eac077a713c57b4f4397629a4145982c661f48044dd3f96427d40b147d9742f",
        "de6a7b00deadc788eb6b6c8d20c0ae96c2f2019078fa604fee5b87d6e989ad7b",
        "bcab477be20861e01e4a0e295284146a510150d9817763caf1a6f4b422d67042",
        "2a292df7e32cababbd9de088d1d1abec9fc0440f637ed2fba145094dc14bea08",
        "f4a9e534fc0d216c44b218fa0c42d99635a0127ee2e53c712f70609649fdff22",
        "8268436f8c4126196cf64b3c7ddbda90746a378625f9813dd9b8457077256731",
        "2810e5cbc2cc4d4eece54f61c6f69758e289aa7ab440b3cbeaa21995c2f4232b",
    ],
    "negative xy value": [
        "3eb858e78f5a7254d8c9731174a94f76755fd3941c0ac93735c07ba14579630e",
        "a45fdc55c76448c049a1ab33f17023edfb2be3581e9c7aade8a6125215e04220",
        "d483fe813c6ba647ebbfd3ec41adca1c6130c2beeee9d9bf065c8d151c5f396e",
        "8a2e1d30050198c65a54483123960ccc38aef6848e1ec8f5f780e8523769ba32",
        "32888462f8b486c68ad7dd9610be5192bbeaf3b443951ac1a8118419d9fa097b",
        "227142501b9d4355ccba290404bde41575b037693cef1f438c47f8fbf35d1165",
        "5c37cc491da847cfeb9281d407efc41e15144c876e0170b499a96a22ed31e01e",
        "445425117cb8c90edcbc7c1cc0e74f747f2c1efa5630a967c64f287792a48a4b",
    ],
    "s = -1, y = 0": ["ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"],
}
_GENERATOR = rbcl.crypto_scalarmult_ristretto255_base(_le(1))
BAD_ELEMENTS = {
    f"{kind} {i}": bytes.fromhex(h)
    for kind, hexes in RFC9496_INVALID_ENCODINGS.items()
    for i, h in enumerate(hexes)
}
BAD_ELEMENTS |= {
    "identity": bytes(32),
    # libsodium 1.0.18 (in rbcl) ignores bit 255; these two pass its is_valid_point
    "identity with bit 255 set": bytes(31) + b"\x80",
    "generator with bit 255 set": _GENERATOR[:31] + bytes([_GENERATOR[31] | 0x80]),
    "short": bytes(31),
    "long": _GENERATOR + b"\x00",
}


def test_bit_255_is_checked_by_us_not_only_by_libsodium() -> None:
    # documents why _element checks bit 255 itself: rbcl's libsodium accepts it as the same
    # element. If this starts failing, libsodium got the RFC 9496 check and ours is redundant.
    flipped = BAD_ELEMENTS["generator with bit 255 set"]
    assert rbcl.crypto_core_ristretto255_is_valid_point(flipped)
    assert rbcl.crypto_core_ristretto255_add(flipped, bytes(32)) == _GENERATOR


@pytest.mark.parametrize("bad", BAD_ELEMENTS.values(), ids=BAD_ELEMENTS.keys())
def test_bad_blinded_element_is_refused(bad: bytes) -> None:
    key = ServerKey.generate()
    good = oprf.blind(b"input")[1]
    with pytest.raises(OprfError) as err:
        key.blind_evaluate([good, bad])
    assert isinstance(err.value, CryptoError)
    assert bad.hex() not in str(err.value) and repr(bad) not in str(err.value)
    with pytest.raises(OprfError):
        ServerKey.generate(Mode.VOPRF).blind_evaluate_with_proof([bad])


@pytest.mark.parametrize("bad", BAD_ELEMENTS.values(), ids=BAD_ELEMENTS.keys())
def test_bad_evaluated_element_or_public_key_is_refused(bad: bytes) -> None:
    blind, _ = oprf.blind(b"input")
    with pytest.raises(OprfError):
        oprf.finalize(b"input", blind, bad)
    key = ServerKey.generate(Mode.VOPRF)
    blind, blinded = oprf.blind(b"input", mode=Mode.VOPRF)
    evaluated, proof = key.blind_evaluate_with_proof([blinded])
    with pytest.raises(OprfError):
        oprf.finalize(
            b"input", blind, evaluated[0], blinded_element=blinded, public_key=bad, proof=proof
        )


def test_non_element_type_is_refused() -> None:
    key = ServerKey.generate()
    element = oprf.blind(b"input")[1]
    with pytest.raises(OprfError):
        key.blind_evaluate([bytearray(element)])  # type: ignore[list-item]
    with pytest.raises(OprfError):
        key.blind_evaluate([])


def test_error_text_never_contains_the_input() -> None:
    secret = b"110105194912310021" * 4000  # too long
    with pytest.raises(OprfError) as err:
        oprf.blind(secret)
    assert "110105" not in str(err.value)
    with pytest.raises(OprfError) as err:
        oprf.evaluate(bytes(32), b"110105194912310021")
    assert "110105" not in str(err.value)


BAD_SCALARS = {
    "zero": bytes(32),
    "the order": _le(ORDER),
    "the order + 1": _le(ORDER + 1),
    "all ones": b"\xff" * 32,
    "short": bytes(31),
}


@pytest.mark.parametrize("scalar", BAD_SCALARS.values(), ids=BAD_SCALARS.keys())
def test_bad_scalars_are_refused(scalar: bytes) -> None:
    with pytest.raises(OprfError):
        oprf.blind(b"input", scalar)
    with pytest.raises(OprfError):
        ServerKey(scalar)
    with pytest.raises(OprfError):
        oprf.evaluate(scalar, b"input")
    element = oprf.blind(b"input")[1]
    with pytest.raises(OprfError):
        oprf.finalize(b"input", scalar, element)


def test_largest_scalar_is_accepted() -> None:
    key = ServerKey(_le(ORDER - 1))
    blind, blinded = oprf.blind(b"input", _le(ORDER - 1))
    assert oprf.finalize(b"input", blind, key.blind_evaluate([blinded])[0]) == key.evaluate(
        b"input"
    )


def _voprf_batch(
    n: int,
) -> tuple[ServerKey, list[bytes], list[bytes], list[bytes], list[bytes], bytes]:
    key = ServerKey.generate(Mode.VOPRF)
    inputs = [f"input {i}".encode() for i in range(n)]
    blinds, blinded = map(list, zip(*(oprf.blind(x, mode=Mode.VOPRF) for x in inputs), strict=True))
    evaluated, proof = key.blind_evaluate_with_proof(blinded)
    return key, inputs, blinds, blinded, evaluated, proof


def test_voprf_proof_fails_when_an_evaluated_element_is_altered() -> None:
    key, inputs, blinds, blinded, evaluated, proof = _voprf_batch(3)
    assert oprf.verify_proof(key.public_key, blinded, evaluated, proof)
    # a valid element, but not skS times the blinded one
    altered = list(evaluated)
    altered[1] = rbcl.crypto_core_ristretto255_add(evaluated[1], evaluated[0])
    assert not oprf.verify_proof(key.public_key, blinded, altered, proof)
    with pytest.raises(OprfError, match="proof does not verify"):
        oprf.finalize_batch(
            inputs,
            blinds,
            altered,
            blinded_elements=blinded,
            public_key=key.public_key,
            proof=proof,
        )
    # another key's evaluation of the same element, the same elements in another order
    other = ServerKey.generate(Mode.VOPRF)
    swapped = [evaluated[0], evaluated[2], evaluated[1]]
    for pk, elements in [(other.public_key, evaluated), (key.public_key, swapped)]:
        assert not oprf.verify_proof(pk, blinded, elements, proof)
    single = other.blind_evaluate_with_proof([blinded[0]])[0][0]
    with pytest.raises(OprfError, match="proof does not verify"):
        oprf.finalize(
            inputs[0],
            blinds[0],
            single,
            blinded_element=blinded[0],
            public_key=key.public_key,
            proof=key.blind_evaluate_with_proof([blinded[0]])[1],
        )


def test_voprf_proof_fails_when_the_proof_is_altered() -> None:
    key, _, _, blinded, evaluated, proof = _voprf_batch(2)
    for i in (0, 40):  # in c, in s
        tampered = bytearray(proof)
        tampered[i] ^= 0x01
        assert not oprf.verify_proof(key.public_key, blinded, evaluated, bytes(tampered))
    with pytest.raises(OprfError):
        oprf.verify_proof(key.public_key, blinded, evaluated, proof[:-1])
    with pytest.raises(OprfError):  # s not below the group order
        oprf.verify_proof(key.public_key, blinded, evaluated, proof[:32] + b"\xff" * 32)
    assert not oprf.verify_proof(key.public_key, blinded, evaluated, bytes(64))


def test_proofs_are_randomised_and_each_verifies() -> None:
    key, _, _, blinded, _, _ = _voprf_batch(1)
    (e1, p1), (e2, p2) = (key.blind_evaluate_with_proof(blinded) for _ in range(2))
    assert e1 == e2 and p1 != p2
    assert oprf.verify_proof(key.public_key, blinded, e1, p1)
    assert oprf.verify_proof(key.public_key, blinded, e2, p2)


def test_voprf_finalize_needs_all_three_extras() -> None:
    _, inputs, blinds, _, evaluated, proof = _voprf_batch(1)
    with pytest.raises(OprfError):
        oprf.finalize(inputs[0], blinds[0], evaluated[0], proof=proof)
    with pytest.raises(OprfError):
        oprf.finalize_batch(inputs, blinds, evaluated[:0])


def test_mode_is_enforced_on_the_server() -> None:
    blinded = oprf.blind(b"input")[1]
    with pytest.raises(OprfError):
        ServerKey.generate(Mode.VOPRF).blind_evaluate([blinded])
    with pytest.raises(OprfError):
        ServerKey.generate(Mode.OPRF).blind_evaluate_with_proof([blinded])


def test_randomness_is_injectable() -> None:
    def fixed(n: int) -> bytes:
        return bytes([7]) * n

    assert oprf.blind(b"x", rng=fixed) == oprf.blind(b"x", rng=fixed)
    assert ServerKey.generate(rng=fixed) == ServerKey.generate(rng=fixed)
    with pytest.raises(OprfError):
        oprf.blind(b"x", rng=lambda n: bytes(n - 1))
    with pytest.raises(OprfError):
        oprf.blind(b"x", rng=lambda n: bytes(n))  # only zero


def test_input_length_limit() -> None:
    longest = bytes(oprf.MAX_INPUT_BYTES)
    blind, blinded = oprf.blind(longest)
    key = ServerKey.generate()
    assert oprf.finalize(longest, blind, key.blind_evaluate([blinded])[0]) == key.evaluate(longest)
    with pytest.raises(OprfError):
        oprf.blind(longest + b"\x00")
    with pytest.raises(OprfError):
        oprf.derive_key_pair(bytes(32), longest + b"\x00")
    with pytest.raises(OprfError):
        oprf.derive_key_pair(bytes(31), b"")


def test_server_key_hides_the_private_key() -> None:
    key = ServerKey.generate()
    assert key.private_key.hex() not in repr(key)
    assert key.public_key == oprf.public_key_for(key.private_key)
    assert ServerKey(key.private_key) == key
    assert ServerKey(key.private_key, Mode.VOPRF) != key
