"""Consent (授权书) the service checks (issue #11 item 2), through the real gRPC path.

Before: any intake caller could verify anyone with a bare ``consent_reference`` string. Now the
request carries a consent record; the registry gives no tokens for a household with an adult
who did not sign, the service refuses an expired consent and a case number reused for another
household, and the log records the consent without an ID number.
"""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from google.rpc import error_details_pb2

from hedui.audit.store import LogStore, open_log_engine
from hedui.clients.consent import adults
from hedui.core.resident_id import parse as parse_id
from hedui.core.rpc import error_details
from hedui.proto.v1 import audit_pb2, verification_pb2
from tests.e2e.conftest import TODAY, Up, consent_for, grpc_code


def _adults(up: Up, household: str) -> list[str]:
    return adults(up.summary.members[household], TODAY)


def _two_adult_households(up: Up) -> list[str]:
    return [h for h, _ in up.summary.applicants if len(_adults(up, h)) >= 2]


def _head(up: Up, household: str) -> str:
    return dict(up.summary.applicants)[household]


def _verify(up: Up, rid: str, id_number: str, consent: verification_pb2.Consent) -> object:
    return up.stub().Verify(
        verification_pb2.VerifyRequest(
            request_id=rid, id_number=id_number, program="dibao", consent=consent
        ),
        timeout=60,
    )


def _refusal(up: Up, rid: str, id_number: str, consent: verification_pb2.Consent) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        _verify(up, rid, id_number, consent)
    return info.value


def _violations(e: grpc.RpcError) -> list[tuple[str, str, str]]:
    return [
        (v.type, v.subject, v.description)
        for d in error_details(e)
        if isinstance(d, error_details_pb2.PreconditionFailure)
        for v in d.violations
    ]


def _entries(up: Up) -> list[audit_pb2.AuditEntry]:
    store = LogStore(open_log_engine(up.workdir.audit_db_url))
    return [audit_pb2.AuditEntry.FromString(b) for _, b in store.entries(0, store.size())]


def test_an_adult_who_did_not_sign_stops_the_check_before_any_source(up: Up) -> None:
    household = _two_adult_households(up)[0]
    head = _head(up, household)
    adults = _adults(up, household)
    missing = next(a for a in adults if a != head)
    e = _refusal(up, "consent-unsigned", head, consent_for(up.summary, head, signers=[head]))
    assert grpc_code(e) == grpc.StatusCode.FAILED_PRECONDITION
    ((kind, subject, description),) = _violations(e)
    assert (kind, subject) == ("CONSENT", "consent.signers")
    assert parse_id(missing).masked() in description and missing not in description
    assert "did not sign" in (e.details() or "")  # type: ignore[attr-defined]
    # logged as a request and its refusal: no source answered, no ID (not even masked) in the log
    entries = [x for x in _entries(up) if x.WhichOneof("body") and _rid(x) == "consent-unsigned"]
    request, outcome = (x for x in entries)
    assert request.HasField("request") and outcome.verdict.error.startswith("consent refused")
    assert not outcome.verdict.connectors_answered and not outcome.verdict.answer_digests
    assert parse_id(missing).masked() not in str(outcome)
    # signed by every adult, the same application goes through
    v = _verify(up, "consent-signed", head, consent_for(up.summary, head, signers=adults))
    assert v.connectors_answered == 86  # type: ignore[attr-defined]


def _rid(entry: audit_pb2.AuditEntry) -> str:
    return entry.request.request_id if entry.HasField("request") else entry.verdict.request_id


def test_the_log_records_the_consent_without_an_id(up: Up) -> None:
    household = _two_adult_households(up)[1]
    head = _head(up, household)
    consent = consent_for(up.summary, head)
    _verify(up, "consent-recorded", head, consent)
    audit_key = up.workdir.keys("service").audit_token_key()
    (request,) = [x for x in _entries(up) if x.request.request_id == "consent-recorded"]
    record = request.request.consent
    assert record.case_number == consent.case_number == request.request.consent_reference
    assert record.signed_on == TODAY.isoformat() and record.form_sha256 == consent.form_sha256
    assert list(record.signer_audit_tokens) == [
        audit_key.token(parse_id(i)) for i in consent.signer_id_numbers
    ]
    # every database but the population register, and every log file
    stores = [*up.workdir.root.glob("parties/*/db/*"), *up.workdir.log_dir.glob("*")]
    assert len(stores) > 80
    for path in (p for p in stores if p.name != "registry.sqlite"):
        data = path.read_bytes()
        for signer in consent.signer_id_numbers:
            assert signer.encode() not in data, path


def test_an_expired_consent_is_refused_before_anything_is_logged(up: Up) -> None:
    _, head = up.summary.applicants[4]
    before = len(_entries(up))
    old = consent_for(up.summary, head, signed_on=TODAY - dt.timedelta(days=400))
    e = _refusal(up, "consent-old", head, old)
    assert grpc_code(e) == grpc.StatusCode.FAILED_PRECONDITION
    ((kind, subject, description),) = _violations(e)
    assert (kind, subject) == ("CONSENT", "consent.signed_on")
    assert "expired on" in description and "12 months" in description
    assert len(_entries(up)) == before
    # eleven months old is still in force
    fresh = consent_for(up.summary, head, signed_on=TODAY - dt.timedelta(days=330))
    _verify(up, "consent-eleven-months", head, fresh)


