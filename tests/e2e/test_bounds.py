"""Issue #11 item 7: every count, size and offset of an internal message is checked before
anything is allocated from it, and answered INVALID_ARGUMENT with a ``BadRequest`` detail.

Measured on the code before: ``DecryptBatch(households=2^31-1)`` was stopped only by the grant's
signature; a connector slot offset of 2^31 built a 256 MiB integer (650 MiB peak) and answered
UNKNOWN with the exception's text."""

from __future__ import annotations

import secrets

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hedui.core import grants
from hedui.core.rpc import error_details, open_channel
from hedui.proto.v1 import connector_pb2, custodian_pb2, custodian_pb2_grpc
from tests.e2e.conftest import Up, grpc_code
from tests.e2e.test_attacks import _config, _connector


def _bad_field(e: grpc.RpcError) -> str:
    assert grpc_code(e) == grpc.StatusCode.INVALID_ARGUMENT, e
    return str(next(v.field for d in error_details(e) for v in d.field_violations))


def _custodian(up: Up) -> grpc.Channel:
    return open_channel(
        _config(up)["service"]["custodian_address"],
        tls=up.workdir.tls("service"),
        server_name="custodian",
    )


@pytest.mark.parametrize(
    ("households", "answers", "field"),
    [
        (2**31 - 1, 0, "households"),
        (0, 1, "households"),
        (3, 200, "answers"),
    ],
)
def test_the_custodian_checks_a_batch_before_it_allocates(
    up: Up, households: int, answers: int, field: str
) -> None:
    channel = _custodian(up)
    stub = custodian_pb2_grpc.CustodianServiceStub(channel)
    answer = custodian_pb2.CustodyAnswer(connector_id="hrss", packed=[b"\x01"])
    with pytest.raises(grpc.RpcError) as info:
        stub.DecryptBatch(
            custodian_pb2.DecryptBatchRequest(
                query_id="bounds-1", households=households, answers=[answer] * answers
            ),
            timeout=10,
        )
    assert _bad_field(info.value) == field
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    channel.close()


def test_the_custodian_wants_the_ciphertexts_the_layout_makes(up: Up) -> None:
    stub = custodian_pb2_grpc.CustodianServiceStub(_custodian(up))
    with pytest.raises(grpc.RpcError) as info:
        stub.DecryptBatch(
            custodian_pb2.DecryptBatchRequest(
                query_id="bounds-2",
                households=2,
                answers=[custodian_pb2.CustodyAnswer(connector_id="hrss", packed=[b"\x01"] * 500)],
            ),
            timeout=10,
        )
    assert _bad_field(info.value) == "answers[0].packed"


@pytest.mark.parametrize("offset", [2**31, 2**32 - 1, 2046])
def test_a_connector_refuses_a_slot_outside_the_key(up: Up, offset: int) -> None:
    public = up.workdir.keys("custodian").paillier_public()
    with pytest.raises(grpc.RpcError) as info:
        _connector(up, "hrss").QueryBatch(
            connector_pb2.QueryBatchRequest(
                query_id="bounds-3",
                households=[
                    connector_pb2.TokenSet(tokens=grants.padded([secrets.token_bytes(32)]))
                ],
                key_fingerprint=public.fingerprint,
                # one household to a plaintext as wide as the key: only the slot is outside it
                layout=connector_pb2.BatchLayout(
                    slots=[
                        connector_pb2.Slot(
                            field="monthly_wage", offset=offset, bits=60, max_total=1
                        )
                    ],
                    stride=public.max_plaintext_bits,
                    per_ciphertext=1,
                ),
            ),
            timeout=10,
        )
    assert _bad_field(info.value) == "layout"
    assert "monthly_wage' lies outside" in str(info.value), info.value


def test_a_connector_refuses_a_batch_stride_outside_the_key(up: Up) -> None:
    fingerprint = up.workdir.keys("custodian").paillier_public().fingerprint
    with pytest.raises(grpc.RpcError) as info:
        _connector(up, "hrss").QueryBatch(
            connector_pb2.QueryBatchRequest(
                query_id="bounds-4",
                households=[
                    connector_pb2.TokenSet(tokens=grants.padded([secrets.token_bytes(32)]))
                ],
                key_fingerprint=fingerprint,
                layout=connector_pb2.BatchLayout(
                    slots=[
                        connector_pb2.Slot(field="monthly_wage", offset=0, bits=60, max_total=1)
                    ],
                    stride=2**32 - 1,
                    per_ciphertext=1,
                ),
            ),
            timeout=10,
        )
    assert _bad_field(info.value) == "layout"
