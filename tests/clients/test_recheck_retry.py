"""`hedui recheck` never writes "ask again later" as a household's final line (issue #22 item 3):
RESOURCE_EXHAUSTED, UNAVAILABLE and ABORTED are asked again after the service's RetryInfo
delay, and what cannot be settled within the patience is named, with exit status 1.

The service here is a stand-in over real gRPC that answers as the real one does when a
campaign runs into a limit; the real service is exercised by tests/e2e/test_campaign_scale.py.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from hedui.clients.errors import ClientError
from hedui.clients.intake import IntakeProfile
from hedui.clients.recheck import recheck
from hedui.core import rpc
from hedui.core.resident_id import make
from hedui.proto.v1 import common_pb2, verification_pb2, verification_pb2_grpc
from hedui.server.status import retry_after
from hedui.server.verification import batch_result

IDS = [make("330106", dt.date(1960, 1, 1) + dt.timedelta(days=i), 3).value for i in range(3)]


class Limited(verification_pb2_grpc.VerificationServiceServicer):
    """Refuses the second roster line as over a limit in the first ``refusals`` rounds."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.rounds = 0

    def Verify(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "only campaigns here")

    def GetReport(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "only campaigns here")

    def VerifyBatch(
        self, request_iterator: Iterator[verification_pb2.VerifyRequest], context: object
    ) -> Iterator[verification_pb2.BatchResult]:
        self.rounds += 1
        for request in request_iterator:
            if request.request_id.endswith("-2") and self.rounds <= self.refusals:
                yield batch_result(
                    request.request_id,
                    rpc.status_pb(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "intake is over its rate of 300 verifications a minute",
                        retry_after(7),
                    ),
                )
                continue
            yield verification_pb2.BatchResult(
                request_id=request.request_id,
                verdict=verification_pb2.Verdict(
                    request_id=request.request_id, decision=common_pb2.INELIGIBLE
                ),
            )


def _run(tmp_path: Path, refusals: int) -> tuple[list[dict], list[float], object]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    verification_pb2_grpc.add_VerificationServiceServicer_to_server(Limited(refusals), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    roster = tmp_path / "roster.txt"
    roster.write_text("\n".join(IDS) + "\n")
    out = tmp_path / "verdicts.jsonl"
    now, slept = [0.0], []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    try:
        summary: object = recheck(
            IntakeProfile(f"127.0.0.1:{port}", "service", None),
            roster,
            out,
            program="dibao",
            campaign_number="doc-1",
            patience=60.0,
            sleep=sleep,
            clock=lambda: now[0],
        )
    except ClientError as e:
        summary = e
    finally:
        server.stop(None)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    return rows, slept, summary


def test_a_refusal_over_a_limit_is_asked_again_after_its_retry_delay(tmp_path: Path) -> None:
    rows, slept, summary = _run(tmp_path, refusals=2)
    assert sorted(r["line"] for r in rows) == [1, 2, 3]
    assert all(r["decision"] == "INELIGIBLE" for r in rows)  # nothing written as refused
    assert slept == [7.0, 7.0]  # the service's RetryInfo, not a guess
    assert "3 decided (3 INELIGIBLE)" in summary.text()  # type: ignore[attr-defined]


def test_what_stays_over_the_limit_is_named_and_never_written(tmp_path: Path) -> None:
    rows, _, error = _run(tmp_path, refusals=10**6)
    assert isinstance(error, ClientError)
    assert sorted(r["line"] for r in rows) == [1, 3]
    assert "1 household(s) could not be settled" in str(error)
    assert "roster lines 2" in str(error) and "RESOURCE_EXHAUSTED" in str(error)


@pytest.mark.parametrize("code", ["RESOURCE_EXHAUSTED", "UNAVAILABLE", "ABORTED"])
def test_an_earlier_file_with_a_retryable_line_is_asked_again(tmp_path: Path, code: str) -> None:
    from hedui.clients.recheck import _done_requests

    out = tmp_path / "v.jsonl"
    out.write_text(
        json.dumps({"campaign": "c", "request_id": "recheck-c-1", "error": {"code": code}}) + "\n"
    )
    assert _done_requests(out, "c") == set()
