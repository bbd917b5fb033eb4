"""The attacks of issue #9, rerun against a real deployment (`hedui up`, mutual TLS).

1. An insider of the verification service, with everything the service holds (its certificate,
   the public keys, the audit and log keys, the addresses), tries to read one bank's figure for one
   person: one bank asked about the target's real tokens, every other connector about random ones,
   then the custodian asked to decrypt. For one household and for many.
2. A curious connector, with everything its directory holds, tries to compute the token of an ID
   it chooses, and to learn a household's size from the queries it gets.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import shutil
import sqlite3
import tomllib
from pathlib import Path

import grpc
import pytest

from hedui.clients.errors import ClientError
from hedui.connectors.token_authority import HouseholdTokens
from hedui.core import grants, signing
from hedui.core.deployment import kind_of
from hedui.core.grants import Grant
from hedui.core.packing import batch_layout_pb
from hedui.core.rpc import error_details, open_channel
from hedui.proto.v1 import (
    connector_pb2,
    connector_pb2_grpc,
    custodian_pb2,
    custodian_pb2_grpc,
    verification_pb2,
)
from tests.e2e.conftest import TODAY, Up, campaign_application, grpc_code, register_campaign

TARGET_BANK = "bank-07"


def _config(up: Up) -> dict:
    return tomllib.loads(up.workdir.service_config.read_text())


def _registry(up: Up) -> connector_pb2_grpc.RegistryServiceStub:
    address = _config(up)["registry"]["address"]
    return connector_pb2_grpc.RegistryServiceStub(
        open_channel(address, tls=up.workdir.tls("service"), server_name="registry")
    )


def _households(
    up: Up,
    query_id: str,
    id_numbers: list[str],
    signatures: connector_pb2.Signatures | None = None,
) -> connector_pb2.HouseholdsResponse:
    """The registry asked about these applicants' households, every one with ``signatures``
    (by default: under the campaign the bureau registered for every household)."""
    if signatures is None:
        signatures = connector_pb2.Signatures(campaign=up.campaign(), program="dibao")
    return _registry(up).GetHouseholds(
        connector_pb2.HouseholdsRequest(
            query_id=query_id,
            applicants=[
                connector_pb2.Applicant(id_number=i, signatures=signatures) for i in id_numbers
            ],
        ),
        timeout=10,
    )


def _connector(up: Up, cid: str) -> connector_pb2_grpc.ConnectorServiceStub:
    address = _config(up)["connectors"][cid]
    return connector_pb2_grpc.ConnectorServiceStub(
        open_channel(address, tls=up.workdir.tls("service"), server_name=cid)
    )


def _layout(up: Up, cid: str) -> connector_pb2.BatchLayout:
    """The batch layout of ``cid``'s kind, as the deployment (and so the custodian) has it."""
    from hedui.core.custody import custodian_view

    ids = list(_config(up)["connectors"])
    view = custodian_view(
        ids, {}, up.workdir.keys("custodian").paillier_public().max_plaintext_bits
    )
    return batch_layout_pb(view.batch_layouts[kind_of(cid).kind])


def _refusal(e: grpc.RpcError) -> str:
    assert grpc_code(e) == grpc.StatusCode.FAILED_PRECONDITION, e
    return str(next(v.type for d in error_details(e) for v in d.violations))


def _journal(up: Up) -> list[dict]:
    path = up.workdir.custodian_dir / "decryptions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _random_households(n: int) -> list[connector_pb2.TokenSet]:
    return [
        connector_pb2.TokenSet(tokens=grants.padded([secrets.token_bytes(32)])) for _ in range(n)
    ]


