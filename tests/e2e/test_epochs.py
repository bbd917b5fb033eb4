"""Token epochs: after `hedui keys rotate --tokens`, a connector still holding data of the old
epoch is refused by name (NEEDS_REVIEW naming it, never a 0), until its data is imported again by
blinded evaluation under the new epoch."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from hedui.clients.cli import main
from hedui.clients.deploy import Deployment, DeploySettings, prepare
from hedui.core.deployment import DEPARTMENT_KINDS
from tests.e2e.test_faults import BANKS, HEAD, _verify, small_deployment


def _run(settings: DeploySettings, rid: str) -> dict:
    w = prepare(settings, lambda _: None, dt.date.today())
    up = Deployment(settings, w)
    up.start()
    try:
        return _verify(up.workdir, rid, HEAD.value)
    finally:
        up.stop()


def test_a_rotated_epoch_refuses_stale_connectors_by_name_until_they_import_again(
    tmp_path: Path,
) -> None:
    settings = small_deployment(tmp_path)
    first = _run(settings, "e-1")
    assert not first["failures"]
    assert main(["keys", "rotate", "--tokens", "--workdir", str(tmp_path / "work")]) == 0
    # restarted without the data: every answering connector holds epoch-1 tokens
    stale = _run(DeploySettings(**{**settings.__dict__, "data": None}), "e-2")
    assert stale["decision"] == "NEEDS_REVIEW"
    reasons = {f["connector_id"]: f["reason"] for f in stale["failures"]}
    assert set(reasons) == {*DEPARTMENT_KINDS, *BANKS}
    assert all("another token epoch" in r for r in reasons.values())
    # with the data again, every connector imports under epoch 2: the verdict is as before
    again = _run(settings, "e-3")
    assert not again["failures"]
    assert again["decision"] == first["decision"] and again["benefit_fen"] == first["benefit_fen"]
