"""Issue #9: the token authority's CPU per household member at query time (one OPRF evaluation
per member, one HMAC per member and connector, padding and one grant signature per query), per
customer at import (one blinded evaluation), and a bank's import through the real gRPC path,
extrapolated to a million customers."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest

from hedui.connectors.server import ConnectorSettings, start_registry
from hedui.connectors.store import RegisterStore, open_engine
from hedui.connectors.token_authority import AuthoritySettings, TokenAuthority
from hedui.connectors.tokenizer import AuthorityTokenizer
from hedui.core import oprf
from hedui.core.deployment import default_connector_ids
from hedui.core.grants import Binding
from hedui.core.keystore import KeyDir
from hedui.core.resident_id import make

CONNECTORS = tuple(default_connector_ids())
MEMBERS = [make("330106", dt.date(1970, 1, 1) + dt.timedelta(days=i), 11).value for i in range(3)]
IMPORT_CUSTOMERS = 20_000
RESULTS: dict[str, float] = {}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    k = KeyDir(tmp_path_factory.mktemp("ta-keys"))
    k.init(["bank-01"], paillier_bits=1024)
    return k


def test_query_time_per_member(benchmark: Any, keys: KeyDir) -> None:
    ta = TokenAuthority(
        keys.oprf_key(1), 1, keys.grant_signing_key(), AuthoritySettings(CONNECTORS)
    )
    n = iter(range(10**9))

    def household() -> None:
        ta.grant(f"q{next(n)}", [ta.tokens(MEMBERS, "HH1")], [Binding(bytes(32), bytes(32))])

    benchmark.pedantic(household, rounds=200, iterations=1, warmup_rounds=5)
    per_member = benchmark.stats.stats.median / len(MEMBERS)
    RESULTS["query_ms_per_member"] = per_member * 1000
    benchmark.extra_info.update(
        ms_per_member=round(per_member * 1000, 3), connectors=len(CONNECTORS)
    )


def test_import_time_per_customer_at_the_authority(benchmark: Any, keys: KeyDir) -> None:
    key = keys.oprf_key(1)
    blinded = [oprf.blind(i.encode())[1] for i in MEMBERS * 342]  # 1 026 elements
    benchmark.pedantic(lambda: key.blind_evaluate(blinded), rounds=10, iterations=1)
    per = benchmark.stats.stats.median / len(blinded)
    RESULTS["import_ms_per_customer_authority"] = per * 1000
    benchmark.extra_info.update(ms_per_customer=round(per * 1000, 4))


def test_a_bank_import_through_grpc(benchmark: Any, keys: KeyDir, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    RegisterStore(open_engine(url))
    server = start_registry(
        ConnectorSettings("registry", url),
        keys,
        AuthoritySettings(CONNECTORS, {"bank-01": 10 * IMPORT_CUSTOMERS}),
    )
    tokenizer = AuthorityTokenizer(f"127.0.0.1:{server.port}", keys.tls("bank-01"), "bank-01", 1)
    ids = [
        make("330106", dt.date(1930, 1, 1) + dt.timedelta(days=i // 500), (i % 500) * 2).value
        for i in range(IMPORT_CUSTOMERS)
    ]
    cpu = time.process_time()
    benchmark.pedantic(lambda: tokenizer.tokens(ids), rounds=1, iterations=1)
    client_cpu = time.process_time() - cpu
    wall = benchmark.stats.stats.median
    RESULTS["import_s_per_million"] = wall / IMPORT_CUSTOMERS * 1e6
    benchmark.extra_info.update(
        customers=IMPORT_CUSTOMERS,
        seconds=round(wall, 2),
        per_customer_ms=round(wall / IMPORT_CUSTOMERS * 1000, 3),
        million_customers_minutes=round(wall / IMPORT_CUSTOMERS * 1e6 / 60, 1),
        process_cpu_s=round(client_cpu, 2),
    )
    tokenizer.close()
    server.stop(0)
    print("\n" + "\n".join(f"{k}: {v:.3f}" for k, v in RESULTS.items()))
