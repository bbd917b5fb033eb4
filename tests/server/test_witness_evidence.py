"""The service and the log's witness (issue #23): its ``[witness]`` config; the evidence it
gives the key custodian is proven in a checkpoint the witness cosigned, and when no cosigned
checkpoint can be had the request stops before the custodian is asked: UNAVAILABLE ("retry
later") naming the witness, nothing decided."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.rpc import error_details_pb2

from hedui.audit.cosignature import WitnessPolicy
from hedui.audit.log import AuditLog
from hedui.audit.store import LogStore, open_log_engine
from hedui.proto.v1 import audit_pb2
from hedui.server.config import load
from hedui.server.errors import ConfigError, SourceUnavailable
from hedui.server.evidence import WitnessUnavailable, log_evidence
from hedui.server.status import status_of
from tests.witnessing import WITNESS_NAME, LocalWitness

ORIGIN = "hedui.test/service-log"
KEY = Ed25519PrivateKey.generate()
BASE = """
[service]
audit_database = "sqlite:///a.sqlite"
service_database = "sqlite:///s.sqlite"
[registry]
address = "127.0.0.1:1"
[connectors]
hrss = "127.0.0.1:2"
"""


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[LocalWitness]:
    w = LocalWitness.start(tmp_path / "witness", ORIGIN, KEY)
    yield w
    w.stop()


def _load(tmp_path: Path, witness_table: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "service.toml"
    path.write_text(BASE + witness_table, encoding="utf-8")
    return load(path, {})


def test_the_witness_table_is_read_checked_and_written_back(
    tmp_path: Path, witness: LocalWitness
) -> None:
    assert _load(tmp_path, "").witness_urls == ()
    config = _load(tmp_path, f'[witness]\nurl = "{witness.url}"\nvkey = "{witness.vkey}"\n')
    assert config.witness_urls == (witness.url,) and config.witness_vkeys == (witness.vkey,)
    assert (config.witness_quorum, config.witness_timeout_seconds) == (1, 5.0)
    again = tmp_path / "again.toml"
    again.write_text(config.to_toml(), encoding="utf-8")
    assert load(again, {}) == config
    for table, said in (
        (f'url = "{witness.url}"\n', "url and vkey are required"),
        (f'url = ["{witness.url}", "https://b:1"]\nvkey = "{witness.vkey}"\n', "one of each"),
        (f'url = "http://a:1"\nvkey = "{witness.vkey}"\n', "is not https://"),
        (f'url = "{witness.url}"\nvkey = "nope"\n', "malformed witness vkey"),
        (f'url = "{witness.url}"\nvkey = "{witness.vkey}"\nquorum = 2\n', "quorum 2 out of range"),
        (f'url = "{witness.url}"\nvkey = "{witness.vkey}"\nwho = 1\n', "no setting who"),
        (f'url = "{witness.url}"\nvkey = "{witness.vkey}"\ntimeout_seconds = 0\n', "above 0"),
    ):
        with pytest.raises(ConfigError, match=said):
            _load(tmp_path, "[witness]\n" + table)


def _log(tmp_path: Path, witness: LocalWitness) -> AuditLog:
    return AuditLog(
        LogStore(open_log_engine(f"sqlite:///{tmp_path / 'audit.sqlite'}")),
        origin=ORIGIN,
        signing_key=KEY,
        witnesses=witness.witnessing(pause=0.2, timeout=2),
    )


def _request(log: AuditLog, query_id: str) -> list[int]:
    entry = audit_pb2.AuditEntry(request=audit_pb2.RequestEntry(query_id=query_id))
    return [r.leaf_index for r in log.append([entry])]


def test_the_evidence_is_proven_in_a_cosigned_checkpoint(
    tmp_path: Path, witness: LocalWitness
) -> None:
    log = _log(tmp_path, witness)
    policy = WitnessPolicy.from_vkeys([witness.vkey])
    first = _request(log, "q1")
    e = log_evidence(log, first)(0)
    assert policy.check(e.checkpoint)
    # the custodian witnessed size 1; a checkpoint stored without cosignature (the witness
    # was down) is not given: the latest, cosigned when it is back, proven from size 1
    witness.stop()
    second = _request(log, "q2")
    witness.serve()
    time.sleep(0.3)  # after the pause in which a witness that failed is not asked again
    e = log_evidence(log, second)(1)
    assert policy.check(e.checkpoint) and e.witness_size == 1 and len(e.consistency_proof) == 1
    assert log.store.checkpoint_at(2) != e.checkpoint == log.checkpoint(2)
    # requests inside a cosigned checkpoint the custodian witnessed are proven there, alone
    inside = log_evidence(log, first)(2)
    assert inside.checkpoint == log.checkpoint(2) and inside.consistency_proof == ()


def test_no_cosigned_checkpoint_stops_the_request_unavailable_naming_the_witness(
    tmp_path: Path, witness: LocalWitness
) -> None:
    log = _log(tmp_path, witness)
    _request(log, "q0")
    witness.stop()
    leaves = _request(log, "q1")
    with pytest.raises(WitnessUnavailable) as e:
        log_evidence(log, leaves)(1)
    assert isinstance(e.value, SourceUnavailable)
    status = status_of(e.value, "R-1")
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert witness.url in status.message and WITNESS_NAME in status.message
    assert "decrypts only under a cosigned one" in status.message
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in status.details)
