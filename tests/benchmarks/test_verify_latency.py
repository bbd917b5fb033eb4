"""Issue #2: Verify latency for a 3-member household against the full 87-connector deployment
(`hedui up`, 2048-bit Paillier, mutual TLS), with the cost of each Paillier operation measured in
the same run, and the ratio of the latency to the least Paillier work one verification needs."""

from __future__ import annotations

import csv
import itertools
import statistics
from collections import Counter
from typing import Any

from hedui.clients.intake import IntakeClient, IntakeProfile
from hedui.core.deployment import DEPARTMENT_KINDS, bank_ids
from hedui.core.paillier import generate_keypair
from hedui.proto.v1 import verification_pb2
from tests.e2e.conftest import Up

RESULTS: dict[str, float] = {}
KEY = generate_keypair(2048)


def _three_member_applicant(up: Up) -> str:
    with (up.data / "registry.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    sizes = Counter(r["household_id"] for r in rows)
    return next(
        r["id_number"] for r in rows if r["relation"] == "head" and sizes[r["household_id"]] == 3
    )


def _p(data: list[float], q: float) -> float:
    return statistics.quantiles(data, n=100, method="inclusive")[int(q) - 1]


def test_paillier_encrypt(benchmark: Any) -> None:
    values = itertools.count(1)
    benchmark(lambda: KEY.public.encrypt(next(values)))  # type: ignore[operator]
    RESULTS["encrypt"] = benchmark.stats.stats.median  # type: ignore[attr-defined]


def test_paillier_decrypt(benchmark: Any) -> None:
    c = KEY.public.encrypt(123456)
    benchmark(lambda: KEY.decrypt(c))  # type: ignore[operator]
    RESULTS["decrypt"] = benchmark.stats.stats.median  # type: ignore[attr-defined]


def test_paillier_add(benchmark: Any) -> None:
    cs = [KEY.public.encrypt(i) for i in range(2)]
    benchmark(lambda: KEY.public.add(cs))  # type: ignore[operator]
    RESULTS["add"] = benchmark.stats.stats.median  # type: ignore[attr-defined]


def test_verify_latency_3_member_household(benchmark: Any, up: Up) -> None:
    applicant = _three_member_applicant(up)
    client = IntakeClient(IntakeProfile.load(up.workdir.intake_profile))
    n = itertools.count()

    def verify() -> None:
        client.verify(
            verification_pb2.VerifyRequest(
                request_id=f"bench-{next(n)}",
                id_number=applicant,
                program="dibao",
                consent=up.consent(applicant),
            )
        )

    benchmark.pedantic(verify, rounds=30, iterations=1, warmup_rounds=2)  # type: ignore[attr-defined]
    client.close()
    data = benchmark.stats.stats.data  # type: ignore[attr-defined]
    p50, p95 = statistics.median(data), _p(data, 95)
    # least Paillier work: one encryption per declared field per connector, one decryption per field
    fields = sum(len(k.fields) for k in DEPARTMENT_KINDS.values()) + 2 * len(bank_ids())
    distinct = len({f.name for k in DEPARTMENT_KINDS.values() for f in k.fields}) + 2
    work = fields * RESULTS.get("encrypt", 0) + distinct * RESULTS.get("decrypt", 0)
    benchmark.extra_info.update(  # type: ignore[attr-defined]
        p50_ms=round(p50 * 1000, 1),
        p95_ms=round(p95 * 1000, 1),
        encryptions=fields,
        decryptions=distinct,
        paillier_work_ms=round(work * 1000, 1),
        ratio_p50_to_paillier_work=round(p50 / work, 2) if work else None,
        paillier_ms={k: round(v * 1000, 3) for k, v in RESULTS.items()},
    )
    print(
        f"\nVerify p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms; Paillier work {work * 1000:.0f} ms "
        f"({fields} encryptions, {distinct} decryptions); ratio {p50 / work if work else 0:.2f}"
    )
