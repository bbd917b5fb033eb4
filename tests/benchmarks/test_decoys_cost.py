"""Issue #26 item 1: a measured cost model for decoy residents with encrypted selectors.

Nothing in the product changes. This file measures, with the project's own Paillier adapter
(``core/paillier.py``, 2048-bit keys: ``MIN_PAILLIER_BITS``), the work the design would add:

- the token authority: one Paillier encryption of 0 or 1 (the selector) per token per connector
  (design i), per connector kind (ii: the 73 banks share one set) or per household (iii), made
  classically (r^n), from the DJN fixed-base table (h_s^α) or taken from a pre-filled pool, on
  one core or on a process pool; the OPRF tokens of k × m residents instead of m;
- a connector: Enc(s)^P for each token it holds, P its packed row (bit lengths from the
  synthetic population), one re-randomisation per ciphertext as today;
- the wire: 512 bytes per token per connector, serialised, hashed into the grant and carried
  over TLS;
- today's Verify p50 in the same run (`hedui up`, 40 households), the base of the estimate.

CPU time (``time.process_time``; ``time.thread_time`` where a background thread would be
counted) rather than wall time: the machine's two cores are shared. The last test prints the
model's tables (docs/decoys-cost.md holds a run of them):

    .venv/bin/pytest -o addopts="" tests/benchmarks/test_decoys_cost.py --benchmark-only \
        --benchmark-columns=min,median,mean,max,rounds -s

``HEDUI_BENCH_DECOYS_UP=0`` leaves out the `hedui up` test (the model then takes BENCHMARKS.md's
issue #2 p50); ``HEDUI_BENCH_DECOYS_JSON=path`` also writes the measurements and the model there.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import itertools
import json
import os
import secrets
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import gmpy2
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hedui.connectors.population import generate
from hedui.connectors.token_authority import AuthoritySettings, TokenAuthority
from hedui.core import packing
from hedui.core.deployment import (
    DEPARTMENT_KINDS,
    bank_ids,
    default_connector_ids,
    kind_of,
)
from hedui.core.grants import Binding
from hedui.core.keystore import KeyDir
from hedui.core.paillier import (
    Ciphertext,
    FixedBase,
    PublicKey,
    exponent_bits_for,
    generate_keypair,
)
from hedui.core.resident_id import make
from hedui.proto.v1 import connector_pb2
from hedui.server.app import MIN_PAILLIER_BITS

KEY = generate_keypair(MIN_PAILLIER_BITS)
PUB = KEY.public
N2 = PUB.n_square
EXPONENT = exponent_bits_for(PUB.bits)  # 448 bits for 2048-bit keys
assert PUB.hs is not None
BASE = FixedBase(PUB.hs, N2, EXPONENT)
CT_BYTES = PUB.ciphertext_bytes  # 512

CONNECTORS = tuple(default_connector_ids())  # 13 departments + 73 banks
BANKS = bank_ids()
KINDS = len(DEPARTMENT_KINDS) + 1  # every department its own kind, the banks one
KS = (1, 2, 4, 8)
DESIGNS = {"i": len(CONNECTORS), "ii": KINDS, "iii": 1}  # selector sets per household
MEMBERS = 3  # the interactive household, as in test_verify_latency.py
BANK_SHARE = 0.05  # a bank with 5 % of the residents as customers
HRSS_COVERAGE = 1.0  # the "hrss ~ everyone"
CORES = 2
IDS = [
    make("330106", dt.date(1960, 1, 1) + dt.timedelta(days=37 * i), 11 + i).value
    for i in range(MEMBERS * max(KS))
]
# from BENCHMARKS.md, not measured here: the 100 000-household campaign (issue #22) and its
# py-spy profile of a connector worker (28 % SQLite over the padded tokens, 6 % hashing them)
CAMPAIGN_RATE = 79.2
CAMPAIGN_CPU_MS = {"service": 4.63, "registry": 4.12, "custodian": 1.46, "connectors": 10.94}
TOKEN_PROPORTIONAL_SHARE = 0.28 + 0.06
BENCHMARKS_P50_MS = 197.0  # issue #2, "now"
SUSTAINED_VERIFY = 15.1  # issue #22, 8 concurrent callers

RESULTS: dict[str, float] = {}  # milliseconds unless the key says otherwise


def cpu_ms(
    benchmark: Any,
    fn: Callable[[], object],
    *,
    rounds: int,
    per_round: int = 1,
    warmup: int = 1,
    clock: Callable[[], float] = time.process_time,
) -> float:
    """The median CPU milliseconds of one call of ``fn`` (``per_round`` calls per sample),
    recorded by pytest-benchmark (whose own columns are wall time)."""
    samples: list[float] = []

    def timed() -> None:
        t0 = clock()
        for _ in range(per_round):
            fn()
        samples.append(clock() - t0)

    benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=warmup)
    kept = samples[warmup:] or samples
    ms = statistics.median(kept) / per_round * 1000
    benchmark.extra_info["cpu_ms"] = round(ms, 4)
    return ms


def obfuscator() -> int:
    """h_s^α for a fresh 448-bit α: what ``RandomnessPool.fresh`` makes."""
    return BASE.power(secrets.randbits(EXPONENT))


def selector(s: int) -> Ciphertext:
    """Enc(s) as ``PublicKey.encrypt`` makes it with a pool, the obfuscator made on the spot
    (any plaintext: today's connector encrypts its packed sums this way)."""
    nude = (1 + s * PUB.n) % N2
    return Ciphertext(int(gmpy2.mpz(nude) * obfuscator() % N2), PUB.fingerprint)


def rerandomised(c: Ciphertext) -> Ciphertext:
    return Ciphertext(int(gmpy2.mpz(c.value) * obfuscator() % N2), c.fingerprint)


def scaled(c: Ciphertext, exponent: int) -> int:
    """Enc(s)^P mod n²: Enc(s · P). The adapter has no such operation yet (the build adds one)."""
    return int(gmpy2.powmod(c.value, exponent, N2))


# --- the synthetic population: coverage and realistic packed rows -----------------------------


@dataclass(frozen=True)
class Population:
    residents: int
    households: int
    coverage: dict[str, float]  # connector -> share of the register's residents it holds
    rows: dict[str, list[int]]  # connector -> the packed row (household 0) of each customer


def _layout(cid: str) -> packing.BatchLayout:
    kind = kind_of(cid)
    holders = len(BANKS) if kind.is_bank else 1
    return packing.batch_layout(
        [(f.name, f.max_value) for f in kind.fields], holders, PUB.max_plaintext_bits
    )


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Population:
    out = tmp_path_factory.mktemp("decoys-population")
    generate(out, households=2000, seed=7, as_of=dt.date(2026, 12, 1), standard_fen=126000)
    with (out / "registry.csv").open(encoding="utf-8") as f:
        register = list(csv.DictReader(f))
    residents = {r["id_number"] for r in register}
    coverage, rows = {}, {}
    for cid in CONNECTORS:
        fields = kind_of(cid).field_names
        sums: dict[str, Counter[str]] = defaultdict(Counter)
        with (out / f"{cid}.csv").open(encoding="utf-8") as f:
            for r in csv.DictReader(f):
                sums[r["id_number"]].update({k: int(r[k] or 0) for k in fields})
        coverage[cid] = len(residents & sums.keys()) / len(residents)
        layout = _layout(cid)
        rows[cid] = [layout.pack([dict(v)])[0] for v in sums.values()]
    households = len({r["household_id"] for r in register})
    RESULTS["population_mean_members"] = len(residents) / households
    RESULTS["population_coverage_sum"] = sum(coverage.values())
    RESULTS["population_coverage_banks"] = sum(coverage[b] for b in BANKS)
    RESULTS["population_coverage_hrss"] = coverage["hrss"]
    return Population(len(residents), households, coverage, rows)


def _bits(rows: list[int], q: float) -> int:
    return int(statistics.quantiles([r.bit_length() for r in rows], n=100)[int(q) - 1])


# --- a. the selector: one encryption of 0 or 1 -------------------------------------------------


def test_selector_classic_encryption(benchmark: Any) -> None:
    """Enc(s) with r^n for a random r (no pool): phe's raw_encrypt."""
    plain = PublicKey(PUB.n, PUB.hs)
    s = itertools.cycle((0, 1))
    RESULTS["selector_classic"] = cpu_ms(benchmark, lambda: plain.encrypt(next(s)), rounds=20)


def test_selector_djn_fresh(benchmark: Any) -> None:
    """Enc(s) with a DJN obfuscator h_s^α made on the spot: the CPU every selector costs
    somewhere (a pool only moves it off the request's path)."""
    s = itertools.cycle((0, 1))
    RESULTS["selector_djn"] = cpu_ms(benchmark, lambda: selector(next(s)), rounds=30, per_round=10)


def test_rerandomisation(benchmark: Any) -> None:
    """c · h_s^α: re-randomising a given ciphertext per connector costs what a fresh DJN
    encryption of 0/1 costs (the nude (1+n)^s is free), so sharing a base set and
    re-randomising it per connector saves nothing."""
    c = selector(1)
    RESULTS["rerandomise"] = cpu_ms(benchmark, lambda: rerandomised(c), rounds=30, per_round=10)


def test_selector_from_a_prefilled_pool(benchmark: Any) -> None:
    """``PublicKey.encrypt`` with its ``RandomnessPool`` filled beforehand: the request's own
    thread only multiplies (``time.thread_time``; the filler thread is not counted)."""
    pooled = PublicKey(PUB.n, PUB.hs)
    capacity = 2048
    pool = pooled.start_pool(capacity)
    deadline = time.monotonic() + 120
    while len(pool) < capacity and time.monotonic() < deadline:
        time.sleep(0.05)
    s = itertools.cycle((0, 1))
    try:
        # 9 rounds of 100 takes stay above capacity/2: the filler is not woken meanwhile
        RESULTS["selector_pool_take"] = cpu_ms(
            benchmark,
            lambda: pooled.encrypt(next(s)),
            rounds=9,
            per_round=100,
            clock=time.thread_time,
        )
    finally:
        pool.stop()
    benchmark.extra_info["pool_bytes_per_obfuscator"] = CT_BYTES


@pytest.mark.parametrize("window", [8, 10, 12])
def test_fixed_base_window(benchmark: Any, window: int) -> None:
    """What a larger window table buys the authority (8 is what ``core/paillier.py`` uses)."""
    assert PUB.hs is not None
    t0 = time.process_time()
    base = FixedBase(PUB.hs, N2, EXPONENT, window=window)
    build = (time.process_time() - t0) * 1000
    ms = cpu_ms(benchmark, lambda: base.power(secrets.randbits(EXPONENT)), rounds=20, per_round=10)
    table_mb = -(-EXPONENT // window) * (1 << window) * CT_BYTES / 2**20
    RESULTS[f"window_{window}_power"] = ms
    RESULTS[f"window_{window}_build"] = build
    RESULTS[f"window_{window}_table_mb"] = table_mb
    benchmark.extra_info.update(build_ms=round(build, 1), table_mb=round(table_mb, 1))


_WORKER_BASE: FixedBase | None = None


def _worker_init(hs: int, n2: int, bits: int) -> None:
    global _WORKER_BASE
    _WORKER_BASE = FixedBase(hs, n2, bits)


def _worker_make(count: int) -> tuple[list[int], float]:
    assert _WORKER_BASE is not None
    t0 = time.process_time()
    out = [_WORKER_BASE.power(secrets.randbits(EXPONENT)) for _ in range(count)]
    return out, time.process_time() - t0


def test_process_pool(benchmark: Any) -> None:
    """Design i's selectors of one household at k = 2 (86 × 16 obfuscators) on one core, then
    on a pool of two worker processes (started once, warm): wall time, since that is what a
    pool changes; the machine has two cores, so at most 2×."""
    count = len(CONNECTORS) * 16
    RESULTS["pool2_loadavg_before"] = os.getloadavg()[0]
    t0 = time.perf_counter()
    [obfuscator() for _ in range(count)]
    serial = (time.perf_counter() - t0) * 1000
    assert PUB.hs is not None
    with ProcessPoolExecutor(
        CORES,
        mp_context=get_context("spawn"),
        initializer=_worker_init,
        initargs=(PUB.hs, N2, EXPONENT),
    ) as pool:
        list(pool.map(_worker_make, [1] * CORES))  # started and warm
        chunks = [count // 8] * 8
        worker_cpu: list[float] = []

        def run() -> None:
            for _, cpu in pool.map(_worker_make, chunks):
                worker_cpu.append(cpu)

        benchmark.pedantic(run, rounds=3, iterations=1)
        wall = benchmark.stats.stats.median * 1000
    RESULTS["pool2_speedup"] = serial / wall
    RESULTS["pool2_wall_per_selector"] = wall / count
    benchmark.extra_info.update(
        obfuscators=count,
        serial_wall_ms=round(serial, 1),
        pool_wall_ms=round(wall, 1),
        speedup=round(serial / wall, 2),
        worker_cpu_ms=round(sum(worker_cpu) / 3 * 1000, 1),
    )


# --- b. the authority per household -----------------------------------------------------------


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> TokenAuthority:
    keys = KeyDir(tmp_path_factory.mktemp("decoys-keys"))
    keys.init(["bank-01"], paillier_bits=1024)  # its Paillier key is not used here
    return TokenAuthority(
        keys.oprf_key(1), 1, keys.grant_signing_key(), AuthoritySettings(CONNECTORS)
    )


@pytest.mark.parametrize("k", KS)
def test_authority_tokens(benchmark: Any, authority: TokenAuthority, k: int) -> None:
    """The tokens of a 3-member household with k − 1 decoys per member (one OPRF evaluation and
    86 HMACs per resident, padding, one grant): ``TokenAuthority`` as it is, given 3k IDs. The
    decoys' draw from the register (one keyed choice and one indexed read each) is not in it."""
    n = itertools.count()
    ids = IDS[: MEMBERS * k]

    def household() -> None:
        tokens = authority.tokens(ids, "HH1")
        authority.grant(f"q{next(n)}", [tokens], [Binding(bytes(32), bytes(32))])

    RESULTS[f"tokens_k{k}"] = cpu_ms(benchmark, household, rounds=100, warmup=5)


@pytest.mark.parametrize("design", list(DESIGNS))
@pytest.mark.parametrize("k", KS[1:])
def test_authority_selectors(benchmark: Any, k: int, design: str) -> None:
    """Every selector of one household, L = 8k tokens per connector (3 real members, the rest
    decoys and fakes), made with fresh DJN obfuscators on one core, serialised, and hashed per
    connector into what its grant digest would cover. Design i: a set per connector; ii: a set
    per kind (the banks share one); iii: one set for every connector."""
    length = 8 * k
    sets = DESIGNS[design]
    real = set(secrets.SystemRandom().sample(range(length), MEMBERS))

    def household() -> None:
        made = [
            b"".join(PUB.to_bytes(selector(int(i in real))) for i in range(length))
            for _ in range(sets)
        ]
        for c in range(len(CONNECTORS)):
            hashlib.sha256(made[c % sets]).digest()

    rounds = 2 if design == "i" else 5
    RESULTS[f"selectors_{design}_k{k}"] = cpu_ms(benchmark, household, rounds=rounds, warmup=0)
    benchmark.extra_info.update(selectors=sets * length)


# --- c. a connector per query ------------------------------------------------------------------


def _exponents(population: Population, which: str) -> list[int]:
    if which == "bank":
        rows = [r for b in BANKS for r in population.rows[b]]
    elif which == "hrss":
        rows = population.rows["hrss"]
    else:  # a held token of any connector, as often as connectors hold them
        rows = [r for c in CONNECTORS for r in population.rows[c]]
    nonzero = [r for r in rows if r]
    rng = secrets.SystemRandom()
    return [rng.choice(nonzero) for _ in range(400)]


@pytest.mark.parametrize("which", ["bank", "hrss", "any"])
def test_connector_exponentiation_realistic(
    benchmark: Any, population: Population, which: str
) -> None:
    """Enc(s)^P for the packed rows of real customers of the synthetic population (a bank's
    two fields in its 73-bank layout, hrss's three, or any connector's row), household 0 of
    the ciphertext (the interactive case; the batch case with positional selectors)."""
    exps = _exponents(population, which)
    c = selector(1)
    it = itertools.cycle(exps)
    RESULTS[f"exp_{which}"] = cpu_ms(
        benchmark, lambda: scaled(c, next(it)), rounds=40, per_round=10
    )
    bits = [e.bit_length() for e in exps]
    RESULTS[f"exp_{which}_bits_median"] = statistics.median(bits)
    benchmark.extra_info.update(
        bits_median=statistics.median(bits), bits_p90=_bits(exps, 90), bits_max=max(bits)
    )


@pytest.mark.parametrize(
    "label,bits",
    [("bank_full", 102), ("hrss_full", 135), ("shifted_2046", 2046)],
)
def test_connector_exponentiation_width(benchmark: Any, label: str, bits: int) -> None:
    """Enc(s)^P for a row filling its layout (every slot at its maximum), and for a row shifted
    to the last household of a 2046-bit plaintext (what a connector pays per held token in a
    batch unless the selector carries the household's position)."""
    c = selector(1)
    rounds, per = (20, 2) if bits > 1000 else (40, 10)

    def one() -> None:
        scaled(c, secrets.randbits(bits) | 1 << (bits - 1))

    RESULTS[f"exp_{label}"] = cpu_ms(benchmark, one, rounds=rounds, per_round=per)


def test_connector_horner_shift(benchmark: Any) -> None:
    """Without positional selectors a connector packs its per-household products by Horner's
    rule: 2 046 squarings mod n² per ciphertext (x^(2^2046))."""
    c = selector(1)
    RESULTS["horner_per_ciphertext"] = cpu_ms(
        benchmark, lambda: scaled(c, 1 << 2046), rounds=20, per_round=2
    )


def test_decrypt_and_add(benchmark: Any) -> None:
    """For scale: the custodian's decryption (CRT, phe) and today's ciphertext addition."""
    c = selector(1)
    RESULTS["decrypt"] = cpu_ms(benchmark, lambda: KEY.decrypt(c), rounds=20, per_round=5)
    d = selector(0)
    t0 = time.process_time()
    for _ in range(2000):
        PUB.add([c, d])
    RESULTS["add"] = (time.process_time() - t0) / 2000 * 1000
    t0 = time.process_time()
    for _ in range(2000):
        gmpy2.mpz(c.value) * d.value % N2
    RESULTS["mulmod"] = (time.process_time() - t0) / 2000 * 1000


def test_connector_today(benchmark: Any, population: Population) -> None:
    """Today's Paillier work of one connector's answer to one household: pack the household's
    plaintext sums, one encryption with a fresh DJN obfuscator, serialise."""
    layout = _layout("bank-01")
    row = {"deposits": 5_000_000, "wealth_products": 200_000}

    def answer() -> None:
        (m,) = layout.pack([row])
        PUB.to_bytes(selector(m))

    RESULTS["connector_today"] = cpu_ms(benchmark, answer, rounds=30, per_round=10)


@pytest.mark.parametrize("k", KS[1:])
def test_connector_hrss_query(benchmark: Any, population: Population, k: int) -> None:
    """hrss (holding ~everyone) answering one 3-member household with decoys: L = 8k selectors
    parsed and hashed (the grant check), 3k held tokens (real members and decoys) raised to
    their rows, multiplied, re-randomised once and serialised."""
    length, held = 8 * k, MEMBERS * k
    wire = [PUB.to_bytes(selector(int(i < MEMBERS))) for i in range(length)]
    it = itertools.cycle(_exponents(population, "hrss"))

    def answer() -> None:
        hashlib.sha256(b"".join(wire)).digest()
        sels = [PUB.from_bytes(w, PUB.fingerprint) for w in wire]
        acc = gmpy2.mpz(1)
        for c in sels[:held]:
            acc = acc * scaled(c, next(it)) % N2
        PUB.to_bytes(rerandomised(Ciphertext(int(acc), PUB.fingerprint)))

    RESULTS[f"hrss_query_k{k}"] = cpu_ms(benchmark, answer, rounds=20, per_round=3)


# --- d. the wire -------------------------------------------------------------------------------


def test_wire_today(benchmark: Any, authority: TokenAuthority) -> None:
    """Today's request sizes for one 3-member household: the registry's tokens and grant to
    the service, and one connector's ``QueryBatchRequest`` (86 of them per household)."""
    tokens = authority.tokens(IDS[:MEMBERS], "HH1")
    grant = authority.grant("q-wire", [tokens], [Binding(bytes(32), bytes(32))]).to_pb()
    household = connector_pb2.Household(
        members=[connector_pb2.Member(relation=connector_pb2.HEAD)] * MEMBERS,
        tokens=[
            connector_pb2.ConnectorTokens(connector_id=c, tokens=t)
            for c, t in tokens.tokens.items()
        ],
        pseudonym=bytes(32),
    )
    response = connector_pb2.HouseholdsResponse(households=[household], grant=grant)
    request = connector_pb2.QueryBatchRequest(
        query_id="q-wire",
        households=[connector_pb2.TokenSet(tokens=tokens.tokens["bank-01"])],
        key_fingerprint=PUB.fingerprint,
        layout=packing.batch_layout_pb(_layout("bank-01")),
        grant=grant,
    )
    RESULTS["bytes_registry_today"] = response.ByteSize()
    RESULTS["bytes_query_today"] = request.ByteSize()
    RESULTS["bytes_grant_today"] = grant.ByteSize()
    # serialising, parsing, hashing and encrypting (TLS: AES-GCM) a megabyte of selectors
    blob = [secrets.token_bytes(CT_BYTES) for _ in range(2048)]  # 1 MiB
    msg = connector_pb2.TokenSet(tokens=blob)

    def round_trip() -> None:
        connector_pb2.TokenSet.FromString(msg.SerializeToString())

    RESULTS["protobuf_ms_per_mib"] = cpu_ms(benchmark, round_trip, rounds=20)
    data = msg.SerializeToString()
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    nonce = bytes(12)
    t0 = time.process_time()
    for _ in range(20):
        aead.decrypt(nonce, aead.encrypt(nonce, data, None), None)
    RESULTS["aesgcm_ms_per_mib"] = (time.process_time() - t0) / 20 * 1000
    t0 = time.process_time()
    for _ in range(20):
        hashlib.sha256(data).digest()
    RESULTS["sha256_ms_per_mib"] = (time.process_time() - t0) / 20 * 1000
    benchmark.extra_info.update(
        registry_response_bytes=response.ByteSize(), query_bytes=request.ByteSize()
    )


# --- e. today's Verify p50, same run -----------------------------------------------------------


@pytest.mark.skipif(
    os.environ.get("HEDUI_BENCH_DECOYS_UP", "1") == "0", reason="HEDUI_BENCH_DECOYS_UP=0"
)
def test_verify_p50_today(benchmark: Any, request: pytest.FixtureRequest) -> None:
    """Today's Verify of a 3-member household against `hedui up` (40 households, 87
    connectors, mTLS, 2048-bit keys): 20 sequential calls after 2 warm-ups."""
    from hedui.clients.intake import IntakeClient, IntakeProfile
    from hedui.proto.v1 import verification_pb2

    up = request.getfixturevalue("up")
    with (up.data / "registry.csv").open(encoding="utf-8") as f:
        register = list(csv.DictReader(f))
    sizes = Counter(r["household_id"] for r in register)
    applicant = next(
        r["id_number"]
        for r in register
        if r["relation"] == "head" and sizes[r["household_id"]] == 3
    )
    client = IntakeClient(IntakeProfile.load(up.workdir.intake_profile))
    n = itertools.count()

    def verify() -> None:
        client.verify(
            verification_pb2.VerifyRequest(
                request_id=f"decoys-{next(n)}",
                id_number=applicant,
                program="dibao",
                consent=up.consent(applicant),
            )
        )

    benchmark.pedantic(verify, rounds=20, iterations=1, warmup_rounds=2)
    client.close()
    RESULTS["verify_p50_today"] = statistics.median(benchmark.stats.stats.data) * 1000


# --- the model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    k: int
    design: str
    authority_ms: float  # CPU per interactive household (3 members): tokens, grant, selectors
    bank_ms: float  # extra connector CPU per query, a bank with 5 % of the residents
    hrss_ms: float  # extra connector CPU per query, hrss (holds everyone)
    registry_bytes: int  # registry -> service, per household
    fanout_bytes: int  # service -> the 86 connectors, per household
    p50_pool_ms: float  # estimated Verify p50, selectors taken from a pre-filled pool
    p50_demand_ms: float  # estimated Verify p50, selectors made during the request
    sustained: float  # estimated Verify/s, 8 concurrent callers, this machine
    campaign_cpu_ms: float  # all parties' CPU per campaign household
    campaign_rate: float  # estimated campaign decisions/s on this machine


def _decryptions_per_household(common_stride: bool) -> float:
    """The custodian's decryptions per campaign household: one per kind-ciphertext, today's
    per-kind layouts or every kind in the widest kind's stride (design iii's positional
    selectors, one set for every kind, need one household position for all)."""
    layouts = [_layout(d) for d in DEPARTMENT_KINDS] + [
        _layout(BANKS[0])
    ]  # a department's id is its kind
    if not common_stride:
        return sum(1 / x.per_ciphertext for x in layouts)
    widest = max(x.stride for x in layouts)
    return len(layouts) / (PUB.max_plaintext_bits // widest)


def model() -> list[Row]:
    r = RESULTS
    mib = 2**20
    per_byte = (r["protobuf_ms_per_mib"] + 2 * r["aesgcm_ms_per_mib"]) / mib  # one hop
    sha = r["sha256_ms_per_mib"] / mib
    speedup = min(max(r.get("pool2_speedup", 1.0), 1.0), CORES)
    p50_today = r.get("verify_p50_today", BENCHMARKS_P50_MS)
    m_bar = r["population_mean_members"]
    cov_sum = r["population_coverage_sum"]
    t_exp_any, t_mul = r["exp_any"], r["mulmod"]
    base_cpu = sum(CAMPAIGN_CPU_MS.values())
    efficiency = CAMPAIGN_RATE * base_cpu / 1000 / CORES
    verify_cpu = CORES * 1000 / SUSTAINED_VERIFY  # CPU ms per verification under load, today
    common_stride = r["decrypt"] * (
        _decryptions_per_household(True) - _decryptions_per_household(False)
    )
    rows = []
    for k, (design, sets) in itertools.product(KS, DESIGNS.items()):
        on = k > 1  # k = 1 is today: no decoys, no selectors
        if not on and design != "i":
            continue
        length = 8 * k
        selectors = sets * length * on
        sel_bytes = CT_BYTES + 3  # a repeated bytes field: tag, two-byte length
        tok_bytes = 32 + 2
        tokens_extra = max(0.0, r[f"tokens_k{k}"] - r["tokens_k1"])
        made = r.get(f"selectors_{design}_k{k}", 0.0) * on
        authority = r[f"tokens_k{k}"] + made
        # registry -> service: more tokens, each selector set once and, for shared sets, the
        # order of each connector's tokens in it (a byte per token)
        registry_extra = (
            len(CONNECTORS) * (length - 8) * tok_bytes
            + selectors * sel_bytes
            + (len(CONNECTORS) * length if sets < len(CONNECTORS) else 0)
        ) * on
        # service -> each connector: more tokens and a selector per token, whatever the design
        fanout_extra = len(CONNECTORS) * ((length - 8) * tok_bytes + length * sel_bytes) * on
        registry_bytes = int(r["bytes_registry_today"] + registry_extra)
        fanout_bytes = int(len(CONNECTORS) * r["bytes_query_today"] + fanout_extra)
        # a connector parses its selectors and hashes them for the grant check
        check = length * CT_BYTES * (sha + r["protobuf_ms_per_mib"] / mib) * on
        bank = (BANK_SHARE * MEMBERS * k * (r["exp_bank"] + t_mul) + check) * on
        direct = r.get(f"hrss_query_k{k}")
        hrss = (
            (direct - r["connector_today"])
            if direct is not None
            else HRSS_COVERAGE * MEMBERS * k * (r["exp_hrss"] + t_mul) + check
        ) * on
        # interactive: everything added is on the request's path; the 86 connectors share 2 cores
        wire = (registry_extra + fanout_extra) * per_byte
        connectors = (cov_sum * MEMBERS * k * (t_exp_any + t_mul) + len(CONNECTORS) * check) * on
        common = tokens_extra + wire + connectors / CORES
        p50_pool = p50_today + common + selectors * r["selector_pool_take"]
        p50_demand = p50_today + common + made / speedup
        sustained = CORES * 1000 / (verify_cpu + tokens_extra + made + wire + connectors)
        # campaign: all CPU counts; m̄ members per household; positional selectors (no shift)
        scale = m_bar / MEMBERS
        campaign_extra = (
            tokens_extra * scale
            + made
            + wire
            + (cov_sum * m_bar * k * (t_exp_any + t_mul) + len(CONNECTORS) * check) * on
            + TOKEN_PROPORTIONAL_SHARE * CAMPAIGN_CPU_MS["connectors"] * (k - 1)
            + (common_stride if design == "iii" and on else 0.0)
        )
        cpu = base_cpu + campaign_extra
        rate = efficiency * CORES / cpu * 1000
        rows.append(
            Row(
                k,
                design if on else "— (today)",
                authority,
                bank,
                hrss,
                registry_bytes,
                fanout_bytes,
                p50_pool,
                p50_demand,
                sustained,
                cpu,
                rate,
            )
        )
    return rows


def _table(rows: list[Row], p50_today: float) -> Iterator[str]:
    yield (
        "| k | design | authority CPU / household | connector CPU / query: bank 5 % · hrss "
        "| KiB / household: registry→service · service→connectors | Verify p50 ms: pool "
        "· on demand (× today) | sustained Verify/s | campaign CPU / household "
        "| campaign decisions/s |"
    )
    yield "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    for x in rows:
        yield (
            f"| {x.k} | {x.design} | {x.authority_ms:,.1f} ms "
            f"| +{x.bank_ms:.2f} · +{x.hrss_ms:.2f} ms "
            f"| {x.registry_bytes / 1024:,.0f} · {x.fanout_bytes / 1024:,.0f} "
            f"| {x.p50_pool_ms:,.0f} ({x.p50_pool_ms / p50_today:.2f}×) · "
            f"{x.p50_demand_ms:,.0f} ({x.p50_demand_ms / p50_today:.2f}×) "
            f"| {x.sustained:.1f} | {x.campaign_cpu_ms:,.1f} ms | {x.campaign_rate:,.1f} |"
        )


def test_zz_cost_model(benchmark: Any) -> None:
    """Print the measurements and the model (the last test of the file: it reads the others)."""
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    needed = ["selector_djn", "selector_pool_take", "tokens_k1", "exp_any", "protobuf_ms_per_mib"]
    missing = [k for k in needed if k not in RESULTS]
    if missing:
        pytest.skip(f"run the whole file: {', '.join(missing)} not measured")
    rows = model()
    p50_today = RESULTS.get("verify_p50_today", BENCHMARKS_P50_MS)
    lines = ["", "measurements (ms unless named):"]
    lines += [f"  {k}: {v:,.4f}" for k, v in sorted(RESULTS.items())]
    lines += ["", f"Verify p50 today: {p50_today:.0f} ms", *_table(rows, p50_today)]
    print("\n".join(lines))
    out = os.environ.get("HEDUI_BENCH_DECOYS_JSON")
    if out:
        Path(out).write_text(
            json.dumps(
                {"results": RESULTS, "rows": [x.__dict__ for x in rows]}, indent=1, sort_keys=True
            ),
            encoding="utf-8",
        )
