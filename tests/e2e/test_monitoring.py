"""Issue #13, done when: a day of department events pushed through `hedui up` for a monitored
population; every alert (kind, household, deadline, district) checked against expectations
worked out here from the register's file and the demo region's rules as the issue states them
(15 days to the deadline, 5 more to escalation, 40,000 yuan of medical self-pay), not from the
rules' code; events about people who are not monitored leave nothing in any store; accept and
close, and the monthly report, through the CLI."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from hedui.audit.store import LogStore, open_log_engine
from hedui.core.rpc import open_channel
from hedui.core.tokens import connector_token
from hedui.proto.v1 import (
    audit_pb2,
    connector_pb2,
    connector_pb2_grpc,
    monitoring_pb2,
    monitoring_pb2_grpc,
)
from tests.e2e.conftest import (
    TODAY,
    Up,
    grpc_code,
    list_alerts,
    push_events,
    start_up,
    stop_up,
    wait_for_alerts,
)

DEADLINE_DAYS, ESCALATE_DAYS = 15, 5
MEDICAL_THRESHOLD_FEN = 4_000_000


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    handle = start_up(tmp_path_factory.mktemp("monitoring"), households=40, seed=23)
    yield handle
    stop_up(handle)


def _register(up: Up) -> list[dict[str, str]]:
    with (up.data / "registry.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _masked(id_number: str) -> str:
    return id_number[:3] + "*" * 14 + id_number[-1]


def _service_files(up: Up) -> list[Path]:
    return [p for p in up.workdir.party_dir("service").rglob("*") if p.is_file()]


def test_a_day_of_events_raises_exactly_the_expected_alerts(deployment: Up, tmp_path: Path) -> None:
    up = deployment
    register = _register(up)
    heads = [r for r in register if r["relation"] == "head"]
    monitored, others = heads[:6], heads[6:]
    members = {
        h["household_id"]: [r for r in register if r["household_id"] == h["household_id"]]
        for h in heads
    }
    district = {h["household_id"]: h["district"] for h in heads}

    roster = tmp_path / "roster.txt"
    roster.write_text("".join(h["id_number"] + "\n" for h in monitored))
    until = TODAY + dt.timedelta(days=180)
    r = up.cli(
        "monitor", "enrol", "--workdir", str(up.workdir.root), "--roster", str(roster),
        "--program", "dibao", "--until", until.isoformat(), *up.authorisation_args("monitoring"),
        "--caseworker", "wang.fang",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "6 household(s) under monitoring for dibao, 0 not enrolled" in r.stdout
    watch_of: dict[str, str] = {}  # watch id (first 12) -> household, from the enrolment lines
    for n, h in enumerate(monitored, start=1):
        m = re.search(rf"line {n}: (\S+)  district (\d+)  watch (\w+)", r.stdout)
        assert m, r.stdout
        assert m.groups()[:2] == (_masked(h["id_number"]), h["district"])
        watch_of[m.group(3)] = h["household_id"]

    def member(i: int, k: int = -1) -> str:  # a member of monitored household i
        return members[monitored[i]["household_id"]][k]["id_number"]

    day = (TODAY - dt.timedelta(days=1)).isoformat()
    strangers = [o["id_number"] for o in others]
    # the day's events: a few about monitored households, many about everyone else
    civil = [(member(0), "death", day, "")] + [(s, "death", day, "") for s in strangers[:20]]
    hrss = [(member(1), "unemployment", day, "")] + [
        (s, "unemployment", day, "") for s in strangers[5:25]
    ]
    medical = (
        [
            (member(2), "medical_self_pay", day, str(MEDICAL_THRESHOLD_FEN + 100_000)),  # crosses
            (member(3), "medical_self_pay", day, str(MEDICAL_THRESHOLD_FEN - 1)),  # below
        ]
        + [(s, "medical_self_pay", day, str(9_000_000)) for s in strangers[:20]]
    )
    vehicles = [(member(4), "vehicle", day, "")] + [(s, "vehicle", day, "") for s in strangers[:10]]
    watch_tokens_before = _rows(up, "watch_token")
    for connector, rows in (
        ("civil", civil), ("hrss", hrss), ("medical", medical), ("vehicles", vehicles),
    ):  # fmt: skip
        push_events(up, connector, rows, tmp_path)
    # the same running total again does not raise it twice
    push_events(up, "medical", medical[:1], tmp_path)

    # expected, by the rules: death and unemployment always; medical self-pay once
    # over 40,000 yuan, suggesting zhichu; a vehicle only if the decision changed (the data
    # did not change, so it does not)
    expected = {
        (monitored[0]["household_id"], "death", ""),
        (monitored[1]["household_id"], "unemployment", ""),
        (monitored[2]["household_id"], "medical_self_pay", "zhichu"),
    }
    alerts = wait_for_alerts(up, len(expected))
    got = {(watch_of[str(a["watch_id"])[:12]], a["kind"], a.get("suggest", "")) for a in alerts}
    assert got == expected
    for a in alerts:
        hid = watch_of[str(a["watch_id"])[:12]]
        assert a["masked_applicant"] == _masked(
            next(h for h in monitored if h["household_id"] == hid)["id_number"]
        )
        assert a["district"] == district[hid]
        assert a["raised_on"] == TODAY.isoformat() and a["event_on"] == day
        assert a["due_on"] == (TODAY + dt.timedelta(days=DEADLINE_DAYS)).isoformat()
        assert (
            a["escalate_on"]
            == (TODAY + dt.timedelta(days=DEADLINE_DAYS + ESCALATE_DAYS)).isoformat()
        )
        assert a["state"] == "open" and a["decision_after"] in (
            "ELIGIBLE",
            "INELIGIBLE",
            "NEEDS_REVIEW",
        )

    # no benefit in plaintext at rest (issue #24 item 4): the watch keeps none, the alert only
    # sealed, though the caseworker sees it as before
    benefits = {int(str(a.get("benefit_fen", 0))) for a in alerts} - {0}
    assert benefits, alerts  # a re-check found the household ELIGIBLE, with a benefit
    for table in ("watch", "alert"):
        for row in _rows(up, table):
            assert {c for c in row if "benefit" in c} <= {"benefit_sealed"}, table
            for value in row.values():
                blob = value if isinstance(value, bytes) else str(value).encode()
                for fen in benefits:
                    assert fen != value and str(fen).encode() not in blob, table
                    assert fen.to_bytes(8, "big") not in blob, table
    for row in _rows(up, "alert"):
        sealed = row["benefit_sealed"]
        assert isinstance(sealed, bytes) and sealed.startswith(b"\x01")  # StateSealer.MARK

    # nothing about the others: no queued event, no level, no new watch token, no ID, no token
    events = _rows(up, "monitor_event")
    watch_ids = {str(a["watch_id"]) for a in alerts}
    assert len(events) == 4  # death, unemployment, medical crossing, vehicle
    assert {e["kind"] for e in events} == {"death", "unemployment", "medical_self_pay", "vehicle"}
    assert {e["watch_id"] for e in events} >= watch_ids
    assert len(_rows(up, "event_level")) == 2  # the two monitored people's medical reports
    assert _tokens(_rows(up, "watch_token")) == _tokens(watch_tokens_before)
    key = up.workdir.keys("registry").oprf_key(up.workdir.keys("registry").token_epoch())
    stranger_tokens = [
        connector_token(key.evaluate(s.encode()), c)
        for s in strangers[:25]
        for c in ("civil", "hrss", "medical", "vehicles")
    ]
    for path in _service_files(up):
        blob = path.read_bytes()
        for s in strangers:
            assert s.encode() not in blob, f"{path} holds the ID number of someone not monitored"
        for t in stranger_tokens:
            assert t not in blob, f"{path} holds the token of someone not monitored"
    for h in monitored:
        for path in _service_files(up):
            assert h["id_number"].encode() not in path.read_bytes()

    # the loop: accept and close through the CLI, every step logged; the monthly report
    first = str(alerts[0]["alert_id"])
    w = str(up.workdir.root)
    r = up.cli("alerts", "accept", "--workdir", w, first, "--caseworker", "li.na")
    assert r.returncode == 0, r.stderr
    r = up.cli(
        "alerts",
        "close",
        "--workdir",
        w,
        first,
        "--outcome",
        "visited",
        "--note",
        "visited, applying for dibao",
    )
    assert r.returncode == 0, r.stderr
    r = up.cli("alerts", "close", "--workdir", w, first, "--outcome", "visited")
    assert r.returncode == 1 and "is closed; this step needs it open or accepted" in r.stderr
    assert "Traceback" not in r.stderr
    r = up.cli("alerts", "report", "--workdir", w, "--month", TODAY.strftime("%Y-%m"), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert sum(d["raised"] for d in report["districts"]) == 3
    assert sum(d["closed_in_time"] for d in report["districts"]) == 1
    assert list_alerts(up, "--state", "closed")[0]["outcome"] == "visited"
    r = up.cli("alerts", "overdue", "--workdir", w, "--json")
    assert r.returncode == 0 and r.stdout.strip() == ""

    r = up.cli("audit", "verify", "--workdir", w, "--state", str(tmp_path / "auditor.json"))
    assert r.returncode == 0, r.stderr
    steps = _monitoring_steps(up)
    assert steps.count("enrolled") == 6 and steps.count("event") == 4
    assert steps.count("alert_raised") == 3
    assert steps.count("alert_accepted") == 1 and steps.count("alert_closed") == 1


def _rows(up: Up, table: str) -> list[dict[str, object]]:
    db = up.workdir.party_dir("service") / "db" / "service.sqlite"
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"SELECT * FROM {table}")]


def _tokens(rows: list[dict[str, object]]) -> set[tuple[object, ...]]:
    return {(r["connector_id"], r["token"], r["watch_id"]) for r in rows}


def _monitoring_steps(up: Up) -> list[str]:
    store = LogStore(open_log_engine(up.workdir.audit_db_url))
    out = []
    for _, data in store.entries(0, store.size()):
        e = audit_pb2.AuditEntry.FromString(data)
        if e.WhichOneof("body") == "monitoring":
            out.append(e.monitoring.step)
    return out


def _events_stub(up: Up, cert: str) -> monitoring_pb2_grpc.MonitoringServiceStub:
    return monitoring_pb2_grpc.MonitoringServiceStub(
        open_channel(up.address, tls=up.workdir.tls(cert), server_name="service")
    )


def _registry_as_service(up: Up) -> connector_pb2_grpc.RegistryServiceStub:
    address = up.workdir.listening_file("registry").read_text().strip()
    return connector_pb2_grpc.RegistryServiceStub(
        open_channel(address, tls=up.workdir.tls("service"), server_name="registry")
    )


def test_insiders_learn_nothing_of_who_is_monitored_and_cannot_stretch_a_handle(
    deployment: Up, tmp_path: Path
) -> None:
    up = deployment
    heads = [r["id_number"] for r in _register(up) if r["relation"] == "head"]
    roster = tmp_path / "roster.txt"
    roster.write_text(heads[-1] + "\n")
    r = up.cli(
        "monitor", "enrol", "--workdir", str(up.workdir.root), "--roster", str(roster),
        "--until", (TODAY + dt.timedelta(days=30)).isoformat(),
        *up.authorisation_args("monitoring"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    keys = up.workdir.keys("registry")
    key = keys.oprf_key(keys.token_epoch())
    day = (TODAY - dt.timedelta(days=1)).isoformat()

    # a curious department: the answer about a monitored person and about anyone else is the same
    civil = _events_stub(up, "civil")
    answers = [
        civil.PushEvents(
            iter([monitoring_pb2.Event(token=connector_token(key.evaluate(i.encode()), "civil"),
                                       kind="death", occurred_on=day)]),
            timeout=30,
        ).SerializeToString()
        for i in (heads[-1], heads[-2])
    ]  # fmt: skip
    assert answers[0] == answers[1]
    # a department may push only its own kind; an intake system may not push at all
    with pytest.raises(grpc.RpcError) as e:
        _events_stub(up, "hrss").PushEvents(
            iter([monitoring_pb2.Event(token=bytes(32), kind="death", occurred_on=day)]),
            timeout=30,
        )
    assert grpc_code(e.value) == grpc.StatusCode.PERMISSION_DENIED
    assert "reported by the civil connector" in str(e.value.details())
    with pytest.raises(grpc.RpcError) as e:
        _events_stub(up, "intake").PushEvents(
            iter([monitoring_pb2.Event(token=bytes(32), kind="death", occurred_on=day)]),
            timeout=30,
        )
    assert grpc_code(e.value) == grpc.StatusCode.PERMISSION_DENIED

    # an insider of the service with everything in its directory: the handle it holds cannot be
    # altered to name someone else or stretched, and a handle needs the standing authorisation
    stored = _rows(up, "watch")[-1]["handle"]
    assert isinstance(stored, bytes)
    handle = stored
    registry = _registry_as_service(up)

    def refused(applicant: connector_pb2.Applicant) -> str:
        """The registry's answer for one applicant: refused, with no member and no token."""
        reply = registry.GetHouseholds(
            connector_pb2.HouseholdsRequest(query_id=secrets.token_hex(16), applicants=[applicant]),
            timeout=30,
        )
        (household,) = reply.households
        assert not household.members and not household.tokens
        assert not reply.HasField("grant")
        return household.monitoring_refused or household.authorisation_refused

    monitoring = connector_pb2.Signatures(campaign=up.campaign("monitoring"), program="dibao")

    def uses() -> int:  # the registry's record of this handle's uses
        from hedui.connectors.handles import handle_digest

        with sqlite3.connect(up.workdir.connector_db("registry")) as db:
            row = db.execute(
                "SELECT uses FROM monitoring_handle WHERE digest = ?", (handle_digest(handle),)
            ).fetchone()
        return int(row[0])

    before = uses()
    for forged, signatures in (
        (handle[:-1] + bytes([handle[-1] ^ 1]), monitoring),
        (handle, connector_pb2.Signatures(standing=True)),  # a claim of standing is nothing
        (handle, connector_pb2.Signatures(campaign="未登记〔2026〕9号", program="dibao")),
        (handle, connector_pb2.Signatures(campaign=up.campaign("recheck"), program="dibao")),
    ):
        assert refused(connector_pb2.Applicant(monitoring_handle=forged, signatures=signatures))
    too_far = refused(
        connector_pb2.Applicant(
            id_number=heads[-3],
            signatures=monitoring,
            monitor_until=(TODAY + dt.timedelta(days=5 * 366)).isoformat(),
        )
    )
    assert "monitor_until must be a date" in too_far
    # a handle is never renewed past its campaign's end (it ends in 365 days)
    past_end = refused(
        connector_pb2.Applicant(
            monitoring_handle=handle,
            signatures=monitoring,
            monitor_until=(TODAY + dt.timedelta(days=400)).isoformat(),
        )
    )
    assert "after the end of campaign" in past_end
    # each presentation of the real handle under a campaign was counted (three above; the
    # forged one and the one without a campaign name no record; the service's own re-checks of
    # this watch, if an event queued one meanwhile, count too)
    assert uses() - before >= 3
