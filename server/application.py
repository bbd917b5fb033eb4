"""An application as the pipeline takes it: validated, with its caller's request id."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from hedui.core.resident_id import ResidentId
from hedui.server.consent import Consent


@dataclass(frozen=True)
class Monitored:
    """A monitored household's applicant, named by the handle the registry issued at enrolment
    (the service keeps no ID number) and the audit token computed then."""

    handle: bytes
    audit_token: bytes


@dataclass(frozen=True)
class Application:
    request_id: str
    resident: ResidentId | Monitored
    program: str
    region: str
    consent: Consent
    as_of: dt.date
    as_of_requested: str = ""  # as sent: empty means "today", so a retry after midnight matches
    caseworker_id: str = ""  # the intake system's user who asked, if it says
    monitor_until: dt.date | None = None  # ask the registry for a monitoring handle

    @property
    def policy_subject(self) -> str:
        """The programme, region and date a policy refusal is about."""
        return f"{self.program}/{self.region}/{self.as_of}"
