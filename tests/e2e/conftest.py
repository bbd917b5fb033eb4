"""Deployments for end-to-end tests: real processes, real sockets, mutual TLS, 2048-bit keys."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import grpc
import pytest

from hedui.clients.consent import adults, signed_consent
from hedui.clients.intake import IntakeClient, IntakeProfile, verdict_to_dict
from hedui.connectors.population import PopulationSummary, generate
from hedui.core.rpc import open_channel
from hedui.core.workdir import Workdir
from hedui.proto.v1 import verification_pb2, verification_pb2_grpc

if TYPE_CHECKING:
    from hedui.server.application import Application
    from hedui.server.verifier import Verifier

TODAY = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date()
CAMPAIGNS = {"recheck": "测民复〔2026〕1号", "monitoring": "测民监〔2026〕1号"}
STANDARD = 126000


@dataclass
class Up:
    workdir: Workdir
    data: Path
    summary: PopulationSummary
    process: subprocess.Popen[str]
    address: str
    output: deque[str] = field(default_factory=lambda: deque(maxlen=200))  # the last lines
    registered: set[str] = field(default_factory=set)  # campaigns registered so far

    def stub(self, cert: str = "intake") -> verification_pb2_grpc.VerificationServiceStub:
        tls = self.workdir.tls(cert)
        return verification_pb2_grpc.VerificationServiceStub(
            open_channel(self.address, tls=tls, server_name="service")
        )

    def consent(self, id_number: str, **kw: object) -> verification_pb2.Consent:
        return consent_for(self.summary, id_number, **kw)  # type: ignore[arg-type]

    def consent_args(self, id_number: str) -> list[str]:
        """`hedui verify`'s consent flags for this applicant: a scanned form on disk, signed
        today by the household's adults."""
        c = self.consent(id_number)
        form = self.data / "forms" / f"{c.case_number}.pdf"
        form.parent.mkdir(exist_ok=True)
        form.write_bytes(f"scanned consent {c.case_number}".encode())
        args = ["--case-number", c.case_number, "--consent-form", str(form)]
        args += ["--signed-on", c.signed_on]
        for signer in c.signer_id_numbers:
            args += ["--signer", signer]
        return args

    def campaign(self, kind: str = "recheck") -> str:
        """The document number of a campaign of ``kind`` (recheck or monitoring) the bureau
        registered with the registry, covering every household of the population (registered
        once per deployment, through `hedui campaign register`)."""
        number = CAMPAIGNS[kind]
        if number not in self.registered:
            doc = self.data / "forms" / f"{kind}-authorisation.pdf"
            doc.parent.mkdir(exist_ok=True)
            doc.write_bytes(f"standing authorisation of the {kind} campaign".encode())
            roster = self.data / "forms" / f"{kind}-roster.txt"
            heads = [ids[0] for ids in self.summary.members.values()]
            roster.write_text("\n".join(heads) + "\n")
            r = self.cli(
                "campaign", "register", "--workdir", str(self.workdir.root),
                "--number", number, "--kind", kind, "--program", "dibao",
                "--issued-on", TODAY.isoformat(),
                "--valid-until", (TODAY + dt.timedelta(days=365)).isoformat(),
                "--document", str(doc), "--roster", str(roster),
            )  # fmt: skip
            assert r.returncode == 0, r.stderr
            self.registered.add(number)
        return number

    def standing(self, kind: str = "recheck") -> verification_pb2.Consent:
        """A request's consent under the registered campaign of ``kind``."""
        return verification_pb2.Consent(campaign=self.campaign(kind))

    def authorisation_args(self, kind: str = "recheck") -> list[str]:
        """`hedui recheck`'s (or `monitor enrol`'s) campaign flag, the campaign registered."""
        return ["--campaign", self.campaign(kind)]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hedui.clients.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def register_campaign(
    w: Workdir, id_numbers: list[str], number: str = CAMPAIGNS["recheck"], kind: str = "recheck"
) -> str:
    """The bureau of a deployment registers a campaign over these applicants' households (in
    force from today for a year) through the library `hedui campaign register` calls."""
    from hedui.clients import campaign_cli
    from hedui.proto.v1 import connector_pb2

    campaign_cli.register(
        campaign_cli.bureau_profile(w.root, None),
        connector_pb2.Campaign(
            number=number,
            kind=campaign_cli.KINDS[kind],
            program="dibao",
            issued_on=TODAY.isoformat(),
            valid_until=(TODAY + dt.timedelta(days=365)).isoformat(),
            document_sha256=hashlib.sha256(number.encode()).digest(),
        ),
        id_numbers,
    )
    return number


def campaign_application(v: Verifier, request_id: str, id_number: str, number: str) -> Application:
    """A dibao check of this applicant under a registered campaign, as an in-process verifier
    (a service insider's, built from the service's own config) takes it."""
    from hedui.core.resident_id import parse as parse_id
    from hedui.server.application import Application
    from hedui.server.consent import Consent

    return Application(
        request_id,
        parse_id(id_number),
        "dibao",
        v.policy.default_region,
        Consent(number, TODAY, b"", (), campaign=number),
        TODAY,
    )


def simple_consent(case: str, signers: list[str]) -> verification_pb2.Consent:
    """A consent signed today by these people, for hand-written populations."""
    return signed_consent(case, TODAY, hashlib.sha256(case.encode()).digest(), signers)


def verify_dibao(
    profile: Path, id_number: str, request_id: str, consent: verification_pb2.Consent, **kw: str
) -> dict:
    """One dibao verification through the intake client of ``profile``, as a dict."""
    client = IntakeClient(IntakeProfile.load(profile))
    try:
        v = client.verify(
            verification_pb2.VerifyRequest(
                request_id=request_id,
                id_number=id_number,
                program="dibao",
                consent=consent,
                **kw,
            )
        )
    finally:
        client.close()
    return verdict_to_dict(v)


