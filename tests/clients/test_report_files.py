"""Issue #24 item 3: `hedui report` names its file itself, from the request id; never the
service's suggestion (a dot-file, a path), never an existing file without `--force`.

The service is a stand-in over real gRPC that answers GetReport with a hostile suggested name;
the real service's reports are exercised by tests/e2e/test_report.py.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from hedui.clients.report_cli import report_name
from hedui.proto.v1 import verification_pb2, verification_pb2_grpc
from tests.clients.helpers import run

DOCUMENT = b"<!doctype html><title>report</title>"
NAME = re.compile(r"report-[A-Za-z0-9_.-]*\.(html|pdf)")


class Hostile(verification_pb2_grpc.VerificationServiceServicer):
    """Answers every GetReport with a document and the file name it was told to suggest."""

    def __init__(self, suggested: str) -> None:
        self.suggested = suggested
        self.calls = 0

    def Verify(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "only reports here")

    def VerifyBatch(self, request_iterator: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "only reports here")

    def GetReport(self, request: verification_pb2.ReportRequest, context: Any) -> Any:
        self.calls += 1
        return verification_pb2.Report(
            document=DOCUMENT, media_type="text/html; charset=utf-8", filename=self.suggested
        )


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Hostile, Path]]:
    """The stand-in service, a workdir whose intake profile points at it, and the operator's
    current folder (with a `.bashrc`) as the working directory."""
    servicer = Hostile(".bashrc")
    server = grpc.server(futures.ThreadPoolExecutor(2))
    verification_pb2_grpc.add_VerificationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    w = tmp_path / "work"
    w.mkdir()
    (w / "intake.toml").write_text(
        f'address = "127.0.0.1:{port}"\nserver_name = "service"\ninsecure = true\n'
    )
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("export PATH=/usr/bin\n")
    monkeypatch.chdir(home)
    try:
        yield servicer, w
    finally:
        server.stop(None)


@pytest.mark.parametrize(
    "request_id",
    ["R-1", ".bashrc", "../../etc/passwd", "/etc/passwd", "a/b", "..", "", "报告 1", "x" * 400],
)
def test_the_default_name_is_a_safe_name_made_from_the_request_id(request_id: str) -> None:
    for fmt in ("html", "pdf"):
        name = report_name(request_id, fmt)
        assert NAME.fullmatch(name), name
        assert name.endswith(f".{fmt}") and not name.startswith(".")
        assert os.sep not in name and Path(name).name == name
        assert len(name.encode()) <= 255
    assert report_name("R-1", "html") == "report-R-1.html"


def test_ids_that_differ_only_in_replaced_characters_get_different_names() -> None:
    assert report_name("a/b", "html") != report_name("a_b", "html")
    assert report_name("a/b", "html") != report_name("a:b", "html")
    assert report_name("x" * 400, "pdf") != report_name("x" * 401, "pdf")


@pytest.mark.parametrize("suggested", [".bashrc", "../escaped.html", "/tmp/evil.html"])
def test_the_service_suggested_name_is_not_used(
    service: tuple[Hostile, Path], capsys: pytest.CaptureFixture[str], suggested: str
) -> None:
    servicer, w = service
    servicer.suggested = suggested
    home = Path.cwd()
    code, out, err = run(capsys, "report", "--workdir", str(w), "--request-id", "R/1")
    assert code == 0, err
    written = Path(out.strip())
    assert written.name == report_name("R/1", "html") and written.parent == Path(".")
    assert (home / written).read_bytes() == DOCUMENT
    assert (home / ".bashrc").read_text() == "export PATH=/usr/bin\n"  # untouched
    assert not (home.parent / "escaped.html").exists()
    assert sorted(p.name for p in home.iterdir()) == sorted([".bashrc", written.name])


def test_an_existing_report_is_not_replaced_without_force(
    service: tuple[Hostile, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, w = service
    existing = Path.cwd() / "report-R-1.html"
    existing.write_text("an earlier report, annotated by hand\n")
    code, _, err = run(capsys, "report", "--workdir", str(w), "--request-id", "R-1")
    assert code == 1 and "Traceback" not in err
    assert "report-R-1.html exists; give --force to replace it, or --out another file" in err
    assert existing.read_text() == "an earlier report, annotated by hand\n"
    assert servicer.calls == 0  # refused before the service is asked
    code, _, err = run(capsys, "report", "--workdir", str(w), "--request-id", "R-1", "--force")
    assert code == 0, err
    assert existing.read_bytes() == DOCUMENT


def test_an_existing_out_file_is_not_replaced_without_force(
    service: tuple[Hostile, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _, w = service
    out_file = tmp_path / "mine.html"
    out_file.write_text("keep me\n")
    args = ["report", "--workdir", str(w), "--request-id", "R-1", "--out", str(out_file)]
    code, _, err = run(capsys, *args)
    assert code == 1 and "Traceback" not in err
    assert f"{out_file} exists; give --force to replace it, or --out another file" in err
    assert out_file.read_text() == "keep me\n"
    code, _, err = run(capsys, *args, "--force")
    assert code == 0, err
    assert out_file.read_bytes() == DOCUMENT


def test_a_link_in_the_way_is_not_followed_without_force(
    service: tuple[Hostile, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A link named as the report would be, even a dangling one, is refused: nothing is
    written through it."""
    _, w = service
    target = tmp_path / "elsewhere"
    (Path.cwd() / "report-R-1.html").symlink_to(target)
    code, _, err = run(capsys, "report", "--workdir", str(w), "--request-id", "R-1")
    assert code == 1 and "exists; give --force" in err
    assert not target.exists()
