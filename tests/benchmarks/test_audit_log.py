"""Issue #3: appends per second (one at a time, and batched) on SQLite and PostgreSQL, and the
time of an inclusion and a consistency proof served from storage at 10^6 entries.

HEDUI_BENCH_LOG_SIZE changes the size of the large log (default 1_000_000)."""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, text

from hedui.audit import merkle
from hedui.audit.log import AuditLog
from hedui.audit.store import LogStore, open_log_engine
from hedui.proto.v1 import audit_pb2

PG = os.environ.get("HEDUI_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BIG = int(os.environ.get("HEDUI_BENCH_LOG_SIZE", "1000000"))
KEY = Ed25519PrivateKey.generate()


def entry(i: int) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(
        time_unix_ms=1_700_000_000_000 + i,
        caller="intake",
        caller_role="intake",
        verdict=audit_pb2.VerdictEntry(
            request_id=f"req-{i:09d}",
            program="dibao",
            region="demo",
            applicant_audit_token=secrets.token_bytes(32),
            connectors_answered=[f"bank-{b:02d}" for b in range(1, 74)],
            policy_version="0" * 32,
            query_id="q" * 32,
        ),
    )


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bench.sqlite'}"
        return
    schema = f"bench_{secrets.token_hex(4)}"
    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    yield f"{PG}?options=-csearch_path%3D{schema}"
    with admin.connect() as c:
        c.execute(text(f"DROP SCHEMA {schema} CASCADE"))


def test_append_one_at_a_time(benchmark: Any, url: str) -> None:
    log = AuditLog(LogStore(open_log_engine(url)), origin="bench/log", signing_key=KEY)
    n = itertools.count()
    benchmark.pedantic(
        lambda: log.append([entry(next(n))]), rounds=300, iterations=1, warmup_rounds=5
    )  # type: ignore[attr-defined]
    benchmark.extra_info["appends_per_second"] = round(1 / benchmark.stats.stats.mean)  # type: ignore[attr-defined]


def test_append_batches_of_100(benchmark: Any, url: str) -> None:
    log = AuditLog(LogStore(open_log_engine(url)), origin="bench/log", signing_key=KEY)
    n = itertools.count()
    benchmark.pedantic(  # type: ignore[attr-defined]
        lambda: log.append([entry(next(n)) for _ in range(100)]),
        rounds=30,
        iterations=1,
        warmup_rounds=2,
    )
    benchmark.extra_info["appends_per_second"] = round(100 / benchmark.stats.stats.mean)  # type: ignore[attr-defined]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def big_log(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LogStore]:
    if request.param == "sqlite":
        u = f"sqlite:///{tmp_path_factory.mktemp('big') / 'big.sqlite'}"
        cleanup = None
    else:
        schema = f"big_{secrets.token_hex(4)}"
        admin = create_engine(PG, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f"CREATE SCHEMA {schema}"))
        u = f"{PG}?options=-csearch_path%3D{schema}"
        cleanup = (admin, schema)
    log = AuditLog(LogStore(open_log_engine(u)), origin="bench/log", signing_key=KEY)
    template = entry(0).SerializeToString(deterministic=True)
    from hedui.audit.log import search_keys

    keys = search_keys(entry(0))
    step = 10_000
    for start in range(0, BIG, step):  # the real append path, in batches of 10 000
        log.store.append(
            [(template + i.to_bytes(4, "big"), keys) for i in range(start, min(BIG, start + step))]
        )
    log.sign(BIG)
    yield log.store
    if cleanup:
        with cleanup[0].connect() as c:
            c.execute(text(f"DROP SCHEMA {cleanup[1]} CASCADE"))


def test_inclusion_proof_at_1e6(benchmark: Any, big_log: LogStore) -> None:
    size = big_log.size()
    root = big_log.root(size)
    idx = itertools.cycle(range(7, size, 99_991))

    def prove() -> None:
        i = next(idx)
        proof = big_log.inclusion_proof(i, size)
        merkle.verify_inclusion(
            merkle.leaf_hash(big_log.entries(i, i + 1)[0][1]), i, size, proof, root
        )

    benchmark.pedantic(prove, rounds=50, iterations=1)  # type: ignore[attr-defined]
    benchmark.extra_info["size"] = size  # type: ignore[attr-defined]


def test_consistency_proof_at_1e6(benchmark: Any, big_log: LogStore) -> None:
    size = big_log.size()
    root = big_log.root(size)
    olds = itertools.cycle(range(12_345, size, 77_777))

    def prove() -> None:
        old = next(olds)
        proof = big_log.consistency_proof(old, size)
        merkle.verify_consistency(old, size, proof, big_log.root(old), root)

    benchmark.pedantic(prove, rounds=50, iterations=1)  # type: ignore[attr-defined]
    benchmark.extra_info["size"] = size  # type: ignore[attr-defined]
