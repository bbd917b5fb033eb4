"""`hedui audit …` on `hedui up`-style workdirs (issue #25, items 6 and 7): each deployment's log
has an origin of its own, so an auditor verifies a second deployment as a new log, not as a
replaced key; `prove --json` is a receipt a third party checks with the log's public key alone;
`consistency` prints the proof between two tree sizes."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.audit import merkle
from hedui.audit.checkpoint import parse_and_verify
from hedui.audit.log import DEFAULT_ORIGIN, AuditLog, key_name
from hedui.audit.store import LogStore, open_log_engine
from hedui.clients.deploy import Deployment, DeploySettings
from hedui.core import signing
from hedui.core.workdir import Workdir
from hedui.server.config import ServiceConfig
from hedui.server.fanout import Endpoint
from tests.audit.test_log import entry
from tests.clients.helpers import run

ORIGIN_SHAPE = re.compile(r"hedui\.local/[0-9a-f]{8}-log")


def deployment(root: Path, entries: int = 5, origin: str | None = None) -> tuple[Workdir, str]:
    """What `hedui up` leaves for an auditor, without its processes: the origin its Deployment
    chose, kept in the service's config; a log key of its own, its public half given to the
    auditor; a log of ``entries`` entries signed one append at a time."""
    w = Workdir(root)
    w.prepare()
    origin = origin or Deployment(DeploySettings(workdir=root), w).origin
    url = f"sqlite:///{root / 'audit.sqlite'}"
    w.prepare_party("service")
    w.service_config.write_text(
        ServiceConfig(
            keys_dir=root / "keys",
            registry=Endpoint("registry", "127.0.0.1:1"),
            connectors=(Endpoint("hrss", "127.0.0.1:2"),),
            audit_database=url,
            service_database=f"sqlite:///{root / 'service.sqlite'}",
            log_origin=origin,
        ).to_toml(),
        encoding="utf-8",
    )
    key = Ed25519PrivateKey.generate()
    pub = w.keys("auditor").root / "log" / "log.pub"
    pub.parent.mkdir(parents=True)
    pub.write_bytes(signing.public_key_to_pem(key.public_key()))
    log = AuditLog(LogStore(open_log_engine(url)), origin=origin, signing_key=key)
    for i in range(entries):
        log.append([entry(i)])
    log.store.engine.dispose()
    return w, origin


@pytest.fixture(autouse=True)
def _own_state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def test_a_second_deployment_is_a_new_log_not_tampering(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, first_origin = deployment(tmp_path / "one")
    second, second_origin = deployment(tmp_path / "two")
    assert ORIGIN_SHAPE.fullmatch(first_origin) and ORIGIN_SHAPE.fullmatch(second_origin)
    assert first_origin != second_origin
    for w in (first, second):  # the default state file, as an auditor runs it
        code, out, err = run(capsys, "audit", "verify", "--workdir", str(w.root), "--offline")
        assert code == 0, err
        assert "first verification" in out
    # a later start of the same workdir keeps the origin its config holds
    assert Deployment(DeploySettings(workdir=first.root), first).origin == first_origin
    code, out, err = run(capsys, "audit", "verify", "--workdir", str(first.root), "--offline")
    assert code == 0 and "consistent with the checkpoint at size 5" in out, err


def test_a_workdir_from_before_keeps_its_origin(tmp_path: Path) -> None:
    w, origin = deployment(tmp_path / "old", origin=DEFAULT_ORIGIN)
    assert Deployment(DeploySettings(workdir=w.root), w).origin == DEFAULT_ORIGIN == origin


def test_same_origin_another_key_is_tampering_and_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, origin = deployment(tmp_path / "one")
    second, _ = deployment(tmp_path / "two", origin=origin)  # the same origin, another key
    state = tmp_path / "auditor.json"
    code, _, err = run(
        capsys, "audit", "verify", "--workdir", str(first.root), "--offline", "--state", str(state)
    )
    assert code == 0, err
    code, _, err = run(
        capsys, "audit", "verify", "--workdir", str(second.root), "--offline", "--state", str(state)
    )
    assert code == 2 and "TAMPERING DETECTED" in err
    assert "--state FILE" in err and f"remove {state}" in err


def test_prove_json_is_a_receipt_checked_with_the_public_key_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w, _ = deployment(tmp_path / "one", entries=12)
    code, out, err = run(
        capsys, "audit", "prove", "7", "--workdir", str(w.root), "--offline", "--json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["entry"]["request_id"] == "r-7"  # the readable copy is still there
    # a third party: the JSON and log.pub, nothing else (no workdir, no hedui deployment)
    public_key = signing.load_public_key((w.keys("auditor").root / "log" / "log.pub").read_bytes())
    note = doc["checkpoint"].encode()
    origin = doc["checkpoint"].split("\n", 1)[0]
    cp = parse_and_verify(note, key_name(origin), public_key, origin=origin)
    data = base64.b64decode(doc["entry_base64"])
    assert merkle.leaf_hash(data).hex() == doc["leaf_hash"]
    proof = [bytes.fromhex(h) for h in doc["proof"]]
    merkle.verify_inclusion(merkle.leaf_hash(data), doc["index"], cp.size, proof, cp.root)
    assert (doc["index"], doc["tree_size"], doc["root"]) == (7, cp.size, cp.root.hex())


def test_consistency_prints_the_proof_and_both_signed_checkpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w, origin = deployment(tmp_path / "one", entries=12)
    where = ["--workdir", str(w.root), "--offline"]
    code, out, err = run(capsys, "audit", "consistency", "5", "12", *where, "--json")
    assert code == 0, err
    doc = json.loads(out)
    public_key = signing.load_public_key((w.keys("auditor").root / "log" / "log.pub").read_bytes())
    roots = []
    for side, size in (("first", 5), ("second", 12)):
        assert doc[side]["signed"] and doc[side]["size"] == size
        cp = parse_and_verify(
            doc[side]["checkpoint"].encode(), key_name(origin), public_key, origin=origin
        )
        assert cp.size == size and cp.root.hex() == doc[side]["root"]
        roots.append(cp.root)
    merkle.verify_consistency(5, 12, [bytes.fromhex(h) for h in doc["proof"]], *roots)
    code, out, err = run(capsys, "audit", "consistency", "5", *where)  # to the latest
    assert code == 0, err
    assert "size 12" in out and "verified" in out and out.count(f"\u2014 {origin} ") == 2
    code, out, err = run(capsys, "audit", "consistency", "9", "5", *where)
    assert code == 1 and "1 <= FIRST <= SECOND <= 12" in err
