"""Issue #24 item 5 on the service's side: the case number of a consent, an alert's note and the
caseworker who takes an alert step are refused, by field name and without the value, when they
may carry an ID number (the seven encodings of tests/core/test_free_text.py) or leave their
character set; nothing is stored then."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from hedui.clients.consent import signed_consent
from hedui.server import consent
from hedui.server.alerts import AlertBook, AlertTextError, NewAlert
from hedui.server.requests import RequestBook, StateSealer
from tests.core.test_free_text import ENCODINGS, ID

DAY = dt.date(2026, 11, 2)


@pytest.fixture
def alerts(tmp_path: Path) -> AlertBook:
    url = f"sqlite:///{tmp_path / 'service.db'}"
    RequestBook(url).close()
    ids = (f"a{n:03d}" for n in itertools.count(1))
    book = AlertBook(
        create_engine(url), lambda: DAY, lambda: next(ids), sealer=StateSealer(b"s" * 32)
    )
    book.raise_alert(
        NewAlert(
            "w1",
            "330102",
            "330**************2",
            "dibao",
            "death",
            DAY,
            "INELIGIBLE",
            "ELIGIBLE",
            126000,
            "",
        ),
        deadline_days=15,
        escalate_after_days=5,
    )
    return book


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_a_case_number_holding_an_id_is_refused(name: str) -> None:
    text = ENCODINGS[name]
    c = signed_consent(text, DAY, b"f" * 32, ["110105194912310021"])
    violations = consent.parse(c, DAY)
    assert isinstance(violations, list)
    found = [d for f, d in violations if f == "consent.case_number"]
    assert found and "resident ID number" in found[0], name
    assert text not in found[0] and ID[:6] not in found[0]


@pytest.mark.parametrize("case", ["2026-001", "民政〔2026〕12号", "case-H000123"])
def test_a_plain_case_number_passes(case: str) -> None:
    violations = consent.parse(signed_consent(case, DAY, b"f" * 32, ["x"]), DAY)
    assert isinstance(violations, list)  # the signer "x" is not an ID number
    assert not [f for f, _ in violations if f == "consent.case_number"]


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_a_note_or_caseworker_holding_an_id_is_refused_and_nothing_is_stored(
    alerts: AlertBook, name: str
) -> None:
    text = ENCODINGS[name]
    with pytest.raises(AlertTextError, match="resident ID number") as e:
        alerts.close("a001", "intake/cw-1", "visited", f"visited; {text}")
    assert e.value.field == "note" and text not in str(e.value)
    with pytest.raises(AlertTextError) as e:
        alerts.accept("a001", f"intake/{text}")
    assert e.value.field == "caseworker_id" and text not in str(e.value)
    with pytest.raises(AlertTextError) as e:
        alerts.close("a001", f"intake/{text}", "visited", "")
    assert e.value.field == "caseworker_id" and text not in str(e.value)
    a = alerts.get("a001")
    assert (a.state, a.note, a.accepted_by, a.closed_by) == ("open", None, None, None)


def test_a_note_outside_its_character_set_is_refused(alerts: AlertBook) -> None:
    with pytest.raises(AlertTextError, match="U\\+200B") as e:
        alerts.close("a001", "intake/cw-1", "visited", "a\u200bb")
    assert e.value.field == "note"
    closed = alerts.close("a001", "intake/cw-1", "visited", "已走访，月收入约３０００元。")
    assert closed.note == "已走访，月收入约３０００元。"
