"""Issue #10, finding 1, rerun: one changed byte in a connector's database no longer turns a
household ELIGIBLE. The connector refuses the query that touches the damaged row, by name, so the
household is NEEDS_REVIEW; another household's verdict is untouched."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

from hedui.clients.deploy import Deployment, prepare
from tests.e2e.test_faults import CAR_OWNER, HEAD, _verify, small_deployment


def test_a_changed_figure_is_refused_by_name(tmp_path: Path) -> None:
    settings = small_deployment(tmp_path)
    w = prepare(settings, lambda _: None, dt.date.today())
    up = Deployment(settings, w)
    up.start()
    try:
        before = _verify(up.workdir, "i-1", HEAD.value)
    finally:
        up.stop()
    assert not before["failures"]
    # an insider lowers the head's pension in hrss's database, the edit
    con = sqlite3.connect(w.connector_db("hrss"))
    con.execute("UPDATE holding SET value = 128 WHERE field = 'monthly_pension'")
    con.commit()
    con.close()
    up = Deployment(settings, w)
    up.start()
    try:
        after = _verify(up.workdir, "i-2", HEAD.value)
        other = _verify(up.workdir, "i-3", CAR_OWNER.value)
    finally:
        up.stop()
    assert after["decision"] == "NEEDS_REVIEW"
    reasons = {f["connector_id"]: f["reason"] for f in after["failures"]}
    assert reasons == {"hrss": "refused the query: its stored data fails its integrity check"}
    # the car owner's household touches no damaged row: decided as before
    assert other["decision"] == "INELIGIBLE" and not other["failures"]
    logs = [p.read_text(errors="replace") for p in w.log_dir.glob("*.log")]
    assert any("fails its integrity check" in text for text in logs)  # the operator is told
    assert not any(HEAD.value in text for text in logs)
