"""The authorisation of a check (授权书), as the verification service checks it.

A request carries a consent record (:class:`Consent`): the case number, the date it was signed,
the SHA-256 of the scanned signed form and the ID numbers of the household members who signed,
or, for a re-verification or monitoring campaign, the document number of a campaign the bureau
registered with the household registry (a standing authorisation: no signers). A request cannot
make itself standing: ``standing = true`` is refused, and the registry answers a campaign's
household only when it is on that campaign's registered roster.
The checks, in the order a request meets them:

1. well-formed (:func:`parse`): INVALID_ARGUMENT before anything is logged; a campaign is then
   looked up in the registry (:mod:`hedui.server.campaigns`), which gives its date and digest;
2. in force (:func:`check_in_force`): not older than the region's validity on the check date
   (dated policy parameters ``consent_validity_months`` and
   ``standing_consent_validity_months``); refused before anything is logged;
3. signed by every adult member: the household registry matches the signers against the
   register and answers a household with an unsigned adult without tokens or grant
   (:mod:`hedui.connectors.registry`), so no source can be asked; the service names the
   members masked (:func:`unsigned_members`);
4. the case number belongs to one household (:meth:`RequestBook.bind_case`): the registry's
   household pseudonym, never an ID.

The ID numbers of the signers reach the registry and nowhere else: the audit log records their
audit tokens (:meth:`Consent.record`).
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from hedui.core.clock import parse_date
from hedui.core.errors import InvalidResidentId
from hedui.core.policy.params import RegionParameters
from hedui.core.resident_id import CASE_NUMBER, ResidentId
from hedui.core.resident_id import parse as parse_id
from hedui.core.tokens import TokenKey
from hedui.proto.v1 import audit_pb2, connector_pb2, verification_pb2
from hedui.server.errors import ServiceError

MAX_CASE_NUMBER = CASE_NUMBER.max_chars
MAX_SIGNERS = 32
VALIDITY = "consent_validity_months"
STANDING_VALIDITY = "standing_consent_validity_months"


class ConsentRefused(ServiceError):
    """The consent does not cover the check: one (subject, description) per reason for the
    caller, and ``str()`` a summary for the logs and the audit entry (no masked ID there)."""

    def __init__(self, violations: Sequence[tuple[str, str]], summary: str = "") -> None:
        self.violations = tuple(violations)
        self.detail = "consent refused: " + "; ".join(d for _, d in self.violations)
        super().__init__(summary or self.detail)


@dataclass(frozen=True)
class Consent:
    case_number: str
    signed_on: dt.date
    form_sha256: bytes
    signers: tuple[ResidentId, ...]
    campaign: str = ""  # a registered campaign's document number (then no signers)
    valid_until: dt.date | None = None  # a campaign's last day, as registered (once resolved)

    @property
    def standing(self) -> bool:
        """Under a standing authorisation: a registered campaign."""
        return bool(self.campaign)

    def signatures_pb(self, program: str) -> connector_pb2.Signatures:
        """What the registry is told: who signed (the only place their ID numbers go), or the
        campaign, and what it binds into the grant."""
        return connector_pb2.Signatures(
            id_numbers=[s.value for s in self.signers],
            campaign=self.campaign,
            program=program,
            case_number="" if self.campaign else self.case_number,
            signed_on="" if self.campaign else self.signed_on.isoformat(),
            form_sha256=b"" if self.campaign else self.form_sha256,
        )

    def record(self, audit_key: TokenKey) -> audit_pb2.ConsentRecord:
        """What the audit log records: no ID number, the signers as audit tokens."""
        return audit_pb2.ConsentRecord(
            case_number=self.case_number,
            signed_on=self.signed_on.isoformat(),
            form_sha256=self.form_sha256,
            signer_audit_tokens=[audit_key.token(s) for s in self.signers],
            standing=self.standing,
            campaign=self.campaign,
        )

    def fingerprint(self) -> str:
        """The consent's part of an application's fingerprint (it is MACed, never stored)."""
        signers = ",".join(sorted(s.value for s in self.signers))
        return "\0".join(
            [
                self.case_number,
                self.signed_on.isoformat(),
                self.form_sha256.hex(),
                signers,
                f"campaign:{self.campaign}" if self.campaign else "",
            ]
        )


RETIRED_STANDING = (
    "a request cannot make itself standing: a standing authorisation is a campaign the bureau "
    "registered with the household registry (hedui campaign register); name it in "
    "consent.campaign"
)


def _campaign(pb: verification_pb2.Consent, today: dt.date) -> Consent | list[tuple[str, str]]:
    """A campaign named by its document number (its date and digest come from the registry:
    :func:`hedui.server.campaigns.CampaignBook.resolve`)."""
    violations: list[tuple[str, str]] = []
    if (problem := CASE_NUMBER.problem(pb.campaign)) is not None:
        violations.append(("consent.campaign", problem))
    for name in ("case_number", "signed_on", "form_sha256", "signer_id_numbers"):
        if getattr(pb, name):
            violations.append(
                (
                    f"consent.{name}",
                    "leave it empty with consent.campaign: the campaign's document, date and "
                    "digest are the ones the bureau registered",
                )
            )
    if violations:
        return violations
    return Consent(pb.campaign, today, b"", (), campaign=pb.campaign)


def parse(pb: verification_pb2.Consent, today: dt.date) -> Consent | list[tuple[str, str]]:
    """The consent, or every field violation (fields named "consent.<name>"). A campaign's
    consent comes back with placeholders for its date and digest until it is resolved."""
    if pb.standing:
        return [("consent.standing", RETIRED_STANDING)]
    if pb.campaign:
        return _campaign(pb, today)
    violations: list[tuple[str, str]] = []
    case = pb.case_number
    if not case:
        violations.append(
            (
                "consent.case_number",
                f"the case number of the signed consent is required "
                f"(1 to {MAX_CASE_NUMBER} characters: {CASE_NUMBER.described})",
            )
        )
    elif (problem := CASE_NUMBER.problem(case)) is not None:
        violations.append(("consent.case_number", problem))
    signed_on = None
    if not pb.signed_on:
        violations.append(("consent.signed_on", "the date the consent was signed is required"))
    else:
        try:
            signed_on = parse_date(pb.signed_on)
            if signed_on > today:
                violations.append(("consent.signed_on", f"{pb.signed_on} is in the future"))
        except ValueError:
            violations.append(
                ("consent.signed_on", f"{pb.signed_on[:40]!r} is not a date YYYY-MM-DD")
            )
    if len(pb.form_sha256) != 32:
        violations.append(
            ("consent.form_sha256", "the SHA-256 of the scanned signed form (32 bytes) is required")
        )
    signers: list[ResidentId] = []
    if not pb.signer_id_numbers:
        violations.append(
            (
                "consent.signer_id_numbers",
                "the ID numbers of the household members who signed are required "
                "(every adult member must sign)",
            )
        )
    elif len(pb.signer_id_numbers) > MAX_SIGNERS:
        violations.append(("consent.signer_id_numbers", f"at most {MAX_SIGNERS} signers"))
    else:
        for i, raw in enumerate(pb.signer_id_numbers):
            try:
                signers.append(parse_id(raw, today=today))
            except InvalidResidentId as e:
                violations.append((f"consent.signer_id_numbers[{i}]", f"{e.reason}: {e}"))
    if violations or signed_on is None:
        return violations or [("consent.signed_on", "invalid")]
    return Consent(case, signed_on, bytes(pb.form_sha256), tuple(signers))


class CampaignRefused(ConsentRefused):
    """The registry's word: the campaign named does not cover this household (not registered,
    not in force, another programme, not on its roster). Counted with the not-found answers
    towards the enumeration stop: whether a household is on a campaign's roster is what an
    enumeration under a known document number would learn."""


def _months_later(date: dt.date, months: int) -> dt.date:
    """The same day ``months`` later (the month's last day when it has no such day)."""
    years, month0 = divmod(date.month - 1 + months, 12)
    year, month = date.year + years, month0 + 1
    return dt.date(year, month, min(date.day, calendar.monthrange(year, month)[1]))


def expires_on(consent: Consent, region: RegionParameters, today: dt.date) -> dt.date:
    """The first day a consent is no longer in force (the validity in force ``today``); for a
    resolved campaign, the day after the end the bureau registered (the registry's word, which
    the registry enforces itself)."""
    if consent.campaign and consent.valid_until is not None:
        return consent.valid_until + dt.timedelta(days=1)
    name = STANDING_VALIDITY if consent.standing else VALIDITY
    return _months_later(consent.signed_on, region.get(name, today).value)


def check_in_force(consent: Consent, region: RegionParameters, today: dt.date) -> None:
    """Refuse a consent older than the region's validity on the check date (``today``)."""
    if consent.campaign:  # in force as registered: CampaignBook.resolve and the registry
        return
    expires = expires_on(consent, region, today)
    if today >= expires:
        param = region.get(STANDING_VALIDITY if consent.standing else VALIDITY, today)
        what = "standing authorisation" if consent.standing else "consent"
        raise ConsentRefused(
            [
                (
                    "consent.signed_on",
                    f"the {what} signed on {consent.signed_on.isoformat()} expired on "
                    f"{expires.isoformat()} ({param.value} months, {param.reference}); "
                    "a new signed consent is needed",
                )
            ]
        )


_RELATION_ZH = {
    "head": "户主",
    "spouse": "配偶",
    "child": "子女",
    "parent": "父母",
    "grandchild": "孙子女",
    "sibling": "兄弟姐妹",
    "other": "其他成员",
}


def unsigned_members(members: Sequence[tuple[str, dt.date, str]]) -> ConsentRefused:
    """The refusal naming each adult member who did not sign: (relation, birth date, masked ID)."""
    return ConsentRefused(
        [
            (
                "consent.signers",
                f"{relation} ({_RELATION_ZH.get(relation, relation)}) born {born.year}, "
                f"{masked}, did not sign the consent; every adult member of the household must sign",
            )
            for relation, born, masked in members
        ]
        or [("consent.signers", "an adult member of the household did not sign the consent")],
        f"consent refused: {max(1, len(members))} adult member(s) of the household did not sign",
    )


def case_reused(case_number: str) -> ConsentRefused:
    return ConsentRefused(
        [
            (
                "consent.case_number",
                f"case number {case_number!r} was already used for another household",
            )
        ]
    )
