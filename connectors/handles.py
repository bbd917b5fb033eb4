"""Monitoring handles held by the registry (issue #23): the service holds a handle, the registry
its record, and neither alone re-checks a household.

A 主动发现 enrolment asks the registry for a handle so that later re-checks need no ID number. The
handle is 32 random bytes; the registry keeps, under its SHA-256, whom it names, the monitoring
campaign and programme it was issued under and its end date (table ``monitoring_handle``). A
handle is honoured only with its own campaign and programme, until its end, and renewed only
within its campaign (the campaign's end is checked with the roster,
:func:`hedui.connectors.registry._not_covered`). Every use is counted on the record and logged
with the query id, so the registry's operator sees each re-check a handle made. A handle copied
out of the service's database names nobody to anyone but this registry, and the registry's
record decides what it may still do.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets

from hedui.connectors.store import MonitoringHandle, RegisterStore
from hedui.connectors.token_authority import HandleRefused
from hedui.core.clock import DEPLOYMENT, Clock
from hedui.proto.v1 import connector_pb2

log = logging.getLogger("hedui.connectors.handles")

HANDLE_BYTES = 32


def handle_digest(handle: bytes) -> bytes:
    return hashlib.sha256(b"hedui/monitoring-handle/v2\0" + handle).digest()


class MonitoringHandles:
    def __init__(self, store: RegisterStore, clock: Clock = DEPLOYMENT) -> None:
        self._store = store
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock.now().timestamp() * 1000)

    def issue(self, id_number: str, signatures: connector_pb2.Signatures, until: dt.date) -> bytes:
        """A new handle naming ``id_number`` under the request's campaign until ``until``."""
        handle = secrets.token_bytes(HANDLE_BYTES)
        self._store.add_handle(
            MonitoringHandle(
                digest=handle_digest(handle),
                id_number=id_number,
                campaign=signatures.campaign,
                program=signatures.program,
                until=until.isoformat(),
                issued_unix_ms=self._now_ms(),
                uses=0,
                last_used_unix_ms=0,
            )
        )
        log.info(
            "monitoring handle %s issued under campaign %s until %s",
            handle_digest(handle)[:6].hex(),
            signatures.campaign,
            until.isoformat(),
        )
        return handle

    def open(
        self, handle: bytes, signatures: connector_pb2.Signatures, today: dt.date, query_id: str
    ) -> str:
        """The ID number a handle names, its use counted and logged; HandleRefused when the
        registry has no record of it, it ended, or it is used under another campaign or
        programme than it was issued for."""
        digest = handle_digest(handle)
        row = (
            self._store.use_handle(digest, self._now_ms()) if len(handle) == HANDLE_BYTES else None
        )
        if row is None:
            raise HandleRefused(
                "the monitoring handle is not one this registry holds a record of (a handle "
                "issued before handles were recorded needs the household enrolled again)"
            )
        log.info(
            "monitoring handle %s used for query %s (use %d), campaign %s",
            digest[:6].hex(),
            query_id[:128],
            row.uses,
            row.campaign,
        )
        if today.isoformat() > row.until:
            raise HandleRefused(f"the monitoring handle ended on {row.until}")
        if signatures.campaign != row.campaign or signatures.program != row.program:
            raise HandleRefused(
                f"the monitoring handle was issued under campaign {row.campaign!r} for "
                f"{row.program}, not this one"
            )
        return row.id_number

    def renew(self, handle: bytes, until: dt.date) -> None:
        """Move a handle's end to ``until`` (its campaign's end was checked by the caller)."""
        self._store.use_handle(handle_digest(handle), self._now_ms(), until.isoformat())
        log.info("monitoring handle %s renewed until %s", handle_digest(handle)[:6].hex(), until)
