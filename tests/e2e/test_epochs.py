"""Token epochs: after `hedui keys rotate --tokens`, a connector still holding data of the old
epoch is refused by name (NEEDS_REVIEW naming it, never a 0), until its data is imported again by
blinded evaluation under the new epoch."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from hedui.clients.cli import main
from hedui.clients.deploy import Deployment, DeploySettings, prepare
from hedui.clients.intake import IntakeClient, IntakeProfile, verdict_to_dict
from hedui.core.deployment import DEPARTMENT_KINDS
from hedui.proto.v1 import verification_pb2
from tests.e2e.test_faults import BANKS, HEAD, _population


def _verify_id(up: Deployment, rid: str, id_number: str) -> dict:
    client = IntakeClient(IntakeProfile.load(up.workdir.intake_profile))
    try:
        return verdict_to_dict(
            client.verify(
                verification_pb2.VerifyRequest(
                    request_id=rid, id_number=id_number, program="dibao", consent_reference="c"
                )
            )
        )
    finally:
        client.close()


def _verify(up: Deployment, rid: str) -> dict:
    return _verify_id(up, rid, HEAD.value)


def _run(settings: DeploySettings, rid: str) -> dict:
    w = prepare(settings, lambda _: None, dt.date.today())
    up = Deployment(settings, w)
    up.start()
    try:
        return _verify(up, rid)
    finally:
        up.stop()


def test_a_rotated_epoch_refuses_stale_connectors_by_name_until_they_import_again(
    tmp_path: Path,
) -> None:
    _population(tmp_path / "data")
    settings = DeploySettings(
        workdir=tmp_path / "work",
        data=tmp_path / "data",
        connector_ids=(*DEPARTMENT_KINDS, *BANKS),
        min_banks=3,
    )
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