def household_of(summary: PopulationSummary, id_number: str) -> str:
    return next(h for h, ids in summary.members.items() if id_number in ids)


def consent_for(
    summary: PopulationSummary,
    id_number: str,
    *,
    case: str | None = None,
    signed_on: dt.date = TODAY,
    signers: list[str] | None = None,
) -> verification_pb2.Consent:
    """An applicant's consent: by default case "case-<household>", signed today by every adult
    of the household (as the registry holds it)."""
    household = household_of(summary, id_number)
    case = case or f"case-{household}"
    return signed_consent(
        case,
        signed_on,
        hashlib.sha256(f"scanned consent {case}".encode()).digest(),
        adults(summary.members[household], TODAY) if signers is None else signers,
    )


def _drain(stream: IO[str] | None, tail: deque[str]) -> None:
    if stream is not None:
        for line in stream:
            tail.append(line)


def start_up(root: Path, households: int, seed: int = 11) -> Up:
    """`hedui up` as a user runs it, on a generated population, all 87 connectors."""
    data, work = root / "data", root / "work"
    summary = generate(data, households=households, seed=seed, as_of=TODAY, standard_fen=STANDARD)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hedui.clients.cli",
            "up",
            "--data",
            str(data),
            "--workdir",
            str(work),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 300
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "ready" in line or not line:
            break
    m = re.search(r"127\.0\.0\.1:\d+", line)
    if not m:
        proc.kill()
        pytest.fail(
            f"hedui up did not become ready: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        )
    handle = Up(Workdir(work), data, summary, proc, m.group(0))
    # read what it prints from now on: a pipe nobody reads fills up and blocks the writer
    for stream in (proc.stdout, proc.stderr):
        threading.Thread(target=_drain, args=(stream, handle.output), daemon=True).start()
    assert IntakeProfile.load(handle.workdir.intake_profile).address == handle.address
    return handle


def stop_up(handle: Up) -> None:
    proc = handle.process
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    handle = start_up(tmp_path_factory.mktemp("up"), households=40)
    yield handle
    stop_up(handle)


def grpc_code(e: grpc.RpcError) -> grpc.StatusCode:
    assert isinstance(e, grpc.Call)
    return e.code()


def env_without_hedui() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HEDUI_")}


def push_events(up: Up, connector: str, rows: list[tuple[str, str, str, str]], tmp: Path) -> None:
    """Events (ID, kind, date, amount) pushed by ``connector`` through `hedui connector events`."""
    path = tmp / f"{connector}-events.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id_number", "kind", "occurred_on", "amount_fen"])
        w.writerows(rows)
    registry = up.workdir.listening_file("registry").read_text().strip()
    r = up.cli(
        "connector", "events", connector, "--config", str(up.workdir.config_file(connector)),
        "--file", str(path), "--authority", registry, "--service", up.address,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"{len(rows)} event(s) sent" in r.stdout


def list_alerts(up: Up, *extra: str) -> list[dict[str, object]]:
    r = up.cli("alerts", "list", "--workdir", str(up.workdir.root), "--json", *extra)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def wait_for_alerts(up: Up, n: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = list_alerts(up)
        if len(found) >= n:
            time.sleep(3)  # and nothing more comes
            return list_alerts(up)
        time.sleep(1)
    raise AssertionError(f"{len(list_alerts(up))} alerts after 180 s, expected {n}")


@dataclass
class ReadmeUp:
    """A deployment started exactly as the README's first lines do, in ``root``:
    `hedui population generate --households N --seed 7 --out data/`, then
    `hedui up --data data/ --workdir w/`, with the roster of every household head."""

    root: Path
    process: subprocess.Popen[str]
    heads: list[str]
    generate_s: float
    up_s: float
    campaign: str  # the document number registered for roster.txt
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=50))

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def readme_up(root: Path, households: int) -> ReadmeUp:
    start = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "hedui.clients.cli", "population", "generate",
         "--households", str(households), "--seed", "7", "--out", "data/"],
        cwd=root, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    generated = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hedui.clients.cli", "up", "--data", "data/", "--workdir", "w/"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = ""
    while True:
        line = proc.stdout.readline()
        if "ready" in line or not line:
            break
    if not re.search(r"127\.0\.0\.1:\d+", line):
        proc.kill()
        pytest.fail(
            f"hedui up did not become ready: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        )
    # the README: awk -F, '$3=="head" {print $2}' data/registry.csv > roster.txt
    with (root / "data" / "registry.csv").open(encoding="utf-8") as f:
        heads = [row[1] for row in csv.reader(f) if len(row) > 2 and row[2] == "head"]
    (root / "roster.txt").write_text("\n".join(heads) + "\n")
    (root / "authorisation.pdf").write_text("复核授权 2026-11\n")
    # the README: hedui campaign register --workdir w/ --number … --roster roster.txt
    number = "民复〔2026〕11号"
    r = subprocess.run(
        [sys.executable, "-m", "hedui.clients.cli", "campaign", "register", "--workdir", "w/",
         "--number", number, "--kind", "recheck", "--issued-on", TODAY.isoformat(),
         "--valid-until", (TODAY + dt.timedelta(days=182)).isoformat(),
         "--document", "authorisation.pdf", "--roster", "roster.txt"],
        cwd=root, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    if r.returncode != 0:
        os.killpg(proc.pid, signal.SIGTERM)
        pytest.fail(f"hedui campaign register failed: {r.stderr}")
    up = ReadmeUp(root, proc, heads, generated - start, time.monotonic() - generated, number)
    for stream in (proc.stdout, proc.stderr):
        threading.Thread(target=up.tail.extend, args=(stream,), daemon=True).start()
    return up
