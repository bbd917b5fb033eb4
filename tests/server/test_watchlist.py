"""The watch-list's matching (issue #13), on the service's migrated schema with the demo region's
rules: only events about watched households are queued; an amount is queued once, when the
running total crosses 40,000 yuan; a watch past its end date matches nothing; nothing about an
unwatched person is stored."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from hedui.core.policy.book import PolicyBook
from hedui.server.requests import RequestBook
from hedui.server.watchlist import IncomingEvent, WatchList

DAY = dt.date(2026, 11, 20)
WATCHED, STRANGER = secrets.token_bytes(32), secrets.token_bytes(32)


@pytest.fixture
def watch(tmp_path: Path) -> tuple[WatchList, list[dt.date], str]:
    url = f"sqlite:///{tmp_path / 'service.db'}"
    RequestBook(url).close()  # the state's schema, by migration
    today = [DAY]
    wl = WatchList(create_engine(url), lambda: today[0], lambda: 1_000)
    w = wl.enrol(
        enrol_key=b"k" * 32,
        pseudonym=b"p" * 32,
        program="dibao",
        region="demo",
        district="330281",
        masked="330**************7",
        applicant_token=b"t" * 32,
        handle=b"h" * 60,
        consent=b"c",
        until=DAY + dt.timedelta(days=30),
        enrolled_by="intake",
        decision="INELIGIBLE",
        tokens={"medical": [WATCHED, b"f" * 32], "civil": [WATCHED]},
    )
    return wl, today, w.watch_id


RULES = PolicyBook.builtin().regions["demo"].monitoring


def _event(token: bytes, kind: str = "medical_self_pay", amount: int = 0) -> IncomingEvent:
    return IncomingEvent(
        "medical" if kind == "medical_self_pay" else "civil", token, kind, DAY, amount
    )


def test_only_watched_people_are_queued_and_an_amount_once_when_it_crosses(
    watch: tuple[WatchList, list[dt.date], str], tmp_path: Path
) -> None:
    wl, _, watch_id = watch
    assert RULES is not None
    queued = wl.match(
        [_event(STRANGER, amount=9_000_000), _event(WATCHED, amount=3_999_999)], RULES
    )
    assert queued == []  # a stranger dropped; the watched person below 40,000 yuan
    queued = wl.match([_event(WATCHED, amount=4_000_000), _event(STRANGER, "death")], RULES)
    assert [(q.watch_id, q.kind) for q in queued] == [(watch_id, "medical_self_pay")]
    assert wl.match([_event(WATCHED, amount=4_500_000)], RULES) == []  # still over: once
    assert wl.match([_event(WATCHED, amount=100)], RULES) == []  # back under
    assert len(wl.match([_event(WATCHED, amount=4_100_000)], RULES)) == 1  # crosses again
    assert [q.kind for q in wl.match([_event(WATCHED, "death")], RULES)] == ["death"]
    # nothing about the stranger in the database, and no amount at all
    blob = (tmp_path / "service.db").read_bytes()
    assert STRANGER not in blob
    with wl._engine.connect() as conn:
        levels = conn.execute(text("SELECT * FROM event_level")).mappings().all()
    assert [dict(r)["over"] for r in levels] == [1]
    assert not any(str(v) in ("4000000", "4100000", "4500000") for r in levels for v in r.values())


def test_a_watch_past_its_end_matches_nothing(watch: tuple[WatchList, list[dt.date], str]) -> None:
    wl, today, _ = watch
    assert RULES is not None
    today[0] = DAY + dt.timedelta(days=31)
    assert wl.match([_event(WATCHED, "death")], RULES) == []


def test_queued_events_are_claimed_once_and_given_back_on_failure(
    watch: tuple[WatchList, list[dt.date], str],
) -> None:
    wl, _, _ = watch
    assert RULES is not None
    (q,) = wl.match([_event(WATCHED, "death")], RULES)
    assert [t.event_id for t in wl.take("a")] == [q.event_id]
    assert wl.take("b") == []  # claimed, within its lease
    wl.release(q.event_id)
    assert [t.event_id for t in wl.take("b")] == [q.event_id]
    wl.finish(q.event_id, None, "the decision did not change")
    assert wl.take("c") == [] and wl.pending() == 0