def test_the_service_cannot_aim_one_bank_at_one_person(up: Up) -> None:
    keys = up.workdir.keys("service")  # the insider holds the service's own directory
    fingerprint = keys.paillier_public().fingerprint
    target = up.summary.applicants[3][1]
    # knowing one ID number is not enough: without every adult's signature, no token, no grant
    bare = _households(up, "attack-0", [target], connector_pb2.Signatures(id_numbers=[]))
    assert len(bare.households) == 1
    assert bare.households[0].consent_missing and not bare.households[0].tokens
    assert not bare.HasField("grant")
    # a registered campaign is the one way past the signers (the log records it): past it,
    # the grant still binds every connector to the household's tokens
    reply = _households(up, "attack-1", [target])
    assert reply.grant.households == 1
    grant = Grant.from_pb(reply.grant)
    (household,) = reply.households
    asked = HouseholdTokens.from_pb(household)  # tokens, with decoys their selectors
    # the target bank, asked about the real tokens under the grant, answers
    answer = _connector(up, TARGET_BANK).QueryBatch(
        connector_pb2.QueryBatchRequest(
            query_id="attack-1",
            households=[asked.token_set(TARGET_BANK)],
            key_fingerprint=fingerprint,
            layout=_layout(up, TARGET_BANK),
            grant=reply.grant,
        ),
        timeout=10,
    )
    assert len(answer.packed) == 1
    # every other connector, asked about random tokens (an encryption of 0 before), refuses
    for cid in ("bank-01", "bank-02", "hrss", "tax"):
        with pytest.raises(grpc.RpcError) as info:
            _connector(up, cid).QueryBatch(
                connector_pb2.QueryBatchRequest(
                    query_id="attack-1",
                    households=_random_households(1),
                    key_fingerprint=fingerprint,
                    layout=_layout(up, cid),
                    grant=reply.grant,
                ),
                timeout=10,
            )
        assert _refusal(info.value) == "GRANT"
    # ... and without any grant
    with pytest.raises(grpc.RpcError) as info:
        _connector(up, "bank-01").QueryBatch(
            connector_pb2.QueryBatchRequest(
                query_id="attack-1b",
                households=_random_households(1),
                key_fingerprint=fingerprint,
                layout=_layout(up, "bank-01"),
            ),
            timeout=10,
        )
    assert _refusal(info.value) == "GRANT"
    # the same query id again: refused as a replay
    with pytest.raises(grpc.RpcError) as info:
        _connector(up, TARGET_BANK).QueryBatch(
            connector_pb2.QueryBatchRequest(
                query_id="attack-1",
                households=[asked.token_set(TARGET_BANK)],
                key_fingerprint=fingerprint,
                layout=_layout(up, TARGET_BANK),
                grant=reply.grant,
            ),
            timeout=10,
        )
    assert _refusal(info.value) == "REPLAY"
    # the custodian will not decrypt the one answer: the query is not in the log
    custodian = custodian_pb2_grpc.CustodianServiceStub(
        open_channel(
            _config(up)["service"]["custodian_address"],
            tls=up.workdir.tls("service"),
            server_name="custodian",
        )
    )
    before = len(_journal(up))
    with pytest.raises(grpc.RpcError) as info:
        custodian.DecryptBatch(
            custodian_pb2.DecryptBatchRequest(
                query_id="attack-1",
                answers=[
                    custodian_pb2.CustodyAnswer(
                        connector_id=TARGET_BANK,
                        kind=kind_of(TARGET_BANK).kind,
                        key_fingerprint=answer.key_fingerprint,
                        queried=grant.digest_for(TARGET_BANK) or b"",
                        signature=answer.signature,
                        packed=answer.packed,
                        ciphertexts=signing.ciphertexts_digest(answer.packed),
                    )
                ],
                households=1,
                grant=reply.grant,
                evidence=custodian_pb2.LogEvidence(),
                compositions=[custodian_pb2.Composition(members=household.members)],
            ),
            timeout=30,
        )
    assert grpc_code(info.value) == grpc.StatusCode.FAILED_PRECONDITION
    # the refusal is a trace the auditor reads
    refused = _journal(up)[before:]
    assert [r["event"] for r in refused] == ["refused"] and refused[0]["query_id"] == "attack-1"
    assert "log checkpoint" in refused[0]["reason"], refused[0]


def test_the_batch_path_cannot_isolate_one_bank_either(up: Up) -> None:
    keys = up.workdir.keys("service")  # the insider holds the service's own directory
    targets = [a for _, a in up.summary.applicants[5:8]]
    reply = _households(up, "attack-2", targets)
    assert reply.grant.households == 3
    with pytest.raises(grpc.RpcError) as info:
        _connector(up, "bank-01").QueryBatch(
            connector_pb2.QueryBatchRequest(
                query_id="attack-2",
                households=_random_households(len(targets)),
                key_fingerprint=keys.paillier_public().fingerprint,
                layout=_layout(up, "bank-01"),
                grant=reply.grant,
            ),
            timeout=10,
        )
    assert _refusal(info.value) == "GRANT"


