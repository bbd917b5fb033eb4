"""Faulty sources never give a favourable verdict: down, slow, garbage, too few banks."""

from __future__ import annotations

import csv
import datetime as dt
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from hedui.clients.deploy import Deployment, DeploySettings, prepare
from hedui.connectors.integrity import RowSeal
from hedui.connectors.sdk import Answerer, ConnectorServicer, GrantPolicy
from hedui.connectors.server import CONNECTOR_SERVICE
from hedui.connectors.store import HoldingStore, open_engine
from hedui.core.deployment import DEPARTMENT_KINDS, kind_of
from hedui.core.packing import batch_from_wire
from hedui.core.resident_id import make
from hedui.core.rpc import RunningServer, create_server
from hedui.core.workdir import Workdir
from hedui.proto.v1 import connector_pb2, connector_pb2_grpc, verification_pb2
from tests.e2e.conftest import simple_consent, verify_dibao

BANKS = ("bank-01", "bank-02", "bank-03", "bank-04", "bank-05")
HEAD = make("330106", dt.date(1970, 3, 4), 11)
SPOUSE = make("330106", dt.date(1972, 5, 6), 22)
CAR_OWNER = make("330212", dt.date(1980, 1, 2), 33)


def consent_of(id_number: str) -> verification_pb2.Consent:
    """The consent of the household of this population the person is in, signed by its adults."""
    if id_number in (HEAD.value, SPOUSE.value):
        return simple_consent("case-A", [HEAD.value, SPOUSE.value])
    return simple_consent(f"case-{id_number[-4:]}", [id_number])


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _population(data: Path) -> None:
    """A hand-written population, not made by the project's generator."""
    data.mkdir()
    _write(
        data / "registry.csv",
        ["household_id", "id_number", "relation", "birth_date"],
        [
            ["A", HEAD.value, "head", "1970-03-04"],
            ["A", SPOUSE.value.lower(), "spouse", "1972-05-06"],
            ["B", CAR_OWNER.value, "head", "1980-01-02"],
        ],
    )
    _write(
        data / "hrss.csv",
        ["id_number", "monthly_pension", "monthly_wage", "monthly_unemployment_benefit"],
        [
            [HEAD.value, 30000, 0, 0],
            [HEAD.value, 12345, 0, 0],  # a second row for one person is added up
            [SPOUSE.value, 0, 50000, 0],
        ],
    )
    for i, bank in enumerate(BANKS, start=1):
        _write(
            data / f"{bank}.csv",
            ["id_number", "deposits", "wealth_products"],
            [[HEAD.value, 1000 * i, 0]],
        )
    _write(
        data / "vehicles.csv",
        ["id_number", "vehicles", "vehicle_value"],
        [[CAR_OWNER.value, 1, 5000000]],
    )


class Garbage(connector_pb2_grpc.ConnectorServiceServicer):
    def __init__(self, answerer: Answerer, delay: float = 0.0, corrupt: bool = True) -> None:
        self.answerer, self.delay, self.corrupt = answerer, delay, corrupt

    def Describe(self, request, context):
        return self.answerer.describe()

    def QueryBatch(self, request, context):
        time.sleep(self.delay)
        lay = request.layout
        layout = batch_from_wire(
            ((s.field, s.offset, s.bits, s.max_total) for s in lay.slots),
            lay.stride,
            lay.per_ciphertext,
            2046,
        )
        households = [list(h.tokens) for h in request.households]
        answer = self.answerer.answer(request.query_id, households, layout)
        if self.corrupt:
            answer.packed[0] = bytes(len(answer.packed[0]) - 1) + b"\x07"
        return answer


def small_deployment(root: Path, **overrides: Any) -> DeploySettings:
    """The hand-written population under ``root``, the departments and three banks."""
    _population(root / "data")
    return DeploySettings(
        workdir=root / "work",
        data=root / "data",
        connector_ids=(*DEPARTMENT_KINDS, *BANKS),
        min_banks=3,
        **overrides,
    )


