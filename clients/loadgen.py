"""A load generator for the intake side: many concurrent Verify calls for a while, then the
throughput and the latency percentiles (``hedui bench load``)."""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from hedui.clients.errors import ClientError
from hedui.clients.intake import IntakeClient, IntakeProfile, check_certificate_dates, utc_now
from hedui.proto.v1 import verification_pb2


@dataclass(frozen=True)
class LoadResult:
    completed: int
    failed: int
    seconds: float
    latencies: tuple[float, ...]
    errors: Counter[str] = field(default_factory=Counter)  # why calls failed, and how often

    @property
    def per_second(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    def percentile(self, q: int) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] if self.latencies else 0.0
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1]

    def reasons(self) -> str:
        """Why calls failed, the commonest reason first (at most three)."""
        top = self.errors.most_common(3)
        if len(top) == 1:
            return top[0][0]
        shown = "; ".join(f"{n}× {why}" for why, n in top)
        more = len(self.errors) - len(top)
        return shown + (f"; and {more} other reason(s)" if more > 0 else "")

    def summary(self) -> str:
        if not self.completed:
            if not self.failed:
                return f"no call finished in {self.seconds:.1f} s; give it more --seconds"
            if self.failed == 1:
                return f"the only call failed: {self.reasons()}"
            return f"all {self.failed} calls failed: {self.reasons()}"
        text = (
            f"{self.completed} verifications in {self.seconds:.1f} s: {self.per_second:.1f}/s; "
            f"p50 {self.percentile(50) * 1000:.0f} ms, p95 {self.percentile(95) * 1000:.0f} ms; "
            f"{self.failed} failed"
        )
        return text + (f" ({self.reasons()})" if self.failed else "")


def run_load(
    profile: IntakeProfile,
    applicants: Sequence[str],
    *,
    concurrency: int,
    seconds: float,
    program: str = "dibao",
    prefix: str = "load",
    campaign: str,
) -> LoadResult:
    """Keep ``concurrency`` calls in flight for ``seconds`` (each caller waits for its answer),
    every call under one registered campaign (``campaign``, its document number: a load test
    re-checks, it does not take applications)."""
    consent = verification_pb2.Consent(campaign=campaign)
    if not applicants:
        raise ClientError("no applicants to verify")
    check_certificate_dates(profile, utc_now())  # here, not in a worker thread
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        client = IntakeClient(profile)
        try:
            while time.monotonic() < deadline:
                n = next(counter)
                request = verification_pb2.VerifyRequest(
                    request_id=f"{prefix}-{n}",
                    id_number=applicants[n % len(applicants)],
                    program=program,
                    consent=consent,
                )
                start = time.perf_counter()
                try:
                    client.verify(request)
                except ClientError as e:
                    with lock:
                        errors[" ".join(str(e).split())] += 1
                    continue
                with lock:
                    latencies.append(time.perf_counter() - start)
        finally:
            client.close()

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return LoadResult(
        len(latencies),
        sum(errors.values()),
        time.monotonic() - started,
        tuple(latencies),
        errors,
    )
