"""A verdict and its audit entries in their wire forms (no ID number, no figure in an entry)."""

from __future__ import annotations

from collections.abc import Sequence

from hedui.audit.log import Receipt
from hedui.core.clock import is_adult
from hedui.core.policy.engine import Member
from hedui.core.resident_id import ResidentId
from hedui.proto.v1 import audit_pb2, common_pb2, connector_pb2, verification_pb2
from hedui.server.application import Application

# the fields a request entry and its outcome entry share
REQUEST_FIELDS = (
    "caseworker_id",
    "request_id",
    "program",
    "region",
    "consent_reference",
    "applicant_audit_token",
    "as_of",
    "query_id",
)


def purged_message(kept: verification_pb2.Verdict) -> str:
    return (
        f"request {kept.request_id!r} was decided ({common_pb2.Decision.Name(kept.decision)}, "
        f"audit entry {kept.audit.leaf_index}); its figures were purged after the retention "
        "period: the decision is in the audit log, a new check needs a new request id"
    )


def household_members(
    members: Sequence[Member], app: Application
) -> list[verification_pb2.HouseholdMember]:
    """The household for the caseworker's report: relation, year of birth, the applicant's ID
    masked. ``signed``: the member is among the consent's signers as the registry matched them
    (a minor may sign too, and is counted among the signers); under a signed consent a verdict
    exists only when every adult signed it (the registry gives no tokens otherwise), so an
    adult's ``signed`` is true whatever the registry says."""
    resident, consent, as_of = app.resident, app.consent, app.as_of
    applicant = resident.masked() if isinstance(resident, ResidentId) else ""
    return [
        verification_pb2.HouseholdMember(
            relation=connector_pb2.Relation.Value(m.relation.upper()),
            birth_year=m.birth_date.year,
            applicant=m.applicant,
            signed=not consent.standing and (m.signed or is_adult(m.birth_date, as_of)),
            masked_id=applicant if m.applicant else "",
        )
        for m in members
    ]


def receipt_pb(r: Receipt) -> audit_pb2.AuditReceipt:
    return audit_pb2.AuditReceipt(
        leaf_index=r.leaf_index, checkpoint=r.checkpoint, inclusion_proof=list(r.inclusion_proof)
    )
