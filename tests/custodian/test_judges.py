"""The custodian's judges (issue #24): what they refuse before anything is decrypted, what a
refusal of one household looks like, and the auditor's check of the log against the signed
decision records."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.audit.auditor import check_judgements
from hedui.audit.log import AuditLog
from hedui.audit.store import LogStore, open_log_engine
from hedui.core import judgement
from hedui.core.custody import Totals
from hedui.core.errors import CryptoError, PolicyError
from hedui.core.policy.book import PolicyBook
from hedui.custodian.errors import Refused
from hedui.custodian.judges import Judges
from hedui.proto.v1 import audit_pb2, common_pb2, connector_pb2
from tests.custodian.test_keeper import AS_OF, LOG_KEY, MEMBERS, ORIGIN, grant_for, request_entry

KEY = Ed25519PrivateKey.generate()
TODAY = dt.date(2026, 1, 6)


def _judges() -> Judges:
    return Judges(PolicyBook.builtin(), KEY, today=lambda: TODAY)


def _entry(query_id: str, **request: Any) -> bytes:
    e = request_entry(query_id)
    for k, v in request.items():
        setattr(e.request, k, v)
    return e.SerializeToString()


def test_members_other_than_the_grants_are_refused_before_decrypting() -> None:
    grant = grant_for("q1", ["hrss"], [[bytes(32)]])
    other = [
        connector_pb2.Member(relation=connector_pb2.HEAD, birth_date="1990-01-01", applicant=True)
    ]
    with pytest.raises(Refused, match="not the ones the registry bound"):
        _judges().cases(grant, [_entry("q1")], [other])
    # an unknown relation (a newer registry's) is a different household, not a crash
    odd = [connector_pb2.Member(relation=99, birth_date="1980-03-01", applicant=True, signed=True)]  # type: ignore[arg-type]
    with pytest.raises(Refused, match="not the ones the registry bound"):
        _judges().cases(grant, [_entry("q1")], [odd])
    (case,) = _judges().cases(grant, [_entry("q1")], [MEMBERS])
    assert case.as_of.isoformat() == AS_OF and len(case.members) == 1


def test_a_grant_of_an_older_registry_is_named_as_such() -> None:
    grant = grant_for("q2", ["hrss"], [[bytes(32)]])
    old = dataclasses.replace(
        grant, bindings=tuple(dataclasses.replace(b, composition=b"") for b in grant.bindings)
    )
    with pytest.raises(Refused, match="registry is older"):
        _judges().cases(old, [_entry("q2")], [MEMBERS])


def test_a_request_dated_after_today_is_refused() -> None:
    """Found by review: the service chose as_of freely; a future date moves members' ages."""
    grant = grant_for("q3", ["hrss"], [[bytes(32)]])
    later = dataclasses.replace(grant)
    with pytest.raises(Refused, match="after today"):
        Judges(PolicyBook.builtin(), KEY, today=lambda: dt.date(2025, 12, 1)).cases(
            later, [_entry("q3")], [MEMBERS]
        )


def test_a_policy_that_fails_for_one_household_refuses_it_alone_in_the_signed_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    judges = _judges()
    grant = grant_for("q4", ["hrss"], [[bytes(32)]])
    (case,) = judges.cases(grant, [_entry("q4")], [MEMBERS])

    def fail(*_: Any) -> Any:
        raise PolicyError("no dibao_standard in force on 2026-01-05")

    monkeypatch.setattr(judges.policy, "apply", fail)
    j = judges.judge("q4", 0, case, Totals({}), {})
    judged = judgement.verify(KEY.public_key(), j)
    assert judged.statement is None and "dibao_standard" in judged.record.refused


def test_the_statement_and_the_record_must_agree() -> None:
    judges = _judges()
    grant = grant_for("q5", ["hrss"], [[bytes(32)]])
    (case,) = judges.cases(grant, [_entry("q5")], [MEMBERS])
    j = judges.judge("q5", 0, case, Totals({}), {})
    judged = judgement.verify(KEY.public_key(), j)
    assert judged.statement is not None
    assert judged.record.decision == judged.statement.decision == common_pb2.NEEDS_REVIEW
    with pytest.raises(CryptoError):
        judgement.verify(Ed25519PrivateKey.generate().public_key(), j)


def test_the_auditor_finds_a_verdict_entry_that_is_not_what_the_custodian_signed(
    tmp_path: Any,
) -> None:
    log = AuditLog(
        LogStore(open_log_engine(f"sqlite:///{tmp_path / 'log.db'}")),
        origin=ORIGIN,
        signing_key=LOG_KEY,
    )
    judges = _judges()
    grant = grant_for("q6", ["hrss"], [[bytes(32)]] * 2)
    requests = [_entry("q6", request_id=f"r{i}") for i in range(2)]
    log.append([audit_pb2.AuditEntry.FromString(e) for e in requests])
    cases = judges.cases(grant, requests, [MEMBERS] * 2)
    verdicts = []
    for h, case in enumerate(cases):
        j = judges.judge("q6", h, case, Totals({}), {})
        record = judgement.verify(KEY.public_key(), j).record
        v = audit_pb2.VerdictEntry(
            request_id=record.request_id,
            query_id="q6",
            program=record.program,
            region=record.region,
            as_of=record.as_of,
            applicant_audit_token=record.applicant_audit_token,
            decision=record.decision,
            rules=record.rules,
            policy_version=record.policy_version,
            household_size=record.household_size,
            judgement_record=j.record,
            judgement_signature=j.signature,
        )
        verdicts.append(v)
    honest, changed = verdicts
    changed.decision = common_pb2.ELIGIBLE  # what the service relays is not what was signed
    older = audit_pb2.VerdictEntry(request_id="r-old", decision=common_pb2.INELIGIBLE)
    log.append([audit_pb2.AuditEntry(verdict=v) for v in (honest, changed, older)])
    from hedui.audit.auditor import StoreSource

    check = check_judgements(StoreSource(log.store), log.store.size(), KEY.public_key())
    assert check.checked == 1 and check.without == 1
    assert check.problems == ["entry 3: decision not as the key custodian signed"]
    # a record signed by another key is not the custodian's
    check = check_judgements(
        StoreSource(log.store), log.store.size(), Ed25519PrivateKey.generate().public_key()
    )
    assert len(check.problems) == 2 and "not signed by the key custodian" in check.problems[0]
