"""Issue #25 item 9: `hedui --version` and `--help` load no command's code (grpc,
cryptography, SQLAlchemy, WeasyPrint, phe), and a refused `hedui verify` says each reason
once, naming the options given rather than the request's proto fields."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from hedui.core.errors import InvalidResidentId
from hedui.core.resident_id import parse as parse_id
from hedui.proto.v1 import verification_pb2_grpc
from hedui.server import consent
from hedui.server.status import invalid
from tests.clients.helpers import run

HEAVY = ("grpc", "sqlalchemy", "cryptography", "weasyprint", "phe")


def _imported(*args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hedui.clients.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("verify", "--help")])
def test_version_and_help_import_no_command_code(args: tuple[str, ...]) -> None:
    modules = _imported(*args)
    loaded = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not loaded, f"`hedui {' '.join(args)}` imported {loaded}"


class Refusing(verification_pb2_grpc.VerificationServiceServicer):
    """Checks a Verify's ID number and consent with the service's own code, and refuses it
    as the service does (INVALID_ARGUMENT with a google.rpc BadRequest)."""

    def Verify(self, request: Any, context: Any) -> Any:
        violations: list[tuple[str, str]] = []
        try:
            parse_id(request.id_number)
        except InvalidResidentId as e:
            violations.append(("id_number", f"{e.reason}: {e}"))
        signed = consent.parse(request.consent, dt.date.today())
        if not isinstance(signed, consent.Consent):
            violations += signed
        from hedui.core import rpc

        rpc.abort_with(context, invalid(violations or [("as_of", "refused for the test")]))

    def VerifyBatch(self, request_iterator: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "only Verify here")

    def GetReport(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "only Verify here")


@pytest.fixture
def refusing(tmp_path: Path) -> Iterator[Path]:
    server = grpc.server(futures.ThreadPoolExecutor(2))
    verification_pb2_grpc.add_VerificationServiceServicer_to_server(Refusing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    profile = tmp_path / "intake.toml"
    profile.write_text(f'address = "127.0.0.1:{port}"\nserver_name = "service"\ninsecure = true\n')
    try:
        yield profile
    finally:
        server.stop(None)


def test_a_refused_verify_says_each_reason_once_by_option(
    refusing: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    form = tmp_path / "form.pdf"
    form.write_bytes(b"signed")
    code, _, err = run(
        capsys,
        "verify",
        "--profile",
        str(refusing),
        "--id",
        "110105194912310021",  # a wrong check digit
        "--program",
        "dibao",
        "--case-number",
        "C-1",
        "--consent-form",
        str(form),
        "--signed-on",
        "2025-01-01",
        "--signer",
        "11010519491231002X",  # the applicant, right this time
        "--signer",
        "123",
    )
    assert code == 1, err
    assert "INVALID_ARGUMENT" in err
    assert "consent." not in err and "id_number" not in err, err
    assert re.search(r"^  --id: ", err, re.M), err
    assert re.search(r"^  the 2nd --signer: ", err, re.M), err
    reasons = [line.strip() for line in err.splitlines() if line.startswith("  ")]
    assert len(reasons) == 2, err
    for reason in reasons:  # every reason once: in its own line and nowhere else
        why = reason.split(": ", 1)[1]
        assert err.count(why) == 1, (why, err)
