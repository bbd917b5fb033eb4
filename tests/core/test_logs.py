"""What the parties' logs say (issue #25 item 12): a reflection client that closes its stream
early is no ERROR; WeasyPrint's and fontTools' INFO chatter stays out; a call refused for a
revoked certificate leaves one WARNING naming the certificate; `hedui up`'s own log
(``hedui.log``) is JSON lines like every party's."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from hedui.clients.logs import QUIET_LIBRARIES, configure_party_logging, log_to_file
from hedui.core.ca import CertificateAuthority
from hedui.core.rpc import create_server, open_channel
from tests.core.test_enrolment import _enrol

NOW = dt.datetime.now(dt.UTC)
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


@pytest.fixture
def library_levels() -> Iterator[None]:
    """The levels of the quietened libraries' loggers, as they were."""
    levels = {n: logging.getLogger(n).level for n in QUIET_LIBRARIES}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_a_reflection_client_that_closes_its_stream_early_is_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = create_server("127.0.0.1:0", tls=None, roles={}, register=[], party="probe")
    channel = open_channel(f"127.0.0.1:{running.port}", tls=None)
    hold = threading.Event()
    reflect = channel.stream_stream(
        REFLECTION,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )

    def requests() -> Iterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        hold.wait(10)  # the stream stays open until the client cancels it

    def noticed() -> bool:
        return any(r.name == "hedui.rpc" for r in caplog.records)

    try:
        with caplog.at_level(logging.DEBUG, logger="hedui.rpc"):
            # the server notices only while it waits for the client's next request (a cancel
            # that arrives while it sends ends the call quietly): a few tries, later each time
            for attempt in range(1, 6):
                call: Any = reflect(requests(), timeout=10)  # an iterator and a grpc.Call
                assert next(call).list_services_response.service  # the stream works
                time.sleep(0.2 * attempt)  # the server is waiting for the next request
                call.cancel()  # as `grpcurl list` or an IDE does: it has what it wanted
                deadline = time.monotonic() + 3
                while not noticed() and time.monotonic() < deadline:
                    time.sleep(0.05)
                if noticed():
                    break
            assert noticed(), "the server never noticed a cancel"
            time.sleep(0.2)  # and whatever gRPC itself would log after it
    finally:
        hold.set()
        channel.close()
        running.stop(0)
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not loud, [(r.name, r.getMessage()) for r in loud]
    went_away = [r for r in caplog.records if r.name == "hedui.rpc"]
    assert [r.levelno for r in went_away] == [logging.DEBUG]
    assert "ServerReflectionInfo" in went_away[0].getMessage()
    assert went_away[0].exc_info is None  # no traceback


def test_weasyprint_and_fonttools_log_only_warnings_in_a_party(
    capsys: pytest.CaptureFixture[str], library_levels: None
) -> None:
    configure_party_logging("json")
    for step in range(1, 12):  # WeasyPrint's steps of one PDF
        logging.getLogger("weasyprint.progress").info("Step %d - rendering", step)
    logging.getLogger("fontTools.subset").info("Glyph names: [...]")
    logging.getLogger("weasyprint").warning("Ignored `page-break-inside: avoid`")
    logging.getLogger("hedui.serve").info("service listening on 127.0.0.1:7001 (pid 1)")
    for h in logging.getLogger().handlers:
        h.flush()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("weasyprint", "WARNING"),
        ("hedui.serve", "INFO"),
    ]


def test_hedui_log_is_json_lines_like_every_party_s(tmp_path: Path, library_levels: None) -> None:
    log_to_file(tmp_path)
    root = logging.getLogger()
    (handler,) = [
        h for h in root.handlers if getattr(h, "baseFilename", "") == str(tmp_path / "hedui.log")
    ]
    try:
        logging.getLogger("hedui.deploy").warning("hrss died (exit %d); restarting it", -9)
        logging.getLogger("weasyprint.progress").info("Step 1 - Fetching and parsing HTML")
    finally:
        root.removeHandler(handler)
        handler.close()
    (line,) = [json.loads(x) for x in (tmp_path / "hedui.log").read_text().splitlines()]
    assert line["message"] == "hrss died (exit -9); restarting it"
    assert (line["level"], line["logger"]) == ("WARNING", "hedui.deploy")
    assert line["time"].endswith("+08:00") and isinstance(line["pid"], int)


def test_a_call_refused_for_a_revoked_certificate_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    ca.init(NOW)
    server_keys = _enrol(ca, tmp_path, "registry", "connector")
    bad = _enrol(ca, tmp_path, "intake-b", "intake")
    serial = x509.load_pem_x509_certificate(bad.tls_paths("intake-b")[0].read_bytes()).serial_number
    ca.revoke(NOW, name="intake-b")
    (server_keys.root / "crl.pem").write_bytes(ca.crl_path.read_bytes())
    running = create_server(
        "127.0.0.1:0", tls=server_keys.tls("registry"), roles={}, register=[], party="registry"
    )
    channel = open_channel(
        f"127.0.0.1:{running.port}", tls=bad.tls("intake-b"), server_name="registry"
    )
    try:
        with caplog.at_level(logging.INFO), pytest.raises(grpc.RpcError) as info:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    finally:
        channel.close()
        running.stop(0)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    logged = [r for r in caplog.records if r.name.startswith("hedui")]
    assert [(r.name, r.levelno) for r in logged] == [("hedui.rpc", logging.WARNING)]
    said = logged[0].getMessage()
    assert "CN=intake-b" in said and f"serial {serial:x}" in said, said
    assert "/grpc.health.v1.Health/Check" in said and "revoked" in said
