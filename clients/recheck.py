"""``hedui recheck``: periodic re-verification (半年复核) of a roster of enrolled applicants.

The roster is the case system's export, one ID number per line. Every line becomes one
application with the request id ``recheck-<round>-<line>``, under a campaign the bureau
registered with the household registry (``hedui campaign register``: its document, dates and
roster; the registry answers only households on that roster, and the audit log records the
document's SHA-256 with every request); results are appended to a JSON lines file as they arrive and flushed at once. Run again after a crash or Ctrl-C and it skips the
lines already in the file; a line that was sent but not yet written gets its stored verdict back
from the service (same request id), so no household is checked twice in the audit log.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.rpc import error_details_pb2

from hedui.clients.args import unwritable
from hedui.clients.errors import ClientError
from hedui.clients.intake import IntakeProfile, describe_rpc_error, open_service_channel, utc_now
from hedui.core.errors import InvalidResidentId
from hedui.core.resident_id import parse as parse_id
from hedui.core.rpc import error_details as rpc_details
from hedui.core.rpc import handshake_failure
from hedui.proto.v1 import common_pb2, verification_pb2, verification_pb2_grpc

# "nothing was decided, ask again later": never written as a household's final line
RETRYABLE = {"ABORTED", "UNAVAILABLE", "RESOURCE_EXHAUSTED", "INTERNAL"}
DECISIONS = {"ELIGIBLE", "INELIGIBLE", "NEEDS_REVIEW"}
MAX_WAIT = 60.0  # the longest pause between rounds, whatever the service suggests


@dataclass
class Summary:
    total: int
    skipped: int
    outcomes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def text(self) -> str:
        decided = {k: n for k, n in self.outcomes.items() if k in DECISIONS}
        refused = {k: n for k, n in self.outcomes.items() if k not in DECISIONS}
        done = sum(self.outcomes.values())
        rate = done / self.seconds if self.seconds else 0.0
        text = (
            f"{done} of {self.total} households settled in {self.seconds:.1f} s ({rate:.1f}/s)"
            f"{f', {self.skipped} already done before' if self.skipped else ''}"
        )
        if not done:
            return text + ": nothing to do"
        text += f": {sum(decided.values())} decided"
        if decided:
            text += " (" + ", ".join(f"{n} {k}" for k, n in sorted(decided.items())) + ")"
        if refused:
            text += f", {sum(refused.values())} refused (" + ", ".join(
                f"{n} {k}" for k, n in sorted(refused.items())
            )
            text += "; their lines say why)"
        return text


def read_roster(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise ClientError(f"cannot read the roster {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ClientError(f"the roster {path} is not UTF-8 text") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            out.append((n, line))
    return out


_REQUEST_ID = re.compile(r"^recheck-([0-9A-Za-z_.-]+)-([0-9]+)$")


def request_id_of(campaign: str, line: int) -> str:
    """The request id of a roster line in a campaign: ``recheck-<campaign>-<line>``."""
    return f"recheck-{campaign}-{line}"


def campaign_of(request_id: str) -> str | None:
    """The campaign a request id belongs to, or None for a request outside any campaign."""
    m = _REQUEST_ID.match(request_id)
    return m.group(1) if m else None


def _done_requests(out: Path, campaign: str) -> set[str]:
    """Request ids already answered in ``out``; a cut-off last line (a crash mid-write) is
    removed, and a file of another campaign is refused rather than mixed up."""
    done: set[str] = set()
    if out.is_dir():
        raise ClientError(f"--out {out} is a folder; give the path of a file")
    if not out.exists():
        return done
    try:
        data = out.read_bytes()
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            out.write_bytes(data)
        text = data.decode("utf-8")
    except OSError as e:
        raise unwritable(out, "--out", e) from None
    except UnicodeDecodeError:
        raise ClientError(
            f"{out} is not a results file of `hedui recheck` (not UTF-8 text); choose another --out"
        ) from None
    for raw in text.splitlines():
        try:
            row = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if row.get("campaign") != campaign:
            raise ClientError(
                f"{out} holds results of another re-verification round ({row.get('campaign')}), "
                "e.g. of an earlier roster or programme; choose another --out"
            )
        if "request_id" in row and (
            "decision" in row or row.get("error", {}).get("code") not in RETRYABLE
        ):
            done.add(str(row["request_id"]))
    return done


def _masked(id_number: str) -> str:
    try:
        return parse_id(id_number).masked()
    except InvalidResidentId:
        return "(invalid)"


def _row(
    campaign: str, line: int, id_number: str, r: verification_pb2.BatchResult
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "campaign": campaign,
        "line": line,
        "request_id": r.request_id,
        "id_masked": _masked(id_number),
    }
    if r.HasField("verdict"):
        v = r.verdict
        row.update(
            decision=common_pb2.Decision.Name(v.decision),
            benefit_fen=v.benefit_fen,
            household_size=v.household_size,
            program=v.program,
            as_of=v.as_of,
            policy_version=v.policy_version,
            audit_leaf=v.audit.leaf_index,
            undecided=[x.id for x in v.rules if x.outcome == common_pb2.UNDECIDED],
            failed_sources=[f.connector_id for f in v.failures],
            figures_opening=v.figures_opening.hex(),
        )
        if v.sealed_benefit:  # decision_only: the benefit is the payment system's to open
            row.update(disclosure=v.disclosure, sealed_benefit=v.sealed_benefit.hex())
    else:
        row["error"] = {"code": r.error.code, "message": r.error.message}
    return row


def recheck(
    profile: IntakeProfile,
    roster: Path,
    out: Path,
    *,
    program: str,
    campaign_number: str,
    campaign: str | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
    patience: float = 300.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], dt.datetime] = utc_now,
) -> Summary:
    entries = read_roster(roster)
    campaign = (
        campaign
        or hashlib.sha256(
            roster.read_bytes() + program.encode() + b"\0" + campaign_number.encode()
        ).hexdigest()[:12]
    )
    done = _done_requests(out, campaign)
    todo = [(n, i) for n, i in entries if request_id_of(campaign, n) not in done]
    summary = Summary(total=len(entries), skipped=len(entries) - len(todo))
    by_request = {request_id_of(campaign, n): (n, i) for n, i in todo}

    def requests(left: dict[str, tuple[int, str]]) -> Iterator[verification_pb2.VerifyRequest]:
        for request_id, (_, id_number) in list(left.items()):
            yield verification_pb2.VerifyRequest(
                request_id=request_id,
                id_number=id_number,
                program=program,
                consent=verification_pb2.Consent(campaign=campaign_number),
            )

    try:  # the results file is opened before the service is contacted
        f = out.open("a", encoding="utf-8")
    except OSError as e:
        raise unwritable(out, "--out", e) from None
    if summary.skipped:  # a resumed round: the households already in the file count
        progress(summary.skipped, summary.total)
    channel = open_service_channel(profile, now=now)
    stub = verification_pb2_grpc.VerificationServiceStub(channel)
    start = time.monotonic()
    left = dict(by_request)
    last_error = ""
    try:
        with f:
            # a household is written once, with its verdict or a final refusal; one answered
            # "ask again later" (being verified, unavailable, over a limit) is asked again after
            # the delay the service asks for, or with backoff; it gives up once `patience`
            # seconds have passed without a household settled (a service restarted after
            # repeated crashes may be held back a minute by `hedui up`)
            stalled, progressed_at, wait = 0, clock(), 0.0
            while left:
                if stalled or wait:
                    if clock() - progressed_at >= patience:
                        break
                    backoff = min(30.0, 2.0 ** (stalled - 1)) if stalled else 0.0
                    sleep(min(MAX_WAIT, max(backoff, wait)))
                before = len(left)
                try:
                    last_error, wait = _stream(
                        stub, requests(left), left, campaign, f, summary, progress
                    )
                except grpc.RpcError as e:
                    if _handshake_failed(e):  # not a busy service: asking again cannot help
                        raise ClientError(
                            f"{describe_rpc_error(e)}\nthe households settled so far are in "
                            f"{out}; run the same command again to resume once this is fixed"
                        ) from None
                    last_error, wait = describe_rpc_error(e), _retry_delay(rpc_details(e))
                if len(left) < before:
                    stalled, progressed_at = 0, clock()
                else:
                    stalled += 1
    except OSError as e:
        raise ClientError(
            f"cannot write {out}: {(e.strerror or str(e)).lower()}; the results written so far "
            "are kept: free some space and run the same command again to resume"
        ) from None
    finally:
        channel.close()
        summary.seconds = time.monotonic() - start
    if left:
        lines = sorted(n for n, _ in left.values())
        shown = ", ".join(str(n) for n in lines[:20]) + (" …" if len(lines) > 20 else "")
        raise ClientError(
            f"{len(left)} household(s) could not be settled: {patience:.0f} s passed without "
            "progress "
            f"(roster lines {shown}): {last_error or 'the service answered them as unavailable'}"
            f"\nthe others are in {out}; run the same command again to resume"
        )
    return summary


def _handshake_failed(e: grpc.RpcError) -> bool:
    """Whether ``e`` is a TLS handshake that certainly failed (a certificate problem)."""
    if not isinstance(e, grpc.Call) or e.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    failed = handshake_failure(e.details() or "")
    return failed is not None and failed.definite


def _retry_delay(details: list[Any]) -> float:
    """The delay a RetryInfo among ``details`` asks for (0 when none does)."""
    for d in details:
        if isinstance(d, error_details_pb2.RetryInfo):
            return float(d.retry_delay.seconds + d.retry_delay.nanos / 1e9)
    return 0.0


def _result_delay(result: verification_pb2.BatchResult) -> float:
    details = []
    for packed in result.status.details:
        info = error_details_pb2.RetryInfo()
        if packed.Unpack(info):
            details.append(info)
    return _retry_delay(details)


def _stream(
    stub: verification_pb2_grpc.VerificationServiceStub,
    requests: Iterator[verification_pb2.VerifyRequest],
    left: dict[str, tuple[int, str]],
    campaign: str,
    f: TextIO,
    summary: Summary,
    progress: Callable[[int, int], None],
) -> tuple[str, float]:
    """Stream the requests; write and drop from ``left`` every settled household; the last
    retryable error seen (empty if none) and the longest delay the service asked for."""
    retryable, wait = "", 0.0
    for result in stub.VerifyBatch(requests):
        if result.request_id not in left:
            continue
        line, id_number = left[result.request_id]
        row = _row(campaign, line, id_number, result)
        if "error" in row and row["error"]["code"] in RETRYABLE:
            retryable = f"{row['error']['code']}: {row['error']['message']}"
            wait = max(wait, _result_delay(result))
            continue
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        del left[result.request_id]
        summary.outcomes[row.get("decision") or row["error"]["code"]] += 1
        progress(summary.total - len(left), summary.total)
    return retryable, wait


class ProgressBar:
    """``[####......] 121/250 40.3/s`` on ``stream``: the households settled (lines in the
    results file). Redrawn at most every ``interval`` seconds; a count that came in between
    (the service answers a chunk at a time, in bursts) is drawn ``interval`` later by a timer,
    so the bar never stays behind the file while the service works on the next chunk."""

    def __init__(self, stream: TextIO = sys.stderr, interval: float = 0.25) -> None:
        self._stream, self._interval = stream, interval
        self._started = self._drawn_at = time.monotonic()
        self._drawn_at -= interval
        self._latest: tuple[int, int] | None = None
        self._shown: tuple[int, int] | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def __call__(self, done: int, total: int) -> None:
        with self._lock:
            self._latest = (done, total)
            if done == total or time.monotonic() - self._drawn_at >= self._interval:
                self._draw()
            elif self._timer is None:
                self._timer = threading.Timer(self._interval, self._later)
                self._timer.daemon = True
                self._timer.start()

    def _later(self) -> None:
        with self._lock:
            self._timer = None
            self._draw()

    def _draw(self) -> None:
        if self._latest is None or self._latest == self._shown:
            return
        done, total = self._shown = self._latest
        self._drawn_at = now = time.monotonic()
        width = 30
        filled = width * done // max(total, 1)
        rate = done / max(now - self._started, 1e-9)
        self._stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {rate:.1f}/s "
        )
        if done == total:
            self._stream.write("\n")
        self._stream.flush()


def progress_bar(stream: TextIO = sys.stderr) -> Callable[[int, int], None]:
    return ProgressBar(stream)
