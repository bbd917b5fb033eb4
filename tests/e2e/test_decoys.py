"""Issue #26 against a real deployment (every party its own process, mutual TLS, 87 connectors):
with decoy households on (k = 4 in the registry's authority.toml), every connector is asked
about the members of each household's whole decoy group, each token with an encrypted selector,
and the verdicts are still the independent oracle's; a connector gets the grant without the
households' bindings."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from hedui.clients.deploy import Deployment, DeploySettings, prepare
from hedui.connectors import serve as connector_serve
from hedui.connectors.population import generate
from hedui.connectors.serve import load_authority_settings
from hedui.proto.v1 import verification_pb2
from tests.e2e import oracle
from tests.e2e.conftest import CAMPAIGNS, STANDARD, TODAY, register_campaign, verify_dibao


def test_verdicts_with_decoy_households_are_the_oracles(tmp_path: Path) -> None:
    data = tmp_path / "data"
    summary = generate(data, households=48, seed=26, as_of=TODAY, standard_fen=STANDARD)
    settings = DeploySettings(workdir=tmp_path / "work", data=data)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(connector_serve, "DEFAULT_DECOYS", 4)  # authority.toml is written with k = 4
        w = prepare(settings, lambda _: None, dt.date.today())
    authority = load_authority_settings(w.authority_config)
    assert (authority.decoys_interactive, authority.decoys_campaign) == (4, 4)
    up = Deployment(settings, w)
    up.start()
    try:
        applicants = [pid for _, pid in summary.applicants]
        register_campaign(w, applicants)
        consent = verification_pb2.Consent(campaign=CAMPAIGNS["recheck"])
        got = {
            pid: verify_dibao(w.intake_profile, pid, f"decoys-{i}", consent)
            for i, pid in enumerate(applicants[:24])
        }
    finally:
        up.stop()
    households, person = oracle.load(data)
    head_of = {ids[0].upper(): h for h, ids in summary.members.items()}
    for pid, v in got.items():
        want = oracle.expected(households[head_of[pid.upper()]], person, TODAY.isoformat())
        assert (v["decision"], v["benefit_fen"]) == (want["decision"], want["benefit_fen"]), pid
        assert v["failures"] == [], pid
    # the registry recorded its partition: every household in a group of 4 to 7
    con = sqlite3.connect(w.connector_db("registry"))
    sizes = [n for (n,) in con.execute("SELECT count(*) FROM decoy_group GROUP BY group_no")]
    con.close()
    assert sum(sizes) == len(summary.members) and all(4 <= n < 8 for n in sizes), sizes
