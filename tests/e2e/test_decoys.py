"""Issue #26 against a real deployment (every party its own process, mutual TLS, 87 connectors):
with decoy households on (k = 4 in the registry's authority.toml), every connector is asked
about the members of each household's whole decoy group, each token with an encrypted selector,
and the verdicts are still the independent oracle's; a connector gets the grant without the
households' bindings; and a bank insider, reading what its process receives with what its own
directory holds, cannot tell which household of a group is asked."""

from __future__ import annotations

import csv
import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from hedui.clients.deploy import Deployment, DeploySettings, prepare
from hedui.connectors import serve as connector_serve
from hedui.connectors.population import generate
from hedui.connectors.serve import load_authority_settings
from hedui.proto.v1 import verification_pb2
from tests.e2e import oracle
from tests.e2e.conftest import (
    CAMPAIGNS,
    STANDARD,
    TODAY,
    campaign_application,
    register_campaign,
    verify_dibao,
)


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


def test_a_bank_insider_cannot_tell_which_household_of_a_group_is_asked(tmp_path: Path) -> None:
    """The bank's view, through the real path: every QueryBatch bank-01's process receives
    (recorded at the service's stub; the bank gets these bytes over mutual TLS), read with what
    bank-01's own directory holds (the tokens of its customers). Two households of one decoy
    group, asked one at a time, give byte for byte the same token list, every token with a
    selector of its own that differs from query to query; the customers the bank sees in a
    query are those of the whole group, more than the asked household's own."""
    from hedui.core.tls import PeerIdentity
    from hedui.server import config as service_config
    from hedui.server.app import build_verifier

    data = tmp_path / "data"
    summary = generate(data, households=48, seed=27, as_of=TODAY, standard_fen=STANDARD)
    settings = DeploySettings(workdir=tmp_path / "work", data=data)
    w = prepare(settings, lambda _: None, dt.date.today())
    assert load_authority_settings(w.authority_config).decoys_campaign == 4  # the default
    up = Deployment(settings, w)
    up.start()
    try:
        number = CAMPAIGNS["recheck"]
        register_campaign(w, [ids[0] for ids in summary.members.values()])
        v = build_verifier(service_config.load(w.service_config, {}))

        def check(i: int, head: str) -> None:  # one query each, as interactive checks are
            app = campaign_application(v, f"bank-view-{i}", head, number)
            (out,) = v.run([(app, PeerIdentity("intake", "intake"))])
            assert not isinstance(out, Exception), out

        check(-1, next(iter(summary.members.values()))[0])  # the registry has placed everyone
        con = sqlite3.connect(w.connector_db("registry"))
        group_of = dict(con.execute("SELECT household_id, group_no FROM decoy_group"))
        con.close()
        bank = sqlite3.connect(w.connector_db("bank-01"))  # the insider's own database
        customers = {bytes(t) for (t,) in bank.execute("SELECT DISTINCT token FROM holding")}
        bank.close()
        groups: dict[int, list[str]] = {}
        for household in summary.members:
            groups.setdefault(group_of[household], []).append(household)
        pairs = [sorted(g)[:2] for g in groups.values()][:6]  # two households of each of 6 groups
        heads = [summary.members[h][0] for pair in pairs for h in pair]
        seen: list[Any] = []  # what bank-01 received, query by query
        stub: Any = v.pool._stubs["bank-01"]  # type: ignore[attr-defined]
        real = stub.QueryBatch

        class Recording:
            def future(self, request: Any, timeout: float) -> Any:
                seen.append(request)
                return real.future(request, timeout=timeout)

        stub.QueryBatch = Recording()
        try:
            for i, head in enumerate(heads):
                check(i, head)
        finally:
            v.registry.close()
    finally:
        up.stop()
    assert len(seen) == len(heads)
    lists = [[bytes(t) for t in r.households[0].tokens] for r in seen]
    selectors = [[bytes(s) for s in r.households[0].selectors] for r in seen]
    assert all(len(s) == len(t) for s, t in zip(selectors, lists, strict=True))
    with (data / "bank-01.csv").open(encoding="utf-8") as f:
        holders = {row[0].upper() for row in csv.reader(f)}  # the test's knowledge, not the bank's
    beyond = 0  # queries in which the bank sees customers of households not asked about
    for a, b in zip(range(0, len(heads), 2), range(1, len(heads), 2), strict=True):
        assert lists[a] == lists[b]  # the two households of a group: the same list
        assert set(selectors[a]).isdisjoint(selectors[b])  # fresh selectors, no 0/1 in clear
        seen_customers = sum(tok in customers for tok in lists[a])
        group = [h for h, g in group_of.items() if g == group_of[pairs[a // 2][0]]]
        residents = {m.upper() for h in group for m in summary.members[h]}
        assert seen_customers == len(residents & holders)  # every customer of the whole group
        for asked in pairs[a // 2]:
            own = {m.upper() for m in summary.members[asked]} & holders
            assert seen_customers >= len(own)
            beyond += seen_customers > len(own)
    assert beyond, "bank-01 holds no customer outside the asked households: pick another seed"