def test_a_connector_holds_no_token_key_and_cannot_flood_the_authority(up: Up) -> None:
    from hedui.connectors.errors import ConnectorError
    from hedui.connectors.tokenizer import AuthorityTokenizer
    from hedui.core.resident_id import make

    own = sorted(p.name for p in up.workdir.keys(TARGET_BANK).connector_dir(TARGET_BANK).iterdir())
    assert own == ["integrity.key", "signing.key", "signing.pub"]  # nothing that makes a token
    tokenizer = AuthorityTokenizer(
        _config(up)["registry"]["address"],
        up.workdir.tls(TARGET_BANK),
        TARGET_BANK,
        up.workdir.keys("registry").token_epoch(),
    )
    import datetime as dt

    region = make("330106", dt.date(1960, 1, 1), 1).region
    guesses = [
        make(region, dt.date(1960, 1, 1) + dt.timedelta(days=d), 1).value for d in range(3000)
    ]
    with pytest.raises(ConnectorError, match="token authority refused"):
        tokenizer.tokens(guesses)
    tokenizer.close()
    db = sqlite3.connect(up.workdir.connector_db("registry"))
    alerts = db.execute("SELECT connector_id, requested FROM oprf_alert").fetchall()
    db.close()
    assert (f"{TARGET_BANK}/epoch-1", 1024) in alerts


def test_a_connector_cannot_tell_the_household_size(up: Up) -> None:
    from tests.e2e import oracle

    households, _ = oracle.load(up.data)
    by_size: dict[int, str] = {}
    for members in households.values():
        by_size.setdefault(len(members), members[0])
    assert len(by_size) >= 3
    for size, applicant in sorted(by_size.items()):
        reply = _households(up, f"size-{size}", [applicant])
        (household,) = reply.households
        assert len(household.members) == size
        # every connector gets the same number of tokens: its decoy group's residents (issue
        # #26) padded to a multiple of 8, whatever the household's own size
        (count,) = {len(t.tokens) for t in household.tokens}
        assert count % 8 == 0 and count >= 8


def test_a_custodian_without_its_witness_state_does_not_start(up: Up, tmp_path) -> None:
    """Issue #23 (first part of item 4): with ``witness.json`` deleted, a restarted custodian
    took a foreign one-entry log's checkpoint on trust. It now refuses to start while its
    journal records decryptions, naming the file and how to restore it."""
    applicant = up.summary.applicants[9][1]
    up.stub().Verify(  # at least one decryption in the journal
        verification_pb2.VerifyRequest(
            request_id="witness-gone",
            id_number=applicant,
            program="dibao",
            consent=up.consent(applicant),
        ),
        timeout=60,
    )
    # the custodian's own directory as an insider leaves it: its journal, no witness state
    source = tomllib.loads(up.workdir.custodian_config.read_text(encoding="utf-8"))["custodian"]
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(Path(source["state_dir"]) / "decryptions.jsonl", state / "decryptions.jsonl")
    config = up.workdir.custodian_config.read_text(encoding="utf-8")
    config = config.replace(source["state_dir"], str(state))
    config = config.replace(source["address"], "127.0.0.1:0")
    (tmp_path / "custodian.toml").write_text(config, encoding="utf-8")
    r = up.cli("serve", "custodian", "--config", str(tmp_path / "custodian.toml"))
    assert r.returncode != 0
    assert f"{state / 'witness.json'} is missing" in r.stderr, r.stderr
    assert "will not take a log's checkpoint on trust" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (state / "witness.json").exists()


# -- issue #23: authority proven, not asserted ------------------------------------------------


def _verify_error(up: Up, consent: verification_pb2.Consent, id_number: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        up.stub().Verify(
            verification_pb2.VerifyRequest(
                request_id=f"attack-{secrets.token_hex(6)}",
                id_number=id_number,
                program="dibao",
                consent=consent,
            ),
            timeout=120,
        )
    return e.value


@pytest.mark.parametrize(
    "consent",
    [
        # the attack: standing, a made-up document number and digest, no signer
        verification_pb2.Consent(
            case_number="民政〔2026〕99号", signed_on="2026-11-01", form_sha256=bytes(32),
            standing=True,
        ),
        # standing with a campaign that is registered: still refused, standing is not a claim
        verification_pb2.Consent(campaign="测民复〔2026〕1号", standing=True),
    ],
    ids=["made-up", "with-a-registered-campaign"],
)  # fmt: skip
def test_an_intake_cannot_make_a_request_standing(
    up: Up, consent: verification_pb2.Consent
) -> None:
    up.campaign()
    e = _verify_error(up, consent, up.summary.applicants[4][1])
    assert grpc_code(e) == grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for d in error_details(e) for v in getattr(d, "field_violations", [])]
    assert "consent.standing" in fields


