"""Campaigns as the verification service sees them: registered with the registry, never claimed.

An application under a campaign names only its document number (``consent.campaign``). Before
anything is logged, the service looks the campaign up in the household registry (which the
bureau registered it with) and records the registered document: its date and SHA-256 become the
consent of the request entry. A campaign that is not registered, not in force on the check date,
or for another programme is refused here (FAILED_PRECONDITION, subject ``consent.campaign``);
whether a household is on its roster is the registry's word, per household, when it is asked.
This lookup is a convenience for clear errors and a faithful log: the registry checks the
campaign again for every household, so a service that skipped it would gain nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Callable

from hedui.proto.v1 import connector_pb2
from hedui.server.application import Application
from hedui.server.consent import ConsentRefused

CACHE_SECONDS = 30.0

Lookup = Callable[[str], "connector_pb2.Campaign | None"]


def _refused(description: str) -> ConsentRefused:
    return ConsentRefused([("consent.campaign", description)])


class CampaignBook:
    """The registered campaigns the service has looked up, kept for :data:`CACHE_SECONDS`."""

    def __init__(self, lookup: Lookup, clock: Callable[[], float] = time.monotonic) -> None:
        self._lookup = lookup
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, connector_pb2.Campaign | None]] = {}

    def _get(self, number: str) -> connector_pb2.Campaign | None:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(number)
        if hit is not None and now - hit[0] < CACHE_SECONDS and hit[1] is not None:
            return hit[1]
        found = self._lookup(number)  # SourceUnavailable when the registry cannot be asked
        with self._lock:
            self._cache[number] = (now, found)
        return found

    def resolve(self, app: Application, today: dt.date) -> Application:
        """The application with its campaign's registered date and digest; ConsentRefused when
        the campaign does not cover this programme today. An application with a signed consent
        is returned as it is."""
        c = app.consent
        if not c.campaign:
            return app
        found = self._get(c.campaign)
        if found is None:
            raise _refused(
                f"campaign {c.campaign!r} is not registered with the household registry; the "
                "bureau that signed it registers it (hedui campaign register)"
            )
        if found.program != app.program:
            raise _refused(f"campaign {c.campaign!r} is for {found.program}, not {app.program}")
        if not found.issued_on <= today.isoformat() <= found.valid_until:
            raise _refused(
                f"campaign {c.campaign!r} is in force from {found.issued_on} to "
                f"{found.valid_until}, not on {today.isoformat()}"
            )
        consent = dataclasses.replace(
            c,
            case_number=found.number,
            signed_on=dt.date.fromisoformat(found.issued_on),
            form_sha256=bytes(found.document_sha256),
            valid_until=dt.date.fromisoformat(found.valid_until),
        )
        return dataclasses.replace(app, consent=consent)
