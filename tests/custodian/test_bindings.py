"""The custodian decrypts only when the logged request entries name, household for household and
in the grant's order, the applicants and authorisations the registry bound the grant to (#23)."""

from __future__ import annotations

import time

import pytest

from hedui.core import grants
from hedui.custodian.errors import Refused
from hedui.custodian.keeper import _check_bindings, binding_of_entry
from hedui.proto.v1 import audit_pb2
from tests.custodian.test_keeper import AUTHORITY


def _entry(applicant: bytes, case: str = "C-1", program: str = "dibao") -> bytes:
    return audit_pb2.AuditEntry(
        request=audit_pb2.RequestEntry(
            query_id="q",
            program=program,
            applicant_audit_token=applicant,
            consent=audit_pb2.ConsentRecord(
                case_number=case, signed_on="2026-12-01", form_sha256=bytes(32)
            ),
        )
    ).SerializeToString()


def _grant(bindings: list[grants.Binding]) -> grants.Grant:
    return grants.issue(
        AUTHORITY,
        query_id="q",
        epoch=1,
        households=len(bindings),
        issued_unix_ms=int(time.time() * 1000),
        digests={"hrss": bytes(32)},
        bindings=bindings,
    )


A, B = _entry(b"a" * 32), _entry(b"b" * 32)


def test_the_log_must_name_the_granted_households_in_order() -> None:
    _check_bindings(_grant([binding_of_entry(A), binding_of_entry(B)]), [A, B])
    refused = [
        ([binding_of_entry(B), binding_of_entry(A)], [A, B]),  # swapped within the query
        ([binding_of_entry(B)], [A]),  # logged A, granted B
        ([binding_of_entry(A), binding_of_entry(A)], [A, B]),  # A twice
        ([binding_of_entry(_entry(b"a" * 32, case="C-2"))], [A]),  # another consent
        ([binding_of_entry(_entry(b"a" * 32, program="tekun"))], [A]),  # another programme
    ]
    for bindings, entries in refused:
        with pytest.raises(Refused, match="not the applicants or authorisations"):
            _check_bindings(_grant(bindings), entries)


def test_a_grant_without_bindings_names_the_older_registry() -> None:
    old = grants.Grant("q", 1, 1, int(time.time() * 1000), (("hrss", bytes(32)),))
    with pytest.raises(Refused, match="older than grant bindings"):
        _check_bindings(old, [A])
