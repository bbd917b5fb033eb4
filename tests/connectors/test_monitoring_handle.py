"""Monitoring handles held by the registry (issues #13, #23): a handle names its applicant only
through the registry's record, under its own campaign and programme, until its end; every use is
counted; a forged, foreign or old sealed handle is refused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from hedui.connectors.handles import MonitoringHandles
from hedui.connectors.store import RegisterStore, open_engine
from hedui.connectors.token_authority import HandleRefused
from hedui.core import clock
from hedui.core.resident_id import make
from hedui.proto.v1 import connector_pb2

DAY = dt.date(2026, 11, 24)
ID = make("330106", dt.date(1970, 1, 1), 11).value
UNDER = connector_pb2.Signatures(campaign="民监〔2026〕3号", program="dibao")


def _handles(tmp: Path) -> tuple[MonitoringHandles, RegisterStore]:
    store = RegisterStore(open_engine(f"sqlite:///{tmp / 'registry.sqlite'}"))
    moment = dt.datetime(2026, 11, 24, 9, tzinfo=dt.UTC)
    return MonitoringHandles(store, clock.fixed(moment)), store


def test_a_handle_names_its_applicant_through_the_registrys_record(tmp_path: Path) -> None:
    handles, store = _handles(tmp_path)
    handle = handles.issue(ID, UNDER, DAY + dt.timedelta(days=30))
    assert ID.encode() not in handle and len(handle) == 32
    assert handles.open(handle, UNDER, DAY, "q1") == ID
    assert handles.open(handle, UNDER, DAY + dt.timedelta(days=30), "q2") == ID  # its last day
    with pytest.raises(HandleRefused, match="ended on 2026-12-24"):
        handles.open(handle, UNDER, DAY + dt.timedelta(days=31), "q3")
    (row,) = store.handles()
    assert row.uses == 3 and row.campaign == UNDER.campaign  # every use counted, refused too
    assert handle not in (row.digest, row.id_number.encode())  # the handle itself is not kept


@pytest.mark.parametrize(
    "signatures",
    [
        connector_pb2.Signatures(campaign="民复〔2026〕9号", program="dibao"),  # another campaign
        connector_pb2.Signatures(campaign=UNDER.campaign, program="tekun"),  # another programme
    ],
)
def test_a_handle_is_honoured_under_its_own_campaign_only(
    tmp_path: Path, signatures: connector_pb2.Signatures
) -> None:
    handles, _ = _handles(tmp_path)
    handle = handles.issue(ID, UNDER, DAY + dt.timedelta(days=30))
    with pytest.raises(HandleRefused, match="issued under campaign"):
        handles.open(handle, signatures, DAY, "q")


def test_without_the_registrys_record_a_handle_is_nothing(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    handles, _ = _handles(tmp_path / "a")
    other, _ = _handles(tmp_path / "b")  # another registry
    handle = handles.issue(ID, UNDER, DAY + dt.timedelta(days=30))
    altered = handle[:-1] + bytes([handle[-1] ^ 1])
    old_sealed = bytes(12) + b"x" * 40  # a handle sealed before records were kept
    for forged, by in ((altered, handles), (handle, other), (old_sealed, handles)):
        with pytest.raises(HandleRefused, match="not one this registry holds a record of"):
            by.open(forged, UNDER, DAY, "q")


def test_a_renewal_moves_the_end_without_counting_a_use(tmp_path: Path) -> None:
    handles, store = _handles(tmp_path)
    handle = handles.issue(ID, UNDER, DAY + dt.timedelta(days=30))
    handles.renew(handle, DAY + dt.timedelta(days=90))
    (row,) = store.handles()
    assert row.until == "2027-02-22" and row.uses == 0
    assert handles.open(handle, UNDER, DAY + dt.timedelta(days=60), "q") == ID
