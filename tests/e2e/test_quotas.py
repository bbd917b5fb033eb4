"""Issue #11 item 3 through the real gRPC path: a caller over its rate gets RESOURCE_EXHAUSTED
with a QuotaFailure, and a burst of unknown applicants writes an alert to the audit log that
`hedui audit alerts` shows; issue #24 item 7: the burst also refuses the caller (QuotaFailure and
RetryInfo) until its cooling-off ends."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from hedui.clients.cli import main
from hedui.clients.deploy import Deployment, prepare
from hedui.clients.intake import IntakeProfile
from hedui.core.resident_id import make
from hedui.core.rpc import error_details, open_channel
from hedui.core.workdir import Workdir
from hedui.proto.v1 import verification_pb2, verification_pb2_grpc
from tests.e2e.conftest import grpc_code
from tests.e2e.test_faults import HEAD, consent_of, small_deployment

STRANGERS = [make("110101", dt.date(1980, 1, 1), n) for n in range(1, 4)]
COOLOFF = 4  # seconds


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workdir]:
    mp = pytest.MonkeyPatch()
    mp.setenv("HEDUI_RATE_PER_MINUTE", "6")  # read by the service's process at its start
    mp.setenv("HEDUI_NOT_FOUND_ALERT", "3")
    mp.setenv("HEDUI_NOT_FOUND_COOLOFF_SECONDS", str(COOLOFF))
    settings = small_deployment(tmp_path_factory.mktemp("quotas"))
    w = prepare(settings, lambda _: None, dt.date.today())
    deployment = Deployment(settings, w)
    try:
        deployment.start()
    finally:
        mp.undo()
    yield w
    deployment.stop()


def _stub(w: Workdir) -> verification_pb2_grpc.VerificationServiceStub:
    p = IntakeProfile.load(w.intake_profile)
    return verification_pb2_grpc.VerificationServiceStub(
        open_channel(p.address, tls=p.tls, server_name=p.server_name)
    )


def _verify(stub: verification_pb2_grpc.VerificationServiceStub, rid: str, id_number: str) -> None:
    stub.Verify(
        verification_pb2.VerifyRequest(
            request_id=rid, id_number=id_number, program="dibao", consent=consent_of(id_number)
        ),
        timeout=30,
    )


def test_enumeration_raises_an_alert_and_the_rate_is_enforced(
    limited: Workdir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stub = _stub(limited)
    for n, stranger in enumerate(STRANGERS):
        with pytest.raises(grpc.RpcError) as info:
            _verify(stub, f"q-miss-{n}", stranger.value)
        assert grpc_code(info.value) == grpc.StatusCode.NOT_FOUND
    # the enumeration is stopped: the next lookup (even of a real person) is refused, with the
    # cooling-off left to wait; before issue #24 it was answered
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        _verify(stub, "q-cooling", HEAD.value)
    assert grpc_code(info.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = error_details(info.value)
    (failure,) = [d for d in details if isinstance(d, error_details_pb2.QuotaFailure)]
    assert failure.violations[0].subject == "caller:intake"
    assert "cooling off" in failure.violations[0].description
    (retry,) = [d for d in details if isinstance(d, error_details_pb2.RetryInfo)]
    assert 0 < retry.retry_delay.seconds <= COOLOFF
    time.sleep(max(0.0, retry.retry_delay.seconds - (time.monotonic() - started)) + 0.5)
    for n in range(3):
        _verify(stub, f"q-ok-{n}", HEAD.value)
    with pytest.raises(grpc.RpcError) as info:
        _verify(stub, "q-over", HEAD.value)
    assert grpc_code(info.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
    (failure,) = [
        d for d in error_details(info.value) if isinstance(d, error_details_pb2.QuotaFailure)
    ]
    assert failure.violations[0].subject == "caller:intake"
    assert "rate of 6" in failure.violations[0].description

    assert main(["audit", "alerts", "--workdir", str(limited.root)]) == 0
    out = capsys.readouterr().out
    assert "NOT_FOUND_BURST" in out and "caller:intake" in out and "1 alert" in out
    assert f"refused for {COOLOFF} seconds" in out
    logs = "".join(p.read_text(errors="replace") for p in limited.log_dir.glob("*.log"))
    assert logs.count("alert NOT_FOUND_BURST for caller:intake") == 1  # logged once
    # no ID number of those it looked for is in the alert
    assert not any(s.value in out or s.value in logs for s in STRANGERS)
