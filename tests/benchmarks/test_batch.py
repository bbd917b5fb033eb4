"""Issue #5, batch path: re-verification of a roster through `hedui recheck` against `hedui up`
(all 87 connectors and the service on this machine, 2048-bit keys, mutual TLS), in households
per second, with the service's own CPU per household reported apart from the connectors', and
the ratio of the time per household to the least Paillier work it needs, measured in one run.

HEDUI_BENCH_HOUSEHOLDS sets the roster size (default 3000)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hedui.core.deployment import BANK, DEPARTMENT_KINDS, bank_ids
from hedui.core.packing import batch_layout
from hedui.core.paillier import EXPONENT_BITS, FixedBase, generate_keypair
from tests.e2e.conftest import start_up, stop_up

HOUSEHOLDS = int(os.environ.get("HEDUI_BENCH_HOUSEHOLDS", "3000"))
CHUNK = 121


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]


def test_batch_recheck(benchmark: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    up = start_up(tmp_path_factory.mktemp("batch"), households=HOUSEHOLDS, seed=21)
    try:
        roster = up.workdir.root.parent / "roster.txt"
        roster.write_text("\n".join(i for _, i in up.summary.applicants) + "\n")
        # every party runs in a process of its own (pids in w/run/); the connectors in workers
        parties = {
            name: int(up.workdir.pid_file(name).read_text())
            for name in ("service", "registry", "custodian")
        }
        workers = [p for p in _children(up.process.pid) if p not in parties.values()]
        before = {p: _cpu(p) for p in (*parties.values(), *workers)}
        out = up.workdir.root.parent / "verdicts.jsonl"

        def run() -> None:
            out.unlink(missing_ok=True)
            r = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "hedui.clients.cli",
                    "recheck",
                    "--workdir",
                    str(up.workdir.root),
                    "--ids",
                    str(roster),
                    "--out",
                    str(out),
                    "--quiet",
                    "--round",
                    f"bench-{time.time_ns()}",
                    *up.authorisation_args(),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            print("\n" + r.stdout.strip())

        benchmark.pedantic(run, rounds=1, iterations=1)
        seconds = benchmark.stats.stats.mean
        cpu = {name: _cpu(pid) - before[pid] for name, pid in parties.items()}
        cpu_service = cpu["service"]
        cpu_workers = sum(_cpu(p) - before[p] for p in workers)
        connectors = len(DEPARTMENT_KINDS) + len(bank_ids())
    finally:
        stop_up(up)
    # least Paillier work per household: fresh randomness for every ciphertext that must leave a
    # connector, plus the decryptions, measured here, now
    key = generate_keypair(2048)
    base = FixedBase(key.public.hs or 0, key.public.n_square, EXPONENT_BITS)
    exponents = [secrets.randbits(EXPONENT_BITS) for _ in range(200)]
    t0 = time.perf_counter()
    for e in exponents:
        base.power(e)
    fresh = (time.perf_counter() - t0) / 200
    c = key.public.encrypt(12345)
    t0 = time.perf_counter()
    for _ in range(50):
        key.decrypt(c)
    decrypt = (time.perf_counter() - t0) / 50
    bits = key.public.max_plaintext_bits
    per_chunk_enc = per_chunk_dec = 0
    for kind in DEPARTMENT_KINDS.values():
        lay = batch_layout([(f.name, f.max_value) for f in kind.fields], 1, bits)
        per_chunk_enc += lay.ciphertexts(CHUNK)
        per_chunk_dec += lay.ciphertexts(CHUNK)
    bank = batch_layout([(f.name, f.max_value) for f in BANK.fields], len(bank_ids()), bits)
    per_chunk_enc += len(bank_ids()) * bank.ciphertexts(CHUNK)
    per_chunk_dec += bank.ciphertexts(CHUNK)
    least = (per_chunk_enc * fresh + per_chunk_dec * decrypt) / CHUNK
    per_household = seconds / HOUSEHOLDS
    extra = {
        "households": HOUSEHOLDS,
        "seconds": round(seconds, 1),
        "households_per_second": round(HOUSEHOLDS / seconds, 1),
        "service_cpu_ms_per_household": round(cpu_service / HOUSEHOLDS * 1000, 2),
        "registry_cpu_ms_per_household": round(cpu["registry"] / HOUSEHOLDS * 1000, 2),
        "custodian_cpu_ms_per_household": round(cpu["custodian"] / HOUSEHOLDS * 1000, 2),
        "connector_workers_cpu_ms_per_household": round(cpu_workers / HOUSEHOLDS * 1000, 2),
        "one_connector_cpu_ms_per_household": round(
            cpu_workers / connectors / HOUSEHOLDS * 1000, 3
        ),
        "fresh_randomness_ms": round(fresh * 1000, 3),
        "decrypt_ms": round(decrypt * 1000, 3),
        "least_paillier_ms_per_household": round(least * 1000, 2),
        "ratio_time_to_least_paillier_work": round(per_household / least, 2),
        "ratio_cpu_to_least_paillier_work": round(
            (sum(cpu.values()) + cpu_workers) / HOUSEHOLDS / least, 2
        ),
    }
    benchmark.extra_info.update(extra)
    print("\n".join(f"{k}: {v}" for k, v in extra.items()))
