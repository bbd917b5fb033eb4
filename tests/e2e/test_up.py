"""End to end through `hedui up` + the intake client, against the rules read independently."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from hedui.clients.consent import signed_consent
from hedui.clients.intake import IntakeClient, IntakeProfile, verdict_to_dict
from hedui.core.rpc import error_details
from hedui.proto.v1 import verification_pb2
from tests.e2e import oracle
from tests.e2e.conftest import TODAY, Up, grpc_code, verify_dibao

USED_IDS: set[str] = set()


def _verify(up: Up, id_number: str, request_id: str, **kw: str) -> dict:
    USED_IDS.add(id_number)
    return verify_dibao(
        up.workdir.intake_profile, id_number, request_id, up.consent(id_number), **kw
    )


def test_verdicts_agree_with_the_rules(up: Up) -> None:
    households, person = oracle.load(up.data)
    heads = dict(up.summary.applicants)
    cases = [(label, heads[h], h) for label, h in up.summary.thresholds]
    cases += [("random", heads[h], h) for h in list(heads)[:3]]
    seen_decisions = set()
    for i, (label, id_number, household) in enumerate(cases):
        got = _verify(up, id_number, f"agree-{i}")
        want = oracle.expected(households[household], person, TODAY.isoformat())
        assert got["decision"] == want["decision"], label
        assert got["benefit_fen"] == want["benefit_fen"], label
        assert got["household_size"] == want["household_size"], label
        assert {r["id"]: r["passed"] for r in got["rules"]} == want["rules"], label
        assert got["connectors_answered"] == 86 and got["failures"] == []
        # the deployment's own origin (issue #25 item 6), never a shared demo one
        assert re.match(r"hedui\.local/[0-9a-f]{8}-log\n", got["audit"]["checkpoint"])
        seen_decisions.add(got["decision"])
    assert seen_decisions == {"ELIGIBLE", "INELIGIBLE", "NEEDS_REVIEW"}


def test_every_programme_over_grpc(up: Up) -> None:
    id_number = up.summary.applicants[5][1]
    seen = {}
    for program in ("dibao", "dibian", "zhichu", "tekun"):
        client = IntakeClient(IntakeProfile.load(up.workdir.intake_profile))
        try:
            v = verdict_to_dict(
                client.verify(
                    verification_pb2.VerifyRequest(
                        request_id=f"prog-{program}",
                        id_number=id_number,
                        program=program,
                        consent=up.consent(id_number),
                    )
                )
            )
        finally:
            client.close()
        USED_IDS.add(id_number)
        assert v["program"] == program and v["decision"] in {
            "ELIGIBLE",
            "INELIGIBLE",
            "NEEDS_REVIEW",
        }
        assert all(r["references"] and r["message_zh"] for r in v["rules"])
        seen[program] = v
    # the demo region discloses outcomes only for tekun: no household figure reaches the intake
    assert all(r["value"] is None for r in seen["tekun"]["rules"])
    assert all(
        r["threshold"] is not None for r in seen["dibao"]["rules"] if r["passed"] is not None
    )
    assert seen["dibian"]["benefit_fen"] == 0 and seen["zhichu"]["benefit_fen"] == 0


def test_cli_verify_json_and_text(up: Up) -> None:
    id_number = up.summary.applicants[0][1]
    USED_IDS.add(id_number)
    r = up.cli(
        "verify",
        "--workdir",
        str(up.workdir.root),
        "--id",
        id_number.lower(),
        "--program",
        "dibao",
        *up.consent_args(id_number),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    for key in (
        "decision",
        "benefit_fen",
        "household_size",
        "policy_version",
        "request_id",
        "rules",
        "audit",
    ):
        assert key in d
    assert all({"id", "passed", "value", "threshold"} <= set(rule) for rule in d["rules"])
    r = up.cli(
        "verify",
        "--workdir",
        str(up.workdir.root),
        "--id",
        id_number,
        "--program",
        "dibao",
        *up.consent_args(id_number),
    )
    assert r.returncode == 0 and "decision" in r.stdout and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--id", "11010519491231002Y"], "--id: "),  # the option, not the proto field
        (["--id", "110105194902300021"], "birth date"),
        (["--id", "110105194912310022"], "check character"),
        (["--program", "nope"], "unknown programme"),
        (["--as-of", "2023-06-30"], "too early"),
        (["--as-of", "2023-13-01"], "not a date"),
        (["--as-of", "2025-W01-1"], "not a date"),
        (["--signed-on", "2025-02-30"], "not a date"),
        (["--consent-form", "/nonexistent/form.pdf"], "cannot read the consent form"),
        (["--signer", "110105194912310022"], "the 1st --signer: check_character"),
        (["--case-number", "110105 19491231002X"], "looks like a resident ID"),
    ],
)
def test_cli_errors_are_clear(up: Up, args: list[str], message: str) -> None:
    form = up.data / "forms" / "unread.pdf"
    form.parent.mkdir(exist_ok=True)
    form.write_bytes(b"scanned")
    base = {
        "--id": "11010519491231002X",
        "--program": "dibao",
        "--case-number": "case-cli",
        "--consent-form": str(form),
        "--signed-on": TODAY.isoformat(),
        "--signer": "11010519491231002X",
    }
    for k, v in zip(args[::2], args[1::2], strict=True):
        base[k] = v
    r = up.cli("verify", "--workdir", str(up.workdir.root), *[x for kv in base.items() for x in kv])
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def _call(up: Up, consent: verification_pb2.Consent | None = None, **fields: str) -> grpc.RpcError:
    req = {
        "request_id": "bad-1",
        "id_number": "11010519491231002X",
        "program": "dibao",
    }
    req.update(fields)
    if consent is None:
        consent = signed_consent(
            "case-bad", TODAY, hashlib.sha256(b"form").digest(), [req["id_number"]]
        )
    with pytest.raises(grpc.RpcError) as info:
        up.stub().Verify(verification_pb2.VerifyRequest(consent=consent, **req), timeout=30)
    return info.value


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"id_number": "11010519491231002Y"}, "id_number"),
        ({"id_number": "110105194912310021"}, "id_number"),  # bad check character
        ({"id_number": "110105194902300027"}, "id_number"),  # 30 February
        ({"id_number": ""}, "id_number"),
        ({"id_number": "1" * 1_000_000}, "id_number"),
        ({"program": "unknown"}, "program"),
        ({"request_id": ""}, "request_id"),
        ({"as_of": "yesterday"}, "as_of"),
    ],
)
def test_bad_requests_are_invalid_argument_with_bad_request(
    up: Up, fields: dict, field: str
) -> None:
    e = _call(up, **fields)
    assert grpc_code(e) == grpc.StatusCode.INVALID_ARGUMENT
    details = [d for d in error_details(e) if isinstance(d, error_details_pb2.BadRequest)]
    assert details and details[0].field_violations[0].field == field
    assert details[0].field_violations[0].description


def test_unknown_person_is_not_found(up: Up) -> None:
    e = _call(up, id_number="11010519491231002X", request_id="nf-1")
    assert grpc_code(e) == grpc.StatusCode.NOT_FOUND
    assert "household register" in (e.details() or "")  # type: ignore[attr-defined]


def test_date_before_first_standard_is_failed_precondition(up: Up) -> None:
    e = _call(up, id_number=up.summary.applicants[1][1], as_of="2023-06-30", request_id="pre-1")
    assert grpc_code(e) == grpc.StatusCode.FAILED_PRECONDITION
    assert any(isinstance(d, error_details_pb2.PreconditionFailure) for d in error_details(e))


def test_request_id_is_idempotent(up: Up) -> None:
    a, b = up.summary.applicants[2][1], up.summary.applicants[3][1]
    first = _verify(up, a, "idem-1")
    again = _verify(up, a, "idem-1")
    assert again == first
    e = _call(up, id_number=b, request_id="idem-1")
    assert grpc_code(e) == grpc.StatusCode.ALREADY_EXISTS


def test_only_intake_certificates_may_verify(up: Up) -> None:
    with pytest.raises(grpc.RpcError) as info:
        up.stub("bank-01").Verify(verification_pb2.VerifyRequest(request_id="x"), timeout=30)
    assert grpc_code(info.value) == grpc.StatusCode.PERMISSION_DENIED


def test_plaintext_client_is_refused(up: Up) -> None:
    channel = grpc.insecure_channel(up.address)
    from hedui.proto.v1 import verification_pb2_grpc

    with pytest.raises(grpc.RpcError) as info:
        verification_pb2_grpc.VerificationServiceStub(channel).Verify(
            verification_pb2.VerifyRequest(request_id="x"), timeout=5
        )
    assert grpc_code(info.value) == grpc.StatusCode.UNAVAILABLE


def test_recheck_is_resumable_and_checks_each_household_once(up: Up) -> None:
    from hedui.audit.store import LogStore, open_log_engine
    from hedui.proto.v1 import audit_pb2

    households, person = oracle.load(up.data)
    picks = up.summary.applicants[10:22]
    roster = up.workdir.root.parent / "roster.txt"
    roster.write_text("\n".join([i for _, i in picks] + ["11010519491231002X", "not-an-id"]) + "\n")
    out = up.workdir.root.parent / "roster.jsonl"
    r = up.cli(
        "recheck",
        "--workdir",
        str(up.workdir.root),
        "--ids",
        str(roster),
        "--out",
        str(out),
        "--quiet",
        *up.authorisation_args(),
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 14
    by_line = {row["line"]: row for row in rows}
    for n, (household, _) in enumerate(picks, start=1):
        want = oracle.expected(households[household], person, TODAY.isoformat())
        assert (
            by_line[n]["decision"] == want["decision"]
            and by_line[n]["benefit_fen"] == want["benefit_fen"]
        )
    assert (
        by_line[13]["error"]["code"] == "NOT_FOUND"
        and by_line[14]["error"]["code"] == "INVALID_ARGUMENT"
    )
    for _, i in picks:
        assert i not in out.read_text()
    # a crash after 5 lines, the sixth half written: run again, the rest is done, nothing twice
    out.write_text("\n".join(out.read_text().splitlines()[:5]) + '\n{"line": 6, "req')
    r = up.cli(
        "recheck",
        "--workdir",
        str(up.workdir.root),
        "--ids",
        str(roster),
        "--out",
        str(out),
        "--quiet",
        *up.authorisation_args(),
    )
    assert r.returncode == 0, r.stderr
    assert "5 already done" in r.stdout
    campaign = rows[0]["campaign"]  # other tests' campaigns share this deployment's log
    store = LogStore(open_log_engine(up.workdir.audit_db_url))
    entries = [
        e.verdict
        for e in (audit_pb2.AuditEntry.FromString(b) for _, b in store.entries(0, 100_000))
        if e.HasField("verdict") and e.verdict.request_id.startswith(f"recheck-{campaign}-")
    ]
    # every household decided exactly once; the applicant who is not in the register (line 13)
    # was asked again when its line was lost with the crash, and is refused again, never decided
    decided = Counter(v.request_id for v in entries if not v.error)
    assert len(decided) == 12 and set(decided.values()) == {1}
    refused = {v.request_id for v in entries if v.error}
    assert refused == {f"recheck-{campaign}-13"}


def test_auditor_verifies_searches_and_proves_over_grpc(up: Up) -> None:
    w = str(up.workdir.root)
    state = str(up.workdir.root.parent / "auditor-state.json")
    r = up.cli("audit", "verify", "--workdir", w, "--state", state)
    assert r.returncode == 0, r.stderr
    assert "log OK" in r.stdout and "first verification" in r.stdout
    assert "key_event" in r.stdout and "config_change" in r.stdout
    applicant = up.summary.applicants[0][1]
    r = up.cli("audit", "search", "--workdir", w, "--id", applicant)
    assert r.returncode == 0, r.stderr
    assert "verdict" in r.stdout and "request" in r.stdout
    r = up.cli("audit", "prove", "1", "--workdir", w, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["index"] == 1
    r = up.cli("audit", "verify", "--workdir", w, "--state", state)
    assert r.returncode == 0 and "consistent with the checkpoint" in r.stdout, r.stderr
    # the custodian's journal: every decryption is of a logged request and ended in a verdict
    m = re.search(r"custodian journal: (\d+) decryption\(s\)", r.stdout)
    assert m and int(m.group(1)) > 0, r.stdout
    # a verdict's receipt proves its entry against the signed checkpoint
    v = _verify(up, up.summary.applicants[4][1], "receipt-1")
    from hedui.audit import merkle
    from hedui.audit.checkpoint import parse_and_verify, parse_vkey

    # the published vkey (C2SP note format) is named after the log's origin and verifies it
    name, key = parse_vkey(up.workdir.log_vkey.read_text().strip())
    note = v["audit"]["checkpoint"].encode()
    assert note.decode().split("\n")[0] == name
    cp = parse_and_verify(note, name, key)
    entry = up.cli("audit", "prove", str(v["audit"]["leaf_index"]), "--workdir", w, "--json")
    assert json.loads(entry.stdout)["entry"]["request_id"] == "receipt-1"
    assert cp.size > v["audit"]["leaf_index"]
    assert merkle.HASH_SIZE == 32


def test_a_search_is_attributed_to_the_auditor_not_to_its_filter(up: Up) -> None:
    w = str(up.workdir.root)
    r = up.cli("audit", "search", "--workdir", w, "--caller", "intake")
    assert r.returncode == 0, r.stderr
    assert "this search was itself logged" in r.stdout
    r = up.cli("audit", "show", "--workdir", w, "--last", "1")
    assert r.returncode == 0, r.stderr
    (line,) = [ln for ln in r.stdout.splitlines() if " search " in ln]
    assert " auditor " in line and " intake " not in line, line
    assert "+08:00" in line  # audit times are shown with their zone


def test_a_tampered_export_exits_2_naming_the_entry(up: Up, tmp_path: Path) -> None:
    w = str(up.workdir.root)
    out = tmp_path / "export.json"
    r = up.cli(
        "audit", "export", "--workdir", w, "--since", "2020-01-01", "--until", "2099-12-31",
        "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = up.cli("audit", "verify", "--workdir", w, "--export", str(out))
    assert r.returncode == 0 and "export OK" in r.stdout, r.stderr
    doc = json.loads(out.read_text())
    item = doc["entries"][2]
    data = bytearray.fromhex(item["entry_hex"])
    data[-1] ^= 1  # one changed bit of the signed bytes
    item["entry_hex"] = data.hex()
    out.write_text(json.dumps(doc))
    r = up.cli("audit", "verify", "--workdir", w, "--export", str(out))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "TAMPERING DETECTED" in r.stderr and f"entry {item['index']}" in r.stderr
    assert "Traceback" not in r.stderr


def test_profiles_hold_absolute_paths_and_a_second_up_refuses(up: Up, tmp_path: Path) -> None:
    for profile in (up.workdir.intake_profile, up.workdir.auditor_profile):
        for line in profile.read_text().splitlines():
            if line.startswith(("ca ", "cert ", "key ")):
                assert Path(line.split('"')[1]).is_absolute(), line
    before = up.workdir.intake_profile.read_text()
    r = subprocess.run(
        [sys.executable, "-m", "hedui.clients.cli", "up", "--workdir", "work"],
        cwd=up.workdir.root.parent, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "in use by a running deployment" in r.stderr and str(up.process.pid) in r.stderr
    assert "Traceback" not in r.stderr
    assert up.workdir.intake_profile.read_text() == before
    # the profiles work from any directory
    r = subprocess.run(
        [sys.executable, "-m", "hedui.clients.cli", "audit", "show", "--workdir", str(up.workdir.root), "--last", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_only_auditors_may_read_the_log(up: Up) -> None:
    from hedui.core.rpc import open_channel
    from hedui.proto.v1 import audit_pb2, audit_pb2_grpc

    stub = audit_pb2_grpc.AuditServiceStub(
        open_channel(up.address, tls=up.workdir.tls("intake"), server_name="service")
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.GetCheckpoint(audit_pb2.GetCheckpointRequest(), timeout=10)
    assert grpc_code(info.value) == grpc.StatusCode.PERMISSION_DENIED


def test_zz_no_plaintext_id_at_rest_and_clean_stop(up: Up) -> None:
    """Runs last in this module: stop the deployment, then grep everything it wrote."""
    assert USED_IDS
    up.process.send_signal(signal.SIGTERM)
    try:
        assert up.process.wait(60) == 0
    except subprocess.TimeoutExpired:
        up.process.kill()
        raise
    registry_db = up.workdir.connector_db("registry")
    scanned = 0
    # every member of every queried household, not only the applicants
    households, _ = oracle.load(up.data)
    ids = set(USED_IDS)
    for members in households.values():
        if ids & set(members):
            ids |= set(members)
    needles = [i.encode() for i in ids] + [i.encode("utf-16-le") for i in ids]
    for path in up.workdir.root.rglob("*"):
        if not path.is_file() or path.name.startswith(registry_db.name):
            continue
        blob = path.read_bytes()
        scanned += 1
        for needle in needles:
            assert needle not in blob, f"a plaintext ID number is in {path}"
    assert scanned > 80
    assert (up.workdir.log_dir / "hedui.log").stat().st_size > 0


def test_zzz_offline_audit_names_the_changed_entry(up: Up) -> None:
    """After the stop: the auditor works on the database, and catches an insider's edit."""
    import sqlite3

    w = str(up.workdir.root)
    r = up.cli(
        "audit",
        "verify",
        "--workdir",
        w,
        "--state",
        str(up.workdir.root.parent / "offline-state.json"),
    )
    assert r.returncode == 0, r.stderr
    assert "not running" in r.stderr
    r = up.cli("audit", "search", "--workdir", w, "--id", up.summary.applicants[0][1])
    assert r.returncode == 1 and "needs the running deployment" in r.stderr
    r = up.cli("audit", "search", "--workdir", w, "--caller", "intake")
    assert r.returncode == 0 and "verdict" in r.stdout
    # offline, nothing logs the search, and the CLI says so
    assert "was not logged" in r.stdout and "itself logged" not in r.stdout
    db = sqlite3.connect(up.workdir.party_dir("service") / "db" / "audit.sqlite")
    db.execute("DROP TRIGGER log_entry_no_update")
    (entry,) = db.execute("SELECT entry FROM log_entry WHERE idx = 3").fetchone()
    db.execute(
        "UPDATE log_entry SET entry = ? WHERE idx = 3", (entry[:-1] + bytes([entry[-1] ^ 1]),)
    )
    db.commit()
    db.close()
    r = up.cli(
        "audit",
        "verify",
        "--workdir",
        w,
        "--state",
        str(up.workdir.root.parent / "offline-state.json"),
    )
    assert r.returncode == 2
    assert "TAMPERING DETECTED" in r.stderr and "entry 3" in r.stderr
    assert "Traceback" not in r.stderr


