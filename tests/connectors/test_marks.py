"""Damage stays with its household: a connector asked about many households marks the ones it
cannot give a figure for (a stored row that fails its seal, a total above its declared maximum)
and answers the others; the mark is signed, and the key custodian withholds that household's
totals of the connector's kind, naming the connector and the cause."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from pathlib import Path

import grpc
import pytest

from hedui.connectors.integrity import DataIntegrityError, RowSeal
from hedui.connectors.sdk import Answerer, AnswerRefused, ConnectorServicer, GrantPolicy
from hedui.connectors.store import HoldingStore, open_engine
from hedui.core import grants, signing
from hedui.core.answers import (
    DAMAGED_COUNTED,
    DATA_INTEGRITY,
    DECLARED_MAXIMUM,
    BatchAnswer,
    marks_from_pb,
)
from hedui.core.deployment import kind_of
from hedui.core.packing import DAMAGED
from hedui.custodian.errors import Refused as CustodianRefused
from hedui.proto.v1 import connector_pb2
from hedui.server.fanout import FanOut
from tests.custodian.test_keeper import AUTHORITY, KEY, SIGNERS, Run, grant_for, view

HRSS = kind_of("hrss")
SEAL = RowSeal(bytes(range(32)), "hrss")
HRSS_ONLY = view(("hrss",))
LAYOUT = HRSS_ONLY.batch_layouts["hrss"]
MAX = HRSS.fields[0].max_value
A, B, C, D, E = (bytes([i]) * 32 for i in range(1, 6))
PENSION_A = 151200


def _store(path: Path) -> HoldingStore:
    store = HoldingStore(open_engine(f"sqlite:///{path}"), SEAL)
    store.replace_all(
        {
            A: {"monthly_pension": PENSION_A, "monthly_wage": 1000},
            B: {"monthly_wage": 300000},
            C: {"monthly_pension": 90000},
            D: {"monthly_wage": MAX},  # D and E each within the maximum, their household not
            E: {"monthly_wage": MAX},
        },
        b"check",
        epoch=1,
    )
    return store


def _damage(path: Path) -> None:
    """The issue's edit: an insider lowers A's pension in the connector's database."""
    con = sqlite3.connect(path)
    assert con.execute("UPDATE holding SET value = 20128 WHERE value = ?", (PENSION_A,)).rowcount
    con.commit()
    con.close()


def _answerer(store: HoldingStore) -> Answerer:
    return Answerer(
        "hrss",
        HRSS,
        store,
        KEY.public,
        SIGNERS["hrss"],
        b"",
        GrantPolicy(AUTHORITY.public_key(), 1),
    )


def _received(
    query_id: str, tokens: list[list[bytes]], r: connector_pb2.QueryBatchResponse
) -> BatchAnswer:
    """The answer as the service's fan-out builds it from the wire."""
    queried, cts = signing.batch_digests(tokens, list(r.packed))
    return BatchAnswer(
        "hrss",
        "hrss",
        tuple(r.packed),
        r.signature,
        r.key_fingerprint,
        queried,
        cts,
        marks_from_pb(r.marked),
    )


def _households(*members: tuple[bytes, ...]) -> list[list[bytes]]:
    return [grants.padded(list(m)) for m in members]


def _plain(r: connector_pb2.QueryBatchResponse, n: int) -> list[dict[str, int]]:
    """What the connector put in its fields' slots (the private key's view, for the test
    only); its count of damaged rows is zero without decoys."""
    out = LAYOUT.unpack(
        [KEY.decrypt(KEY.public.from_bytes(c, r.key_fingerprint)) for c in r.packed], n
    )
    assert all(h.pop(DAMAGED) == 0 for h in out)
    return out


def test_a_damaged_household_is_marked_and_the_others_are_answered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "hrss.sqlite"
    store = _store(db)
    _damage(db)
    tokens = _households((B,), (A,), (C,))
    with caplog.at_level(logging.ERROR, "hedui.connectors"):
        r = _answerer(store).answer("q1", tokens, LAYOUT)
    assert marks_from_pb(r.marked) == ((1, DATA_INTEGRITY),)
    zero = dict.fromkeys(HRSS.field_names, 0)
    assert _plain(r, 3) == [
        {**zero, "monthly_wage": 300000},
        zero,  # not even A's undamaged wage row
        {**zero, "monthly_pension": 90000},
    ]
    # the operator is told how many households and which rows (field and token prefix)
    assert "hrss marked 1 of 3 household(s): stored rows fail their integrity check" in caplog.text
    assert f"monthly_pension of token {A[:6].hex()}" in caplog.text
    totals = Run(deployment=HRSS_ONLY).decrypt("q1", [_received("q1", tokens, r)], tokens)
    why = "hrss: stored data fails its integrity check"
    assert totals[1].refused == dict.fromkeys(HRSS.field_names, why)
    assert totals[1].values == {}
    assert totals[0].values == {**zero, "monthly_wage": 300000} and not totals[0].refused
    assert totals[2].values == {**zero, "monthly_pension": 90000} and not totals[2].refused