def _serve(
    w: Workdir, bank: str, servicer: connector_pb2_grpc.ConnectorServiceServicer
) -> RunningServer:
    def register(server: grpc.Server) -> None:
        connector_pb2_grpc.add_ConnectorServiceServicer_to_server(servicer, server)

    return create_server(
        "127.0.0.1:0",
        tls=w.tls(bank),
        roles={CONNECTOR_SERVICE: {"service"}},
        register=[register],
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workdir]:
    settings = small_deployment(tmp_path_factory.mktemp("faults"), query_timeout_seconds=2.0)
    w = prepare(settings, lambda _: None, dt.date.today())

    def answerer(bank: str, epoch: int = 1) -> Answerer:
        keys = w.keys(bank)  # the bank's own directory: its keys and what it trusts
        store = HoldingStore(
            open_engine(w.connector_db_url(bank)),
            RowSeal(keys.connector_integrity_key(bank), bank),
        )
        return Answerer(
            bank,
            kind_of(bank),
            store,
            keys.paillier_public(),
            keys.connector_signing_key(bank),
            b"",
            GrantPolicy(keys.grant_verify_key(), epoch),
        )

    garbage = _serve(w, "bank-03", Garbage(answerer("bank-03")))
    slow = _serve(w, "bank-04", Garbage(answerer("bank-04"), delay=5.0, corrupt=False))
    # a bank whose data is of an older token epoch would answer 0 for everyone: it is refused
    stale = _serve(w, "bank-05", ConnectorServicer(answerer("bank-05", epoch=0)))
    deployment = Deployment(settings, w)
    deployment.start(
        {
            "bank-02": f"127.0.0.1:{_free_port()}",  # nobody listens: the bank is down
            "bank-03": f"127.0.0.1:{garbage.port}",
            "bank-04": f"127.0.0.1:{slow.port}",
            "bank-05": f"127.0.0.1:{stale.port}",
        }
    )
    yield w
    deployment.stop()
    for s in (garbage, slow, stale):
        s.stop(0)


def _verify(w: Workdir, rid: str, id_number: str) -> dict:
    return verify_dibao(w.intake_profile, id_number, rid, consent_of(id_number))


def test_down_slow_and_garbage_banks_give_needs_review_naming_them(faulty: Workdir) -> None:
    v = _verify(faulty, "f-1", HEAD.value)
    assert v["decision"] == "NEEDS_REVIEW" and v["benefit_fen"] == 0
    failures = {f["connector_id"]: f["reason"] for f in v["failures"]}
    assert set(failures) == {"bank-02", "bank-03", "bank-04", "bank-05"}
    assert "another token epoch" in failures["bank-05"]
    assert "unreachable" in failures["bank-02"]
    assert "invalid answer" in failures["bank-03"]
    assert "no answer within 2 s" in failures["bank-04"]
    rules = {r["id"]: r for r in v["rules"]}
    assets = rules["financial_assets"]
    assert assets["passed"] is None and assets["value"] is None
    assert {"bank-02", "bank-03", "bank-04"} <= set(assets["missing_sources"])
    # two answering banks are fewer than min_banks = 3: the custodian refuses that total too
    assert any(s.startswith("key custodian") for s in assets["missing_sources"])
    # the rules that do not need a bank are decided from the answers that came
    assert rules["income"]["passed"] is True
    # the income is the social security department's figure alone: shown as passed against the
    # line, never as the department's own number (issue #11 item 4)
    assert rules["income"]["value"] is None and rules["income"]["threshold"]
    assert rules["vehicles"]["passed"] is True


def test_a_failure_that_is_decided_stays_ineligible(faulty: Workdir) -> None:
    v = _verify(faulty, "f-2", CAR_OWNER.value)
    assert v["decision"] == "INELIGIBLE"
    assert {r["id"]: r["passed"] for r in v["rules"]}["vehicles"] is False