def test_a_campaign_covers_only_what_the_bureau_registered(up: Up, tmp_path: Path) -> None:
    """An unregistered campaign is refused before anything is logged; a household off the
    roster of a registered one is refused by the registry; an intake or the service cannot
    register a campaign (only the bureau's certificate can)."""
    head = up.summary.applicants[5][1]
    e = _verify_error(up, verification_pb2.Consent(campaign="假冒〔2026〕7号"), head)
    assert _refusal(e) == "CONSENT" and "not registered" in str(e.details())
    # a campaign over two households: a third is not on its roster
    number = f"测民复〔2026〕{secrets.randbelow(9000) + 1000}号"
    register_campaign(up.workdir, [up.summary.applicants[0][1]], number=number)
    e = _verify_error(up, verification_pb2.Consent(campaign=number), head)
    assert _refusal(e) == "CONSENT" and "not on the roster" in str(e.details())
    # the registry's CampaignService refuses every role but the bureau's for registering
    from hedui.clients import campaign_cli

    for role in ("intake", "service"):
        profile = campaign_cli.bureau_profile(up.workdir.root, None)
        profile = dataclasses.replace(profile, tls=up.workdir.tls(role))
        with pytest.raises(ClientError, match="PERMISSION_DENIED"):
            campaign_cli.register(
                profile,
                connector_pb2.Campaign(
                    number=f"伪〔2026〕{role}号", kind=connector_pb2.RECHECK, program="dibao",
                    issued_on=TODAY.isoformat(), valid_until=TODAY.isoformat(),
                    document_sha256=bytes(32),
                ),
                [head],
            )  # fmt: skip
    # the bureau sees what is registered, and the service may read it (not write it)
    listed = {
        c.number for c in campaign_cli.campaigns(campaign_cli.bureau_profile(up.workdir.root, None))
    }
    assert number in listed and not any("伪" in n for n in listed)


def test_an_insider_who_logs_one_applicant_gets_no_other_household_decrypted(up: Up) -> None:
    """The issue's attack: an insider of the service, with its own directory and one changed
    line of its code, logs a request about applicant A and asks the registry for household B
    under that query id. The grant binds B's audit token; the custodian compares it with the
    logged request and decrypts nothing."""
    from hedui.core.resident_id import parse as parse_id
    from hedui.core.tls import PeerIdentity
    from hedui.server import config as service_config
    from hedui.server.app import build_verifier

    number = up.campaign()
    a, b = up.summary.applicants[6][1], up.summary.applicants[7][1]
    v = build_verifier(service_config.load(up.workdir.service_config, {}))
    asked_for_b = v.registry.households

    def swapped(asked, query_id):  # the one changed line
        return asked_for_b([dataclasses.replace(x, resident=parse_id(b)) for x in asked], query_id)

    v.registry.households = swapped  # type: ignore[method-assign]
    # and the service's own check of the grant against its claims, dropped by the insider
    v.granted_as_asked = lambda todo, lookups, grant, query_id: (lookups, grant)  # type: ignore[method-assign]
    before = len(_journal(up))
    app = campaign_application(v, f"insider-{secrets.token_hex(4)}", a, number)
    try:
        with pytest.raises(Exception) as e:
            v.check(app, PeerIdentity("intake", "intake"))
    finally:
        v.registry.close()
    assert "not the applicants or authorisations the token grant was issued for" in str(e.value)
    new = _journal(up)[before:]
    assert new and all(r["event"] == "refused" for r in new), new
    # the auditor's search by A finds the logged request (and its failure): nothing hidden
    r = up.cli("audit", "search", "--workdir", str(up.workdir.root), "--id", a, "--json")
    assert r.returncode == 0 and app.request_id in r.stdout, r.stderr


