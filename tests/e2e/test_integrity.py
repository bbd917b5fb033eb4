"""Issue #10, finding 1, rerun: one changed byte in a connector's database no longer turns a
household ELIGIBLE. Without decoys the connector marks (or refuses) the household whose row is
damaged, by name; with decoys (issue #26, the default) it cannot tell whose row it is and counts
it under the row's encrypted selector, and the key custodian withholds the kind for the household
the row's owner is a member of. Either way that household is NEEDS_REVIEW naming hrss, and every
other household's verdict is untouched, including those whose group the damaged row is in."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from hedui.clients.deploy import Deployment, DeploySettings, prepare
from hedui.clients.intake import IntakeProfile, open_service_channel, verdict_to_dict
from hedui.connectors import serve as connector_serve
from hedui.connectors.serve import load_authority_settings
from hedui.core.deployment import DEPARTMENT_KINDS
from hedui.core.resident_id import make
from hedui.core.workdir import Workdir
from hedui.proto.v1 import verification_pb2, verification_pb2_grpc
from tests.e2e.conftest import CAMPAIGNS, register_campaign
from tests.e2e.test_faults import BANKS, CAR_OWNER, HEAD, _verify, _write, small_deployment


def test_a_changed_figure_is_withheld_by_name(tmp_path: Path) -> None:
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
    # decoys are on by default: hrss could not tell the head's row from a decoy's, so it refused
    # nothing; it counted the row for the custodian, which names hrss in the income rule
    assert load_authority_settings(w.authority_config).decoys_interactive == 4
    assert after["failures"] == []
    income = next(r for r in after["rules"] if r["id"] == "income")
    assert income["passed"] is None and income["value"] is None
    assert "hrss" in income["missing_sources"]
    assert "key custodian: hrss: stored data fails its integrity check" in income["missing_sources"]
    # no member of the car owner's household has a damaged row (its group's list may hold some,
    # as decoys'): decided as before
    assert other["decision"] == "INELIGIBLE" and not other["failures"]
    logs = [p.read_text(errors="replace") for p in w.log_dir.glob("*.log")]
    assert any("fails its integrity check" in text for text in logs)  # the operator is told
    assert not any(HEAD.value in text for text in logs)


HOUSEHOLDS = 12
DAMAGED = 5  # the household whose head's pension row is edited
PEOPLE = [make("330106", dt.date(1950 + h, 1 + h % 12, 2), 100 + h) for h in range(HOUSEHOLDS)]


def _many_households(data: Path) -> None:
    """Twelve one-person households: hrss pays each head a pension of its own amount (so that
    one row can be edited alone), every bank holds some deposits, one head owns a car."""
    data.mkdir()
    _write(
        data / "registry.csv",
        ["household_id", "id_number", "relation", "birth_date"],
        [[f"H{h}", p.value, "head", p.birth_date.isoformat()] for h, p in enumerate(PEOPLE)],
    )
    _write(
        data / "hrss.csv",
        ["id_number", "monthly_pension", "monthly_wage", "monthly_unemployment_benefit"],
        [[p.value, 30000 + 7000 * h, 0, 0] for h, p in enumerate(PEOPLE)],
    )
    for i, bank in enumerate(BANKS, start=1):
        _write(
            data / f"{bank}.csv",
            ["id_number", "deposits", "wealth_products"],
            [[p.value, 1000 * i * h, 0] for h, p in enumerate(PEOPLE)],
        )
    _write(
        data / "vehicles.csv", ["id_number", "vehicles", "vehicle_value"], [[PEOPLE[3].value, 1, 9]]
    )


CAMPAIGN = verification_pb2.Consent(campaign=CAMPAIGNS["recheck"])


def _campaign(w: Workdir, run: str) -> dict[str, dict]:
    """A recheck: every household in one VerifyBatch stream under a standing authorisation,
    one chunk, so one QueryBatch per connector; each verdict without what differs from run to
    run (request id, salt, receipt)."""
    channel = open_service_channel(IntakeProfile.load(w.intake_profile))
    try:
        stub = verification_pb2_grpc.VerificationServiceStub(channel)
        requests = [
            verification_pb2.VerifyRequest(
                request_id=f"{run}-{h}",
                id_number=p.value,
                program="dibao",
                consent=CAMPAIGN,
            )
            for h, p in enumerate(PEOPLE)
        ]
        results = list(stub.VerifyBatch(iter(requests), timeout=180))
    finally:
        channel.close()
    out = {}
    for r in results:
        assert r.HasField("verdict"), r
        v = verdict_to_dict(r.verdict)
        for volatile in ("request_id", "figures_opening", "audit"):
            del v[volatile]
        out[r.request_id.removeprefix(f"{run}-")] = v
    return out


@pytest.mark.parametrize("k", [1, 4], ids=["without-decoys", "decoys"])
def test_a_changed_figure_in_a_batch_stays_with_its_household(tmp_path: Path, k: int) -> None:
    """The issue's recheck: one edited hrss figure among many households asked in one
    QueryBatch. Without decoys hrss marks that household (signed) and answers the others; with
    decoys (groups of 4: the edited row is a decoy's in three other households' lists) it
    counts the row under encryption. The damaged one is NEEDS_REVIEW naming hrss, every other
    household's verdict is what it was before the edit."""
    _many_households(tmp_path / "data")
    settings = DeploySettings(
        workdir=tmp_path / "work",
        data=tmp_path / "data",
        connector_ids=(*DEPARTMENT_KINDS, *BANKS),
        min_banks=3,
    )
    with pytest.MonkeyPatch.context() as m:
        m.setattr(connector_serve, "DEFAULT_DECOYS", k)  # authority.toml is written with k
        w = prepare(settings, lambda _: None, dt.date.today())
    assert load_authority_settings(w.authority_config).decoys_campaign == k
    up = Deployment(settings, w)
    up.start()
    try:
        register_campaign(w, [p.value for p in PEOPLE])
        before = _campaign(w, "before")
    finally:
        up.stop()
    assert not any(v["failures"] for v in before.values())
    assert {v["decision"] for v in before.values()} >= {"ELIGIBLE", "INELIGIBLE"}
    con = sqlite3.connect(w.connector_db("hrss"))
    edited = con.execute(
        "UPDATE holding SET value = 128 WHERE field = 'monthly_pension' AND value = ?",
        (30000 + 7000 * DAMAGED,),
    ).rowcount
    con.commit()
    con.close()
    assert edited == 1
    up = Deployment(settings, w)
    up.start()
    try:
        after = _campaign(w, "after")
    finally:
        up.stop()
    damaged = after.pop(str(DAMAGED))
    assert damaged["decision"] == "NEEDS_REVIEW" and damaged["benefit_fen"] == 0
    assert damaged["failures"] == (
        [
            {
                "connector_id": "hrss",
                "reason": "refused the query: its stored data fails its integrity check",
            }
        ]
        if k == 1
        else []  # nothing the service could read: hrss marked nobody
    )
    income = next(r for r in damaged["rules"] if r["id"] == "income")
    assert income["passed"] is None and income["value"] is None
    assert "hrss" in income["missing_sources"]
    assert "key custodian: hrss: stored data fails its integrity check" in income["missing_sources"]
    assert "人社" in income["message_zh"]
    del before[str(DAMAGED)]
    assert after == before  # the other eleven: the same verdicts, hrss answered for them
    logs = [p.read_text(errors="replace") for p in w.log_dir.glob("*.log")]
    told = (
        f"hrss marked 1 of {HOUSEHOLDS} household(s): stored rows fail their integrity check"
        if k == 1
        else "hrss: 1 stored row(s) fail their integrity check, in the lists of 4 of "
        f"{HOUSEHOLDS} household(s) (counted for the members' households under encryption)"
    )
    assert any(told in text for text in logs)  # the operator is told
    assert not any(p.value in text for p in PEOPLE for text in logs)