def test_the_mark_is_signed_stripping_or_moving_it_fails_the_custodians_check(
    tmp_path: Path,
) -> None:
    db = tmp_path / "hrss.sqlite"
    store = _store(db)
    _damage(db)
    tokens = _households((A,), (B,))
    genuine = _received("q2", tokens, _answerer(store).answer("q2", tokens, LAYOUT))
    assert genuine.marked == ((0, DATA_INTEGRITY),)
    run = Run(deployment=HRSS_ONLY)
    grant = grant_for("q2", ["hrss"], tokens)
    leaves = run.logged("q2", 2)
    for forged in ((), ((1, DATA_INTEGRITY),), ((0, DATA_INTEGRITY), (1, DATA_INTEGRITY))):
        with pytest.raises(CustodianRefused, match="hrss is not signed by it"):
            run.decrypt(
                "q2",
                [dataclasses.replace(genuine, marked=forged)],
                tokens,
                grant=grant,
                leaves=leaves,
            )
    totals = run.decrypt("q2", [genuine], tokens, grant=grant, leaves=leaves)
    assert set(totals[0].refused) == set(HRSS.field_names) and totals[1].values["monthly_wage"]


def test_an_answer_without_marks_is_signed_exactly_as_before(tmp_path: Path) -> None:
    store = _store(tmp_path / "hrss.sqlite")
    tokens = _households((A,), (B,))
    r = _answerer(store).answer("q3", tokens, LAYOUT)
    assert not r.marked
    queried, cts = signing.batch_digests(tokens, list(r.packed))
    before = signing.answer_bytes(
        "q3", "hrss", KEY.public.fingerprint, queried, LAYOUT.digest(), cts
    )  # the six parts of an answer from before marks existed
    signing.verify(SIGNERS["hrss"].public_key(), before, r.signature)


def test_a_query_of_damaged_households_only_is_refused_as_before(tmp_path: Path) -> None:
    db = tmp_path / "hrss.sqlite"
    store = _store(db)
    _damage(db)
    with pytest.raises(DataIntegrityError) as info:
        _answerer(store).answer("q4", _households((A,)), LAYOUT)
    assert info.value.rows == [f"monthly_pension of token {A[:6].hex()}…"]


def test_a_total_above_the_declared_maximum_is_marked_for_its_household_alone(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path / "hrss.sqlite")
    answerer = _answerer(store)
    tokens = _households((B,), (D, E))
    r = answerer.answer("q5", tokens, LAYOUT)
    assert marks_from_pb(r.marked) == ((1, DECLARED_MAXIMUM),)
    totals = Run(deployment=HRSS_ONLY).decrypt("q5", [_received("q5", tokens, r)], tokens)
    assert totals[1].refused == dict.fromkeys(
        HRSS.field_names, "hrss: a total is above its declared maximum"
    )
    assert totals[0].values["monthly_wage"] == 300000 and not totals[0].refused
    with pytest.raises(AnswerRefused, match="monthly_wage is above the declared maximum"):
        answerer.answer("q6", _households((D, E)), LAYOUT)


class _Aborted(Exception):
    pass


class _Context:
    """What ConnectorServicer needs of a gRPC context: aborting raises."""

    def __init__(self) -> None:
        self.status: grpc.Status | None = None

    def abort_with_status(self, status: grpc.Status) -> None:
        self.status = status
        raise _Aborted(status.details)


def test_a_data_set_whose_seal_failed_at_start_still_refuses_every_query(tmp_path: Path) -> None:
    store = _store(tmp_path / "hrss.sqlite")
    servicer = ConnectorServicer(_answerer(store), broken="the data set fails its seal")
    context = _Context()
    produced = []
    with pytest.raises(_Aborted, match="fails its integrity check"):
        servicer._answering(context, lambda: produced.append(1))  # type: ignore[arg-type]
    assert context.status is not None and not produced
    assert context.status.code == grpc.StatusCode.FAILED_PRECONDITION
    details = dict(context.status.trailing_metadata)["grpc-status-details-bin"]
    assert b"DATA_INTEGRITY" in details


def test_the_fan_out_names_a_marking_connector_for_that_household_only() -> None:
    def marked(cid: str, marks: tuple[tuple[int, int], ...]) -> BatchAnswer:
        return BatchAnswer(cid, kind_of(cid).kind, (), b"", b"", b"", b"", marks)

    fan = FanOut(
        (marked("hrss", ((1, DATA_INTEGRITY),)), marked("tax", ((2, DECLARED_MAXIMUM),))),
        {"bank-09": "unreachable"},
    )
    assert fan.failures_of(0) == {"bank-09": "unreachable"}
    assert fan.failures_of(1) == {
        "bank-09": "unreachable",
        "hrss": "refused the query: its stored data fails its integrity check",
    }
    assert fan.failures_of(2)["tax"] == "refused the query: a total is above its declared maximum"
    # with decoys, a damaged row of a household's list counted under its selector is the key
    # custodian's to find: no failure of the household (the same mark is on every group-mate)
    counted = FanOut((marked("bank-07", ((0, DAMAGED_COUNTED), (1, DAMAGED_COUNTED))),), {})
    assert counted.failures_of(0) == counted.failures_of(1) == {}
