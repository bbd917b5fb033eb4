"""Campaigns: standing authorisations registered with the registry by the bureau that signed them.

A re-verification (复核) or a monitoring enrolment (主动发现) checks households without their
members' signatures, under a dated document of the civil-affairs bureau. Whether a check stands
on such a document is not the verification service's word, nor an intake system's: the bureau
(certificate role ``bureau``) registers the document here (number, kind, programme, dates,
digest) with its roster of households, and the registry answers a household "under a standing
authorisation" only when it is on the roster of a registered campaign in force for the
programme asked about (:meth:`Campaigns.covering`). The roster is kept as register household ids:
a household that gains or loses members stays on it; an ID number that is not in the register is
reported by its position and never stored.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import grpc
from sqlalchemy.exc import SQLAlchemyError

from hedui.connectors.errors import ConnectorError
from hedui.connectors.store import CampaignRow, RegisterStore
from hedui.core import rpc
from hedui.core.clock import DEPLOYMENT, Clock, parse_date
from hedui.core.errors import InvalidResidentId
from hedui.core.resident_id import CASE_NUMBER, NOTE
from hedui.core.resident_id import parse as parse_id
from hedui.proto.v1 import connector_pb2, connector_pb2_grpc

log = logging.getLogger("hedui.connectors.campaigns")

MAX_YEARS = 3  # the longest a campaign is in force
MAX_TITLE = 128
ROSTER_PART = 1024  # ID numbers per RosterPart at most
MAX_ROSTER = 5_000_000
MAX_LISTED_UNKNOWN = 1000
_PROGRAM = re.compile(r"[a-z][a-z0-9_]{0,31}")
KIND_NAMES = {
    connector_pb2.RECHECK: "recheck (复核)",
    connector_pb2.MONITORING: "monitoring (主动发现)",
}


class CampaignInvalid(ConnectorError):
    """A campaign header or roster the registry will not register: (field, description)."""

    def __init__(self, field: str, description: str) -> None:
        self.field = field
        self.description = description
        super().__init__(f"{field}: {description}")


@dataclass(frozen=True)
class Covered:
    """A campaign in force for a programme, and the households of it on its roster."""

    campaign: CampaignRow
    households: frozenset[str]


def canonical_number(number: str) -> str:
    """A document number in the one form the registry registers: NFKC (full-width digits and
    letters half-width; the brackets 〔〕 are kept), spaces collapsed and trimmed, so that two
    numbers that look the same are one campaign."""
    return " ".join(unicodedata.normalize("NFKC", number).split())


def _date(text: str, field: str) -> dt.date:
    try:
        return parse_date(text)  # YYYY-MM-DD only: stored and compared as text
    except ValueError:
        raise CampaignInvalid(field, "a date YYYY-MM-DD is required") from None


def _years_later(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def check_header(h: connector_pb2.Campaign, today: dt.date) -> None:
    """Raise :class:`CampaignInvalid` for the first thing wrong with a campaign's header."""
    if (problem := CASE_NUMBER.problem(h.number)) is not None:
        raise CampaignInvalid("number", problem)
    if h.number != canonical_number(h.number):
        raise CampaignInvalid(
            "number",
            "write it in its one form: half-width digits and letters (NFKC), no leading, "
            f"trailing or repeated spaces ({canonical_number(h.number)!r})",
        )
    if h.kind not in KIND_NAMES:
        raise CampaignInvalid("kind", "RECHECK (复核) or MONITORING (主动发现)")
    if not _PROGRAM.fullmatch(h.program):
        raise CampaignInvalid("program", "a programme name such as dibao")
    if len(h.title) > MAX_TITLE or (problem := NOTE.problem(h.title)) is not None:
        raise CampaignInvalid("title", problem or f"at most {MAX_TITLE} characters")
    issued = _date(h.issued_on, "issued_on")
    until = _date(h.valid_until, "valid_until")
    if issued > today:
        raise CampaignInvalid("issued_on", f"{h.issued_on} is after today ({today.isoformat()})")
    if until < today:
        raise CampaignInvalid("valid_until", f"{h.valid_until} has passed")
    if until > _years_later(issued, MAX_YEARS):
        raise CampaignInvalid(
            "valid_until", f"at most {MAX_YEARS} years after issued_on ({h.issued_on})"
        )
    if len(h.document_sha256) != 32:
        raise CampaignInvalid("document_sha256", "the SHA-256 of the signed document (32 bytes)")


def to_pb(row: CampaignRow) -> connector_pb2.Campaign:
    return connector_pb2.Campaign(
        number=row.number,
        kind=row.kind,  # type: ignore[arg-type]
        program=row.program,
        title=row.title,
        issued_on=row.issued_on,
        valid_until=row.valid_until,
        document_sha256=row.document_sha256,
        households=row.households,
        registered_by=row.registered_by,
        registered_unix_ms=row.registered_unix_ms,
    )


@dataclass(frozen=True)
class Registered:
    campaign: CampaignRow
    unknown_positions: tuple[int, ...]  # 1-based roster positions not in the register
    duplicates: int


