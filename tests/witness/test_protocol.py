"""The witness over a real socket, as c2sp.org/tlog-witness has it: the first checkpoint, a
growing log, 409 with the witnessed size, 422 for a bad proof or a fork, 400 for a rollback,
404 for a foreign log, 403 for a forged one, mutual TLS, and a restart that forgets nothing."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import ssl
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.audit.checkpoint import Checkpoint, parse_and_verify, sign_checkpoint
from hedui.audit.cosignature import (
    Cosigner,
    WitnessPolicy,
    add_cosignatures,
    verify_cosignature,
)
from hedui.audit.errors import WitnessRefused, WitnessUnavailable
from hedui.audit.witness_client import request_body, request_cosignature, ssl_context
from hedui.witness.core import Witness, origin_hash
from hedui.witness.errors import Conflict
from hedui.witness.server import WitnessServer
from tests.witness.conftest import WITNESS_NAME, Clock, Log, Pki, new_witness

Answer = tuple[int, str, bytes]


def post(port: int, context: ssl.SSLContext, body: bytes, path: str = "/add-checkpoint") -> Answer:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        conn.request("POST", path, body=body)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type", ""), r.read()
    finally:
        conn.close()


def get(port: int, context: ssl.SSLContext, path: str) -> Answer:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type", ""), r.read()
    finally:
        conn.close()


def submit(server: WitnessServer, pki: Pki, log: Log, old: int, proof: list[bytes] | None = None):
    proof = log.proof(old) if proof is None else proof
    return post(server.port, pki.client(pki.service), request_body(old, proof, log.note()))


def cosigner(witness: Witness) -> Cosigner:
    return Cosigner.from_vkey(witness.vkey)


def test_the_first_checkpoint_then_a_growing_log(
    server: WitnessServer, witness: Witness, pki: Pki, log: Log, clock: Clock
) -> None:
    log.grow(5)
    status, _, answer = submit(server, pki, log, 0)
    assert status == 200
    assert verify_cosignature(log.checkpoint().body(), answer, cosigner(witness)) == clock.t
    log.grow(3)
    clock.t += 10
    status, _, answer = submit(server, pki, log, 5)
    assert status == 200 and answer.count(b"\n") == 1
    assert verify_cosignature(log.checkpoint().body(), answer, cosigner(witness)) == clock.t
    assert witness.state(log.origin).size == 8
    # the same checkpoint again: cosigned afresh (a newer time), nothing else changes
    clock.t += 10
    status, _, again = submit(server, pki, log, 8)
    assert status == 200 and again != answer
    # the cosigned note verifies as the log's and as the witness's
    note = add_cosignatures(log.note(), answer)
    assert parse_and_verify(note, log.origin, log.key.public_key()).size == 8
    assert WitnessPolicy((cosigner(witness),)).check(note)


def test_a_stale_old_size_gets_409_with_the_witnessed_size(
    server: WitnessServer, pki: Pki, log: Log
) -> None:
    log.grow(4)
    assert submit(server, pki, log, 0)[0] == 200
    log.grow(4)
    assert submit(server, pki, log, 0) == (409, "text/x.tlog.size", b"4\n")
    assert submit(server, pki, log, 2) == (409, "text/x.tlog.size", b"4\n")
    assert submit(server, pki, log, 4)[0] == 200


def test_the_client_proves_again_from_the_size_the_witness_names(
    server: WitnessServer, witness: Witness, pki: Pki, log: Log
) -> None:
    log.grow(3)
    client = pki.client(pki.service)
    url = f"https://127.0.0.1:{server.port}"
    first = request_cosignature(url, client, 0, [], log.note(), witness=cosigner(witness))
    assert first.count(b"\n") == 1
    log.grow(6)
    asked: list[int] = []

    def prove(size: int) -> list[bytes]:
        asked.append(size)
        return log.proof(size)

    # the caller believed the witness was at 0: the witness says 3, the client proves from 3
    lines = request_cosignature(
        url, client, 0, [], log.note(), prove=prove, witness=cosigner(witness)
    )
    assert asked == [3] and witness.state(log.origin).size == 9
    assert verify_cosignature(log.checkpoint().body(), lines, cosigner(witness))
    # without a way to prove, the 409 is the caller's to handle
    log.grow(1)
    with pytest.raises(WitnessRefused) as info:
        request_cosignature(url, client, 3, log.proof(3), log.note())
    assert (info.value.status, info.value.size) == (409, 9)


def test_a_bad_proof_gets_422(server: WitnessServer, pki: Pki, log: Log, tmp_path: Path) -> None:
    log.grow(5)
    assert submit(server, pki, log, 0)[0] == 200
    log.grow(6)
    proof = log.proof(5)
    tampered = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
    assert submit(server, pki, log, 5, tampered)[0] == 422
    assert submit(server, pki, log, 5, proof[:-1])[0] == 422
    assert submit(server, pki, log, 5, [])[0] == 422
    assert submit(server, pki, log, 5, [*proof, proof[0]])[0] == 422
    assert submit(server, pki, log, 5, [p[:31] for p in proof])[0] == 422
    assert submit(server, pki, log, 5, proof)[0] == 200


def test_a_proof_from_size_0_gets_422(server: WitnessServer, pki: Pki, log: Log) -> None:
    log.grow(4)
    assert submit(server, pki, log, 0, [hashlib.sha256(b"x").digest()])[0] == 422
    assert submit(server, pki, log, 0)[0] == 200


def test_an_empty_tree_must_have_the_empty_root(server: WitnessServer, pki: Pki, log: Log) -> None:
    fake = sign_checkpoint(
        Checkpoint(log.origin, 0, hashlib.sha256(b"x").digest()), log.origin, log.key
    )
    assert post(server.port, pki.client(pki.service), request_body(0, [], fake))[0] == 422
    assert submit(server, pki, log, 0)[0] == 200  # the real empty tree


def test_a_fork_is_refused_and_kept_as_evidence(
    server: WitnessServer, witness: Witness, pki: Pki, log: Log, tmp_path: Path
) -> None:
    log.grow(6)
    assert submit(server, pki, log, 0)[0] == 200
    # the same log key signs another history of the same size: shown to someone else
    fork = Log(log.origin, log.key)
    fork.grow(5)
    fork.tree.append(b"a different sixth entry")
    assert submit(server, pki, fork, 6)[0] == 422
    # ... and of a larger size, with that history's own (valid) proof from 6
    fork.grow(4)
    assert submit(server, pki, fork, 6)[0] == 422
    assert witness.state(log.origin).root == log.tree.root()
    evidence = [json.loads(line) for line in (tmp_path / "evidence.jsonl").read_text().splitlines()]
    assert len(evidence) == 2 and evidence[0]["witnessed_size"] == 6
    assert evidence[0]["refused_note"] == fork.note(6).decode()
    # the true log goes on
    log.grow(2)
    assert submit(server, pki, log, 6)[0] == 200


def test_a_rollback_is_refused(server: WitnessServer, pki: Pki, log: Log) -> None:
    log.grow(10)
    assert submit(server, pki, log, 0)[0] == 200
    older = log.note(7)
    client = pki.client(pki.service)
    # from the witnessed size to a smaller tree: old size beyond the checkpoint
    assert post(server.port, client, request_body(10, [], older))[0] == 400
    # from its own smaller size: not the witnessed size
    assert post(server.port, client, request_body(7, [], older)) == (
        409,
        "text/x.tlog.size",
        b"10\n",
    )
    url = f"https://127.0.0.1:{server.port}"
    with pytest.raises(WitnessRefused, match="beyond this checkpoint's 7"):
        request_cosignature(url, client, 0, [], older, prove=log.proof)


def test_a_foreign_log_is_refused(server: WitnessServer, pki: Pki, log: Log) -> None:
    log.grow(2)
    client = pki.client(pki.service)
    stranger = Log("hedui.local/another-log")
    stranger.grow(2)
    assert submit(server, pki, stranger, 0)[0] == 404
    # the witnessed origin signed by another key: no trusted signature
    impostor = Log(log.origin)
    impostor.grow(2)
    status, _, said = submit(server, pki, impostor, 0)
    assert status == 403 and b"no signature by a key of the log" in said
    # a line by the log's key name and key ID whose signature is bad
    text, _, line = log.note().rpartition(b"\n\n")
    name, _, sig = line.rstrip(b"\n").rpartition(b" ")
    raw = bytearray(base64.b64decode(sig))
    raw[10] ^= 1
    forged = text + b"\n\n" + name + b" " + base64.b64encode(bytes(raw)) + b"\n"
    status, _, said = post(server.port, client, request_body(0, [], forged))
    assert status == 403 and b"invalid signature" in said
    assert submit(server, pki, log, 0)[0] == 200


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"old 01\n\n",
        b"old -1\n\n",
        b"new 0\n\n",
        b"old 0\nnot base64!\n\n",
        b"old 0\n",
        b"old 0\n\n",
        b"old 0\n\nhedui.local/witness-test-log\n1\n",
        b"old 0\n" + b"AAAA\n" * 64 + b"\n",
    ],
)
def test_a_malformed_request_gets_400(server: WitnessServer, pki: Pki, body: bytes) -> None:
    assert post(server.port, pki.client(pki.service), body)[0] == 400


def test_an_old_size_beyond_the_checkpoint_gets_400(
    server: WitnessServer, pki: Pki, log: Log
) -> None:
    log.grow(3)
    assert submit(server, pki, log, 4, [])[0] == 400


def test_only_enrolled_submitters_may_submit(
    server: WitnessServer, witness: Witness, pki: Pki, log: Log
) -> None:
    log.grow(3)
    body = request_body(0, [], log.note())
    status, _, said = post(server.port, pki.client(pki.auditor), body)
    assert status == 403 and b"role auditor may not submit" in said
    # a client without a certificate of the deployment does not get through the handshake
    anonymous = ssl.create_default_context(cadata=pki.ca.cert_pem.decode())
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        post(server.port, anonymous, body)
    assert witness.state(log.origin).size == 0
    assert post(server.port, pki.client(pki.service), body)[0] == 200


def test_anyone_enrolled_reads_the_latest_cosigned_checkpoint(
    server: WitnessServer, witness: Witness, pki: Pki, log: Log
) -> None:
    path = f"/{origin_hash(log.origin)}/checkpoint"
    auditor = pki.client(pki.auditor)
    assert get(server.port, auditor, path)[0] == 404
    log.grow(4)
    assert submit(server, pki, log, 0)[0] == 200
    status, _, note = get(server.port, auditor, path)
    assert status == 200
    assert parse_and_verify(note, log.origin, log.key.public_key()).size == 4
    assert WitnessPolicy((cosigner(witness),)).check(note)
    assert get(server.port, auditor, "/" + "0" * 64 + "/checkpoint")[0] == 404
    assert post(server.port, pki.client(pki.service), b"x", path="/elsewhere")[0] == 404


def test_a_body_over_16_kib_is_refused(server: WitnessServer, pki: Pki) -> None:
    assert post(server.port, pki.client(pki.service), b"old 0\n" + b"A" * 17000)[0] == 413


def test_the_state_survives_a_restart(
    tmp_path: Path, witness_key: Ed25519PrivateKey, pki: Pki, log: Log
) -> None:
    context = ssl_context(pki.server, server=True)
    first = WitnessServer(new_witness(tmp_path, witness_key, [log]), "127.0.0.1:0", context)
    log.grow(7)
    try:
        assert submit(first, pki, log, 0)[0] == 200
    finally:
        first.stop(1.0)
    again = new_witness(tmp_path, witness_key, [log])
    assert again.state(log.origin).size == 7
    second = WitnessServer(again, "127.0.0.1:0", context)
    try:
        log.grow(1)
        assert submit(second, pki, log, 0) == (409, "text/x.tlog.size", b"7\n")
        fork = Log(log.origin, log.key)
        fork.grow(6)
        fork.tree.append(b"a different seventh entry")
        assert submit(second, pki, fork, 7)[0] == 422  # another root at size 7: a fork
        assert submit(second, pki, log, 7)[0] == 200
    finally:
        second.stop(1.0)


def test_requests_from_one_size_race_and_one_wins(witness: Witness, log: Log) -> None:
    """The check of the old size and the update are one step: of many requests from the same
    witnessed size, only one is cosigned; the others get 409 (no rollback by a slow one)."""
    log.grow(2)
    witness.add_checkpoint(0, [], log.note())
    sizes = list(range(3, 19))
    log.grow(max(sizes) - 2)
    notes = {n: (log.note(n), log.proof(2, n)) for n in sizes}
    results: dict[int, str] = {}
    start = threading.Barrier(len(sizes))

    def attempt(n: int) -> None:
        note, proof = notes[n]
        start.wait()
        try:
            witness.add_checkpoint(2, proof, note)
            results[n] = "cosigned"
        except Conflict as e:
            results[n] = f"409 {e.size}"

    threads = [threading.Thread(target=attempt, args=(n,)) for n in sizes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for n, r in results.items() if r == "cosigned"]
    assert len(winners) == 1
    assert all(r == f"409 {winners[0]}" for n, r in results.items() if n != winners[0])
    assert witness.state(log.origin).size == winners[0]


def test_a_state_that_cannot_be_written_cosigns_nothing(
    server: WitnessServer, witness: Witness, pki: Pki, log: Log, tmp_path: Path
) -> None:
    log.grow(2)
    (tmp_path / "state.json.tmp").mkdir()  # the atomic write's temporary file cannot be made
    status, _, said = submit(server, pki, log, 0)
    assert status == 503 and b"nothing cosigned" in said
    assert witness.state(log.origin).size == 0
    (tmp_path / "state.json.tmp").rmdir()
    assert submit(server, pki, log, 0)[0] == 200


def test_go_reference_checkpoints_are_witnessed(tmp_path: Path, pki: Pki) -> None:
    """Checkpoints, log key and consistency proof made by the Go reference witness's tests
    (transparency-dev/witness witness/witness_test.go, Apache-2.0): a log of 5, then of 8."""
    m_vkey = "monkeys+db4d9f7e+AULaJMvTtDLHPUcUrjdDad9vDlh/PTfC2VV60JUtCfWT"
    m_init = (
        "monkeys\n5\n41smjBUiAU70EtKlT6lIOIYtRTYxYXsDB+XHfcvu/BE=\n\n— monkeys "
        "202fftzGl3LVoqjXfwCFZZXs8I+5G22+Ek2K0AOyBuSJ/8/CZawNF+6fNlTKOCd622pbzJNkkJFWuw9DbicZCkEx9AY=\n"
    ).encode()
    m_next = (
        "monkeys\n8\nV8K9aklZ4EPB+RMOk1/8VsJUdFZR77GDtZUQq84vSbo=\n\n— monkeys "
        "202ffoUEboiQYpHzICeaFmoy3RNviHTpAxYrq/eO4QQVQMvu9UebKBMX2MJC76NLthZaKsnKbCA8GxrjePZhvDCH7Ag=\n"
    ).encode()
    proof = [
        bytes.fromhex(h)
        for h in (
            "b9e1d62618f7fee8034e4c5010f727ab24d8e4705cb296c374bf2025a87a10d2",
            "aac66cd7a79ce4012d80762fe8eec3a77f22d1ca4145c3f4cee022e7efcd599d",
            "89d0f753f66a290c483b39cd5e9eafb12021293395fad3d4a2ad053cfbcfdc9e",
            "29e40bb79c966f4c6fe96aff6f30acfce5f3e8d84c02215175d6e018a5dee833",
        )
    ]

    class GoLog(Log):
        @property
        def vkey(self) -> str:
            return m_vkey

    witness = new_witness(tmp_path, Ed25519PrivateKey.generate(), [GoLog("monkeys")])
    server = WitnessServer(witness, "127.0.0.1:0", ssl_context(pki.server, server=True))
    client = pki.client(pki.service)
    try:
        assert post(server.port, client, request_body(0, [], m_init))[0] == 200
        assert post(server.port, client, request_body(5, proof[:-1], m_next))[0] == 422
        status, _, line = post(server.port, client, request_body(5, proof, m_next))
        assert status == 200
        assert verify_cosignature(m_next.split(b"\n\n")[0] + b"\n", line, cosigner(witness))
    finally:
        server.stop(1.0)


def test_the_client_checks_what_the_witness_answers(
    server: WitnessServer, pki: Pki, log: Log
) -> None:
    log.grow(2)
    client = pki.client(pki.service)
    url = f"https://127.0.0.1:{server.port}"
    someone_else = Cosigner(WITNESS_NAME, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(WitnessUnavailable, match="no cosignature by"):
        request_cosignature(url, client, 0, [], log.note(), witness=someone_else)
    with pytest.raises(WitnessUnavailable, match="cannot be reached"):
        request_cosignature("https://127.0.0.1:1", client, 0, [], log.note())
    with pytest.raises(ValueError, match="https"):
        request_cosignature(f"http://127.0.0.1:{server.port}", client, 0, [], log.note())