def test_a_case_number_serves_one_household(up: Up) -> None:
    (_, first), (_, second) = up.summary.applicants[6:8]
    case = "2026-ZJ-000123"
    _verify(up, "case-first", first, consent_for(up.summary, first, case=case))
    # the same case again for the same household (a second request) is fine
    _verify(up, "case-first-again", first, consent_for(up.summary, first, case=case))
    e = _refusal(up, "case-second", second, consent_for(up.summary, second, case=case))
    assert grpc_code(e) == grpc.StatusCode.FAILED_PRECONDITION
    ((kind, subject, description),) = _violations(e)
    assert (kind, subject) == ("CONSENT", "consent.case_number")
    assert "another household" in description


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"case_number": ""}, "consent.case_number"),
        ({"case_number": "案 110105 19491231 002X"}, "consent.case_number"),  # an ID in it
        ({"signed_on": ""}, "consent.signed_on"),
        ({"signed_on": "2030-01-01"}, "consent.signed_on"),
        ({"form_sha256": b"short"}, "consent.form_sha256"),
        ({"signer_id_numbers": []}, "consent.signer_id_numbers"),
        ({"signer_id_numbers": ["110105194912310022"]}, "consent.signer_id_numbers[0]"),
        ({"standing": True}, "consent.standing"),  # a request cannot make itself standing
        # a campaign's date, document and signers are the registered ones: a case is refused
        (
            {
                "campaign": "测民复〔2026〕1号",
                "signed_on": "",
                "form_sha256": b"",
                "signer_id_numbers": [],
            },
            "consent.case_number",
        ),
    ],
)
def test_a_malformed_consent_is_invalid_argument(up: Up, change: dict, field: str) -> None:
    _, head = up.summary.applicants[9]
    consent = consent_for(up.summary, head)
    for name, value in change.items():
        if name == "signer_id_numbers":
            del consent.signer_id_numbers[:]
            consent.signer_id_numbers.extend(value)
        else:
            setattr(consent, name, value)
    e = _refusal(up, "consent-bad", head, consent)
    assert grpc_code(e) == grpc.StatusCode.INVALID_ARGUMENT
    fields = [
        v.field
        for d in error_details(e)
        if isinstance(d, error_details_pb2.BadRequest)
        for v in d.field_violations
    ]
    assert fields == [field]


def test_a_request_without_consent_is_refused(up: Up) -> None:
    _, head = up.summary.applicants[9]
    with pytest.raises(grpc.RpcError) as info:
        up.stub().Verify(
            verification_pb2.VerifyRequest(
                request_id="no-consent", id_number=head, program="dibao"
            ),
            timeout=30,
        )
    assert grpc_code(info.value) == grpc.StatusCode.INVALID_ARGUMENT


def test_in_a_batch_the_household_without_consent_fails_alone(up: Up) -> None:
    households = _two_adult_households(up)
    unsigned, signed = households[2], households[3]
    u, s = _head(up, unsigned), _head(up, signed)
    requests = [
        verification_pb2.VerifyRequest(
            request_id="batch-unsigned",
            id_number=u,
            program="dibao",
            consent=consent_for(up.summary, u, signers=[u]),
        ),
        verification_pb2.VerifyRequest(
            request_id="batch-signed", id_number=s, program="dibao", consent=up.consent(s)
        ),
    ]
    results = {r.request_id: r for r in up.stub().VerifyBatch(iter(requests), timeout=120)}
    assert results["batch-unsigned"].error.code == "FAILED_PRECONDITION"
    assert "did not sign" in results["batch-unsigned"].error.message
    assert results["batch-signed"].verdict.connectors_answered == 86


def test_a_reused_case_number_among_concurrent_calls_is_refused_before_any_source(
    up: Up,
) -> None:
    """Concurrent Verify calls are verified together (one grant, one fan-out); a case number of
    another household among them goes alone, so that its household is never asked about or
    decrypted (issue #22)."""
    import json
    import time
    from concurrent.futures import ThreadPoolExecutor

    (_, owner), (_, other), *crowd_of = up.summary.applicants[20:27]  # 6 calls, within a share
    rest = [head for _, head in crowd_of]
    case = "2026-ZJ-000777"
    _verify(up, "case-777-owner", owner, consent_for(up.summary, owner, case=case))
    crowd_calls = [
        (f"case-777-crowd-{i}", head, consent_for(up.summary, head)) for i, head in enumerate(rest)
    ]
    reused = ("case-777-other", other, consent_for(up.summary, other, case=case))

    def call(c: tuple[str, str, verification_pb2.Consent]) -> object:
        try:
            return _verify(up, *c)
        except grpc.RpcError as e:
            return e

    with ThreadPoolExecutor(len(crowd_calls) + 1) as pool:
        # the first calls keep both runners busy; the reused case number then waits with the
        # rest of the crowd for the next run, which it would share with them
        first = [pool.submit(call, c) for c in crowd_calls[:3]]
        time.sleep(0.05)
        later = [pool.submit(call, c) for c in [reused, *crowd_calls[3:]]]
        refused = later[0].result()
        decided = [f.result() for f in first + later[1:]]
    assert isinstance(refused, grpc.RpcError)
    assert [v[:2] for v in _violations(refused)] == [("CONSENT", "consent.case_number")]
    assert all(isinstance(r, verification_pb2.Verdict) for r in decided), [
        (grpc_code(r), r.details()) for r in decided if isinstance(r, grpc.RpcError)
    ]
    by_request = {
        e.request.request_id: e.request.query_id for e in _entries(up) if e.HasField("request")
    }
    alone = by_request["case-777-other"]
    crowd = {by_request[f"case-777-crowd-{i}"] for i in range(len(rest))}
    assert alone not in crowd  # it ran on its own
    assert len(crowd) < len(rest)  # the others were verified together
    journal = up.workdir.custodian_dir / "decryptions.jsonl"
    decrypted = {
        json.loads(line)["query_id"]
        for line in journal.read_text().splitlines()
        if json.loads(line).get("event") == "decrypted"
    }
    assert alone not in decrypted and crowd <= decrypted