class Campaigns:
    """The campaigns registered with this registry, and which households they cover."""

    def __init__(self, store: RegisterStore, clock: Clock = DEPLOYMENT) -> None:
        self._store = store
        self._clock = clock

    def register(
        self, header: connector_pb2.Campaign, roster: Iterable[Sequence[str]], by: str
    ) -> Registered | None:
        """Register ``header`` with the households of ``roster`` (parts of ID numbers); None
        when its number is registered already. CampaignInvalid for a malformed one."""
        today = self._clock.today()
        check_header(header, today)
        households: set[str] = set()
        unknown: list[int] = []
        position = duplicates = 0
        for part in roster:
            if len(part) > ROSTER_PART:
                raise CampaignInvalid("roster", f"at most {ROSTER_PART} ID numbers per part")
            parsed: list[tuple[int, str]] = []
            for raw in part:
                position += 1
                try:
                    parsed.append((position, parse_id(raw, today=today).value))
                except InvalidResidentId:
                    unknown.append(position)
            if position > MAX_ROSTER:
                raise CampaignInvalid("roster", f"at most {MAX_ROSTER} lines")
            found = self._store.household_ids([v for _, v in parsed])
            for pos, value in parsed:
                household = found.get(value)
                if household is None:
                    unknown.append(pos)
                elif household in households:
                    duplicates += 1
                else:
                    households.add(household)
        if not households:
            raise CampaignInvalid("roster", "no household of the roster is in the register")
        row = CampaignRow(
            number=header.number,
            kind=int(header.kind),
            program=header.program,
            title=header.title,
            issued_on=header.issued_on,
            valid_until=header.valid_until,
            document_sha256=bytes(header.document_sha256),
            households=len(households),
            registered_by=by,
            registered_unix_ms=int(self._clock.now().timestamp() * 1000),
        )
        if not self._store.add_campaign(row, sorted(households)):
            return None
        log.info(
            "campaign %s registered by %s: %d household(s), %d roster line(s) not in the "
            "register, %d duplicate(s)",
            header.number,
            by,
            len(households),
            len(unknown),
            duplicates,
        )
        return Registered(row, tuple(sorted(unknown)), duplicates)

    def list(self, number: str = "") -> list[CampaignRow]:
        return self._store.campaigns(number)

    def covering(
        self, number: str, program: str, household_ids: Sequence[str], today: dt.date
    ) -> Covered | str:
        """Campaign ``number`` if it is registered and in force for ``program`` today, with
        those of ``household_ids`` on its roster; else why not (the registry's words)."""
        rows = self._store.campaigns(number)
        if not rows:
            return f"campaign {number!r} is not registered with the household registry"
        row = rows[0]
        if row.program != program:
            return f"campaign {number!r} is for {row.program}, not {program}"
        if today.isoformat() < row.issued_on:
            return f"campaign {number!r} is in force from {row.issued_on}"
        if today.isoformat() > row.valid_until:
            return f"campaign {number!r} ended on {row.valid_until}"
        return Covered(row, frozenset(self._store.on_roster(number, household_ids)))


def _parts(
    request_iterator: Iterator[connector_pb2.CampaignPart], context: grpc.ServicerContext
) -> Iterator[list[str]]:
    for part in request_iterator:
        if part.WhichOneof("part") != "roster":
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "after the header, only roster parts",
                rpc.bad_request("roster", "one header first, then roster parts"),
            )
        yield list(part.roster.id_numbers)


class CampaignServicer(connector_pb2_grpc.CampaignServiceServicer):
    def __init__(self, campaigns: Campaigns) -> None:
        self._campaigns = campaigns

    def RegisterCampaign(
        self,
        request_iterator: Iterator[connector_pb2.CampaignPart],
        context: grpc.ServicerContext,
    ) -> connector_pb2.CampaignReceipt:
        if rpc.caller(context).role not in ("bureau", "insecure"):
            rpc.abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                "a campaign is registered by the bureau that signed it (certificate role bureau)",
            )
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "the campaign's header comes first",
                rpc.bad_request("header", "one header first, then roster parts"),
            )
        by = rpc.caller(context).name
        try:
            done = self._campaigns.register(first.header, _parts(request_iterator, context), by)
        except CampaignInvalid as e:
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"invalid campaign: {e.field}: {e.description}",
                rpc.bad_request(e.field, e.description),
            )
        except SQLAlchemyError as e:
            log.error("registry database error: %s", type(e).__name__)
            rpc.abort(context, grpc.StatusCode.INTERNAL, "the campaign register is not available")
        if done is None:
            rpc.abort(
                context,
                grpc.StatusCode.ALREADY_EXISTS,
                f"campaign {first.header.number!r} is registered already",
            )
        return connector_pb2.CampaignReceipt(
            campaign=to_pb(done.campaign),
            unknown_positions=list(done.unknown_positions[:MAX_LISTED_UNKNOWN]),
            unknown=len(done.unknown_positions),
            duplicates=done.duplicates,
        )

    def ListCampaigns(
        self, request: connector_pb2.ListCampaignsRequest, context: grpc.ServicerContext
    ) -> connector_pb2.ListCampaignsResponse:
        try:
            rows = self._campaigns.list(request.number)
        except SQLAlchemyError as e:
            log.error("registry database error: %s", type(e).__name__)
            rpc.abort(context, grpc.StatusCode.INTERNAL, "the campaign register is not available")
        return connector_pb2.ListCampaignsResponse(campaigns=[to_pb(r) for r in rows])
