"""`hedui audit show/export` turn every kind of entry into JSON, the consent record included."""

from __future__ import annotations

import json

from hedui.audit.auditor import describe_entry
from hedui.proto.v1 import audit_pb2


def test_an_entry_with_a_consent_record_exports_as_json() -> None:
    entry = audit_pb2.AuditEntry(caller="intake", caller_role="intake")
    entry.request.request_id = "r-1"
    entry.request.consent.CopyFrom(
        audit_pb2.ConsentRecord(
            case_number="2026-001",
            signed_on="2026-11-20",
            form_sha256=b"\x01" * 32,
            signer_audit_tokens=[b"\x02" * 32],
        )
    )
    d = json.loads(json.dumps(describe_entry(entry.SerializeToString())))
    assert d["consent"] == {
        "case_number": "2026-001",
        "signed_on": "2026-11-20",
        "form_sha256": "01" * 32,
        "signer_audit_tokens": ["02" * 32],
        "standing": False,
    }