def test_a_connector_refuses_another_paillier_key(faulty: Workdir) -> None:
    from hedui.core.paillier import generate_keypair
    from hedui.core.rpc import open_channel

    cfg = faulty.service_config.read_text()
    address = next(
        line.split("=")[1].strip().strip('"')
        for line in cfg.splitlines()
        if line.startswith('"bank-01"')
    )
    stub = connector_pb2_grpc.ConnectorServiceStub(
        open_channel(address, tls=faulty.tls("service"), server_name="bank-01")
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.QueryBatch(
            connector_pb2.QueryBatchRequest(
                query_id="q",
                households=[connector_pb2.TokenSet(tokens=[bytes(32)] * 8)],
                key_fingerprint=generate_keypair(1024).public.fingerprint,
            ),
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    # an intake certificate may not query a connector at all
    stub = connector_pb2_grpc.ConnectorServiceStub(
        open_channel(address, tls=faulty.tls("intake"), server_name="bank-01")
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.Describe(connector_pb2.DescribeRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]


def test_concurrent_repeats_of_one_request_verify_once(faulty: Workdir) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from hedui.audit.store import LogStore, open_log_engine
    from hedui.clients.errors import ClientError
    from hedui.proto.v1 import audit_pb2

    def call(_: int) -> object:
        try:
            return _verify(faulty, "same-id", CAR_OWNER.value)
        except ClientError as e:
            return str(e)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(call, range(4)))
    verdicts = [r for r in results if isinstance(r, dict)]
    assert verdicts and all(v == verdicts[0] for v in verdicts)
    assert all("ABORTED" in r for r in results if isinstance(r, str))
    store = LogStore(open_log_engine(faulty.audit_db_url))
    entries = [audit_pb2.AuditEntry.FromString(e) for _, e in store.entries(0, 10_000)]
    assert (
        sum(1 for e in entries if e.HasField("verdict") and e.verdict.request_id == "same-id") == 1
    )


def test_unknown_person_leaves_an_outcome_entry_without_the_id(faulty: Workdir) -> None:
    from hedui.audit.store import LogStore, open_log_engine
    from hedui.clients.errors import ClientError
    from hedui.proto.v1 import audit_pb2

    stranger = make("330106", dt.date(1990, 1, 1), 55)
    with pytest.raises(ClientError, match="NOT_FOUND"):
        _verify(faulty, "nf-1", stranger.value)
    store = LogStore(open_log_engine(faulty.audit_db_url))
    rows = store.entries(0, 10_000)
    last = audit_pb2.AuditEntry.FromString(rows[-1][1])
    assert last.verdict.request_id == "nf-1" and "household register" in last.verdict.error
    assert all(stranger.value.encode() not in e for _, e in rows)


def test_the_custodian_is_its_own_process_and_answers_only_the_service(faulty: Workdir) -> None:
    from hedui.core.rpc import open_channel
    from hedui.proto.v1 import custodian_pb2, custodian_pb2_grpc

    config = faulty.service_config.read_text()
    line = next(x for x in config.splitlines() if x.startswith("custodian_address"))
    address = line.split("=")[1].strip().strip('"')
    assert address.startswith("127.0.0.1:")
    for role, code in (
        ("intake", grpc.StatusCode.PERMISSION_DENIED),
        ("auditor", grpc.StatusCode.PERMISSION_DENIED),
    ):
        stub = custodian_pb2_grpc.CustodianServiceStub(
            open_channel(address, tls=faulty.tls(role), server_name="custodian")
        )
        with pytest.raises(grpc.RpcError) as info:
            stub.DecryptBatch(custodian_pb2.DecryptBatchRequest(query_id="x"), timeout=10)
        assert info.value.code() == code  # type: ignore[attr-defined]
    # the service may call it, and a made-up request is refused without decrypting anything
    stub = custodian_pb2_grpc.CustodianServiceStub(
        open_channel(address, tls=faulty.tls("service"), server_name="custodian")
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.DecryptBatch(custodian_pb2.DecryptBatchRequest(query_id="x", households=1), timeout=10)
    assert info.value.code() in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
    )  # type: ignore[attr-defined]


def test_the_log_is_signed_under_an_origin_of_its_own(faulty: Workdir) -> None:
    """Issue #25 item 6: `hedui up` gives a fresh deployment's log its own origin, kept in the
    service's config; the key custodian witnesses the same origin, the vkey is named after it."""
    import re

    from hedui.server.config import load as load_service_config

    origin = load_service_config(faulty.service_config, {}).log_origin
    assert re.fullmatch(r"hedui\.local/[0-9a-f]{8}-log", origin), origin
    assert f'log_origin = "{origin}"' in faulty.custodian_config.read_text(encoding="utf-8")
    assert faulty.log_vkey.read_text(encoding="utf-8").startswith(f"{origin}+")
    assert faulty.auditor_profile.exists()