def test_zzzz_the_log_checkpoints_carry_the_witness_cosignature(up: Up, tmp_path: Path) -> None:
    """Issue #23 item 4, on the stopped deployment (after the tests above): the checkpoints the
    service stored are cosigned by the deployment's own witness (`hedui up` runs it), whose
    verifier key `hedui up` gave the auditor and the custodian; `hedui audit verify` checks and
    reports it, and reports a checkpoint the log key signed without the witness as NOT
    COSIGNED (exit 4), saving nothing. The log's database is opened in processes of their own
    (this one may still hold a connection of a test above)."""
    from hedui.audit.cosignature import WitnessPolicy

    if up.process.poll() is None:  # run alone: stop it as the tests above do
        up.process.send_signal(signal.SIGTERM)
        up.process.wait(60)
    w = up.workdir
    script = tmp_path / "db.py"
    script.write_text(
        """
import hashlib, json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
# undo the change test_zzz made to entry 3, if it made it (its trigger is gone then)
entry, leaf = db.execute("SELECT entry, leaf_hash FROM log_entry WHERE idx = 3").fetchone()
if hashlib.sha256(b"\\x00" + entry).digest() != leaf:
    db.execute("UPDATE log_entry SET entry = ? WHERE idx = 3", (entry[:-1] + bytes([entry[-1] ^ 1]),))
    db.commit()
print(json.dumps([bytes(n).decode() for (n,) in db.execute("SELECT note FROM log_checkpoint ORDER BY size")]))
db.close()
"""
    )
    db = w.party_dir("service") / "db" / "audit.sqlite"
    got = subprocess.run([sys.executable, str(script), str(db)], capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    notes = [n.encode() for n in json.loads(got.stdout)]
    pinned = w.keys("auditor").root / "witness" / "witness.vkey"
    policy = WitnessPolicy.from_vkeys([pinned.read_text().strip()])
    assert (w.keys("custodian").root / "witness" / "witness.vkey").read_text() == pinned.read_text()
    assert policy.witnesses[0].vkey in w.custodian_config.read_text()
    assert policy.witnesses[0].vkey in w.auditor_profile.read_text()
    # the checkpoints the service stored are cosigned by the witness, the last one included
    assert notes and policy.check(notes[-1])
    state, journal = tmp_path / "state.json", tmp_path / "journal.jsonl"
    journal.write_text("")  # the custodian's journal is counted in a test above
    where = ["--workdir", str(w.root), "--state", str(state), "--journal", str(journal)]
    r = up.cli("audit", "verify", *where, "--json")
    assert r.returncode == 0, r.stderr + r.stdout
    doc = json.loads(r.stdout)
    assert [c["witness"] for c in doc["cosignatures"]] == [policy.witnesses[0].name]
    assert doc["cosignatures"][0]["time"].endswith("+08:00")
    # the service's operator (or an insider) signs a checkpoint with the log key alone
    append = tmp_path / "append.py"
    append.write_text(
        """
import sys
from hedui.audit.log import AuditLog
from hedui.audit.store import LogStore, open_log_engine
from hedui.core.workdir import Workdir
from hedui.proto.v1 import audit_pb2
from hedui.server.config import load
w = Workdir(sys.argv[1])
config = load(w.service_config, {})
log = AuditLog(LogStore(open_log_engine(config.audit_database)), origin=config.log_origin,
               signing_key=w.keys("service").log_signing_key())
log.append([audit_pb2.AuditEntry(caller="hedui-operator", config_change=audit_pb2.ConfigChange())])
"""
    )
    got = subprocess.run([sys.executable, str(append), str(w.root)], capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    saved = state.read_text()
    r = up.cli("audit", "verify", *where)
    assert r.returncode == 4, r.stderr + r.stdout
    assert "NOT COSIGNED" in r.stderr and policy.witnesses[0].name in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert state.read_text() == saved  # nothing verified, nothing saved
