"""A re-check the authorisation no longer covers is finished, not retried for ever (issue #23
review): eight watches enrolled before campaigns were registered (their old standing document
is not a registered campaign) used to hold the queue's head, and no other watch was re-checked."""

from __future__ import annotations

import datetime as dt
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import create_engine, insert

from hedui.proto.v1 import common_pb2, verification_pb2
from hedui.server.consent import ConsentRefused
from hedui.server.monitor import Monitor, _current
from hedui.server.schema import Base
from hedui.server.watchlist import MonitorEventRow, WatchList, WatchRow

TODAY = dt.date(2026, 12, 7)
OLD = verification_pb2.Consent(
    case_number="民监〔2025〕1号", signed_on="2025-06-01", form_sha256=bytes(32), standing=True
)
NEW = verification_pb2.Consent(campaign="民监〔2026〕3号")


def test_refused_rechecks_are_finished_and_the_others_rechecked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    watches = WatchList(engine, lambda: TODAY, lambda: 1_000)
    with engine.begin() as c:
        for i in range(9):
            c.execute(
                insert(WatchRow).values(
                    watch_id=f"w{i}", enrol_key=bytes([i]) * 32, pseudonym=bytes([i]) * 32,
                    program="dibao", region="demo", district="330106",
                    masked="3301**********11", applicant_token=bytes(32), handle=bytes(32),
                    consent=(OLD if i < 8 else NEW).SerializeToString(), until="2027-06-01",
                    enrolled_on="2025-07-01", enrolled_by="intake", decision="ELIGIBLE",
                )
            )  # fmt: skip
            c.execute(
                insert(MonitorEventRow).values(
                    watch_id=f"w{i}", connector_id="hrss", kind="job_started",
                    occurred_on="2026-12-01", received_ms=1, state="queued", attempts=0,
                )
            )  # fmt: skip
    # an old standing watch re-checks under the campaign of its document number
    assert _current(OLD).campaign == "民监〔2025〕1号"

    def check(app: Any, caller: Any) -> tuple[verification_pb2.Verdict, None]:
        if app.consent.campaign == "民监〔2025〕1号":  # what CampaignBook.resolve says of it
            raise ConsentRefused([("consent.campaign", "campaign is not registered")])
        return verification_pb2.Verdict(decision=common_pb2.ELIGIBLE), None

    verifier = SimpleNamespace(now=lambda: dt.datetime(2026, 12, 7, 10), check=check)
    monitor = Monitor(verifier, watches, alerts=None)  # type: ignore[arg-type]
    monitor.rules = lambda region=None: SimpleNamespace(rule=lambda kind: None)  # type: ignore[method-assign,assignment,return-value]
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            monitor.work("replica-1")
    with engine.connect() as c:
        rows = c.execute(MonitorEventRow.__table__.select()).mappings().all()
    assert all(r["state"] == "done" and r["attempts"] == 1 for r in rows), rows
    assert sum("refused for good" in r.message for r in caplog.records) == 8
