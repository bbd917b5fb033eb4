"""A refusal of the key custodian leaves one WARNING in its log, with the query id and its
reason (issue #25 item 12): before, a refused decryption was in no log line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hedui.server.errors import CustodianRefused
from tests.custodian.test_keeper import BANKS, grant_for, households
from tests.custodian.test_service import Served, _request


def test_a_refusal_is_logged_with_its_query_and_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    served = Served(tmp_path)
    try:
        answers, _grant, leaves = _request(served, "q-refused")
        other = grant_for("q-other", BANKS, households(2))  # a grant for another query
        with caplog.at_level(logging.INFO), pytest.raises(CustodianRefused) as info:
            served.decrypt("q-refused", answers, 2, other, leaves)
    finally:
        served.close()
    reason = "the token grant is for another query"
    assert str(info.value) == reason
    logged = [r for r in caplog.records if r.name == "hedui.custodian"]
    assert [r.levelno for r in logged] == [logging.WARNING]
    assert logged[0].getMessage() == f"DecryptBatch query=q-refused refused: {reason}"