def test_a_fork_signed_with_the_log_key_gets_no_cosignature_and_no_decryption(
    up: Up, tmp_path: Path
) -> None:
    """Issue #23 item 4: "With the witness intact, the insider still got one decryption under a
    fork that never entered the real log." An insider with the service's directory (the log's
    database and signing key) copies the log, lets the real log move on, appends a request of
    its own to the copy and signs a checkpoint of it with the log key: a history the real log
    never had. Shown to the custodian, it is refused for want of the witness's cosignature,
    before anything else (nothing decrypted); asked to cosign it, the witness refuses (422, a
    fork of what it cosigned) and keeps it as evidence. The real log goes on, cosigned."""
    import sqlite3

    from hedui.audit.cosignature import WitnessPolicy
    from hedui.audit.errors import WitnessRefused
    from hedui.audit.log import AuditLog
    from hedui.audit.store import LogStore, open_log_engine
    from hedui.audit.witness_client import request_cosignature
    from hedui.core.tls import PeerIdentity
    from hedui.proto.v1 import audit_pb2
    from hedui.server import config as service_config
    from hedui.server.app import build_verifier
    from hedui.server.errors import CustodianRefused

    config = service_config.load(up.workdir.service_config, {})
    assert config.witness_urls and config.audit_database.startswith("sqlite:///")
    policy = WitnessPolicy.from_vkeys(config.witness_vkeys)
    # 1. the insider's copy of the log, as it stands
    fork_db = tmp_path / "fork.sqlite"
    real, copy = sqlite3.connect(config.audit_database.removeprefix("sqlite:///")), None
    try:
        copy = sqlite3.connect(fork_db)
        real.backup(copy)
    finally:
        real.close()
        if copy is not None:
            copy.close()
    # 2. the real log moves on (one more verification, its checkpoints cosigned)
    moved = up.summary.applicants[13][1]
    up.stub().Verify(
        verification_pb2.VerifyRequest(
            request_id=f"fork-real-{secrets.token_hex(4)}",
            id_number=moved,
            program="dibao",
            consent=up.consent(moved),
        ),
        timeout=60,
    )
    # 3. on the copy, a request of the insider's own, signed with the service's log key
    fork = AuditLog(
        LogStore(open_log_engine(f"sqlite:///{fork_db}")),
        origin=config.log_origin,
        signing_key=up.workdir.keys("service").log_signing_key(),
    )
    number = up.campaign()
    target = up.summary.applicants[14][1]
    v = build_verifier(config)
    v.audit = fork  # the one changed line: the forked log instead of the real one
    before = len(_journal(up))
    app = campaign_application(v, f"fork-{secrets.token_hex(4)}", target, number)
    try:
        with pytest.raises(CustodianRefused) as refused:
            v.check(app, PeerIdentity("intake", "intake"))
    finally:
        v.registry.close()
        v.pool.close()
        v.requests.close()
    assert "not cosigned by the log's witness" in str(refused.value), refused.value
    new = _journal(up)[before:]
    assert new and all(r["event"] == "refused" for r in new), new
    assert "not cosigned" in new[-1]["reason"], new[-1]
    # 4. the witness will not cosign the fork: it extends no checkpoint the witness cosigned
    padding = audit_pb2.AuditEntry(caller="insider", config_change=audit_pb2.ConfigChange())
    fork.append([padding] * 4)  # longer than the real log: proven from the witness's size
    latest = fork.store.latest_checkpoint()
    assert latest is not None
    size, note = latest
    with pytest.raises(WitnessRefused) as no:
        request_cosignature(
            config.witness_urls[0],
            up.workdir.tls("service"),  # the insider holds the service's certificate too
            0,
            [],
            note,
            prove=lambda old: fork.store.consistency_proof(old, size),
            witness=policy.witnesses[0],
        )
    assert no.value.status == 422, no.value
    evidence = up.workdir.witness_dir / "evidence.jsonl"
    assert evidence.exists() and config.log_origin in evidence.read_text()
    # 5. the real log is untouched: the next verification decrypts under a cosigned checkpoint
    after = up.summary.applicants[15][1]
    up.stub().Verify(
        verification_pb2.VerifyRequest(
            request_id=f"fork-after-{secrets.token_hex(4)}",
            id_number=after,
            program="dibao",
            consent=up.consent(after),
        ),
        timeout=60,
    )
    assert _journal(up)[-1]["event"] == "decrypted"
    r = up.cli(
        "audit", "verify", "--workdir", str(up.workdir.root), "--state", str(tmp_path / "a.json")
    )
    assert r.returncode == 0 and "checkpoint cosigned by the witness" in r.stdout, r.stderr
