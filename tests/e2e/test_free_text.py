"""Issue #24 item 5 through the real path: the seven encodings of an ID number that passed the
earlier free-text check (tests/core/test_free_text.py) are sent to a running deployment as the
request id, the caseworker id and the case number of a Verify; each is INVALID_ARGUMENT with a
BadRequest naming the field and a description that does not repeat the value, and afterwards no
log file and no database of the deployment (the register aside) holds the number or the text."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2

from hedui.core.rpc import error_details
from hedui.proto.v1 import verification_pb2
from tests.core.test_free_text import ENCODINGS, ID
from tests.e2e.conftest import Up, consent_for, grpc_code

FIELDS = ("request_id", "caseworker_id", "consent.case_number")


def _request(up: Up, field: str, text: str, n: int) -> verification_pb2.VerifyRequest:
    _, applicant = up.summary.applicants[22]
    consent = consent_for(up.summary, applicant, case=f"free-text-{n}")
    r = verification_pb2.VerifyRequest(
        request_id=f"free-text-{n}",
        id_number=applicant,
        program="dibao",
        consent=consent,
        caseworker_id="cw-1",
    )
    if field == "consent.case_number":
        r.consent.case_number = text
    else:
        setattr(r, field, text)
    return r


def test_an_id_in_any_encoding_is_refused_and_reaches_no_log(up: Up) -> None:
    assert all(ID not in ids for ids in up.summary.members.values())  # not a resident
    stub = up.stub()
    n = 0
    for field in FIELDS:
        for name, text in sorted(ENCODINGS.items()):
            n += 1
            try:
                stub.Verify(_request(up, field, text, n), timeout=30)
            except grpc.RpcError as e:
                assert grpc_code(e) == grpc.StatusCode.INVALID_ARGUMENT, (field, name)
                assert isinstance(e, grpc.Call)
                violations = [
                    (v.field, v.description)
                    for d in error_details(e)
                    if isinstance(d, error_details_pb2.BadRequest)
                    for v in d.field_violations
                ]
                assert [f for f, _ in violations] == [field], (name, violations)
                assert "resident ID number" in violations[0][1], (field, name)
                for said in (violations[0][1], e.details() or ""):
                    assert text not in said and ID[:6] not in said, (field, name)
            else:
                raise AssertionError(f"{field} = {name} was accepted")
    # a plain request of the same shape goes through: the refusals were the text's
    plain = _request(up, "request_id", "free-text-plain", 0)
    plain.consent.case_number = "民政〔2026〕12号"
    assert stub.Verify(plain, timeout=120).request_id == "free-text-plain"
    stores = [
        *up.workdir.root.glob("parties/*/db/*"),
        *up.workdir.log_dir.glob("*"),
        *up.workdir.root.glob("parties/*/*.log"),
    ]
    assert len(stores) > 80
    needles = {ID[:17].encode(), ID[:17][::-1].encode()}
    needles |= {text.encode() for text in ENCODINGS.values()}
    for path in (p for p in stores if p.name != "registry.sqlite" and p.is_file()):
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, (path, needle)
