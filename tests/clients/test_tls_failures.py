"""A client whose certificate, or whose clock, is wrong is told so, never that the service is
down: the certificates' dates are checked before connecting, and a failed TLS handshake says
whose certificate is likely at fault. Real certificates from the deployment's CA (as `hedui up`
and `hedui keys issue` make them), a real mutual-TLS server on a real socket."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from hedui.clients.auditor import open_session
from hedui.clients.deploy import write_intake_profile
from hedui.clients.errors import ClientError
from hedui.clients.intake import IntakeClient, IntakeProfile, check_certificate_dates
from hedui.clients.provision import enrol_client
from hedui.clients.recheck import recheck
from hedui.core.rpc import RunningServer, create_server
from hedui.core.tls import TlsMaterial, request
from hedui.core.workdir import Workdir
from hedui.proto.v1 import verification_pb2
from tests.clients.helpers import closed_port, consent_flags, run

NOW = dt.datetime.now(dt.UTC)
SHANGHAI = ZoneInfo("Asia/Shanghai")  # every date shown is the deployment's
LONG_AGO = NOW - dt.timedelta(days=900)  # a certificate issued then expired 75 days ago
APPLICANT = "330106197003040115"


@pytest.fixture
def w(tmp_path: Path) -> Workdir:
    """A deployment's CA (made 1000 days ago; it is valid 3300 days) and its folder."""
    w = Workdir(tmp_path / "w")
    w.prepare()
    w.ca.init(NOW - dt.timedelta(days=1000))
    return w


def _client(w: Workdir, name: str, issued: dt.datetime, address: str) -> Path:
    """An intake system enrolled as `hedui keys issue` does, its certificate issued at
    ``issued``; its profile pointing at ``address``."""
    enrol_client(w, name, "intake", issued)
    profile = w.root / f"{name}.toml"
    write_intake_profile(w, address, False, name=name, path=profile)
    return profile


def _serve(w: Workdir, issued: dt.datetime, name: str = "service") -> Iterator[RunningServer]:
    """A mutual-TLS server whose certificate (for ``name``) the CA issued at ``issued``."""
    made = request(name, "service")
    cert = w.ca.sign(made.cert_pem, issued, name=name, role="service")
    tls = TlsMaterial(w.ca.cert_path.read_bytes(), cert, made.key_pem)
    running = create_server(
        "127.0.0.1:0",
        tls=tls,
        roles={"hedui.v1.VerificationService": {"intake"}},
        register=[],
    )
    yield running
    running.stop(0)


def _verify(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, profile: Path
) -> tuple[int, str, str]:
    return run(
        capsys, "verify", "--workdir", str(tmp_path), "--profile", str(profile),
        "--id", APPLICANT, "--program", "dibao", *consent_flags(tmp_path, APPLICANT),
    )  # fmt: skip


# -- before connecting: this machine's own certificate and CA, by its clock ------------------


def test_an_expired_intake_certificate_is_named_before_connecting(
    w: Workdir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # nothing listens there: only a check made before connecting can say this
    profile = _client(w, "intake-old", LONG_AGO, f"127.0.0.1:{closed_port()}")
    code, out, err = _verify(capsys, tmp_path, profile)
    cert = w.keys("intake-old").tls_paths("intake-old")[0]
    assert code == 1 and out == ""
    assert err.startswith(f"hedui: error: your intake certificate {cert} expired on "), err
    expired_on = (LONG_AGO + dt.timedelta(days=825)).astimezone(SHANGHAI)
    assert f"expired on {expired_on:%Y-%m-%d %H:%M}" in err
    # the CLI reads the real clock: the minute may have turned since NOW was taken
    said = [
        f"{(NOW + dt.timedelta(minutes=m)).astimezone(SHANGHAI):%Y-%m-%d %H:%M}" for m in (0, 1)
    ]
    assert any(f"(this machine's clock says {t}" in err for t in said), err
    assert "hedui keys request --party intake-old --role intake" in err
    assert "Traceback" not in err and "not reachable" not in err


def test_a_clock_900_days_ahead_is_caught_before_connecting(w: Workdir) -> None:
    profile = IntakeProfile.load(_client(w, "intake-a", NOW, f"127.0.0.1:{closed_port()}"))
    ahead = NOW + dt.timedelta(days=900)
    with pytest.raises(ClientError, match=r"your intake certificate .* expired on") as info:
        IntakeClient(profile, now=lambda: ahead)
    assert f"this machine's clock says {ahead.astimezone(SHANGHAI):%Y-%m-%d %H:%M}" in str(
        info.value
    )
    IntakeClient(profile, now=lambda: NOW).close()  # the same profile, today: accepted


def test_a_clock_that_is_behind_is_suspected(w: Workdir) -> None:
    profile = IntakeProfile.load(_client(w, "intake-a", NOW, f"127.0.0.1:{closed_port()}"))
    with pytest.raises(ClientError) as info:
        check_certificate_dates(profile, NOW - dt.timedelta(days=30))
    text = str(info.value)
    assert "your intake certificate" in text and "is not valid until" in text
    assert "this machine's clock may be wrong" in text


def test_an_expired_ca_certificate_is_named(tmp_path: Path) -> None:
    w = Workdir(tmp_path / "w")
    w.prepare()
    w.ca.init(NOW - dt.timedelta(days=3400))  # valid 3300 days: expired 100 days ago
    profile = IntakeProfile.load(_client(w, "intake-a", NOW, f"127.0.0.1:{closed_port()}"))
    with pytest.raises(ClientError) as info:
        check_certificate_dates(profile, NOW)
    text = str(info.value)
    ca = w.keys("intake-a").root / "ca.pem"
    assert text.startswith(f"the CA certificate {ca} this machine trusts expired on "), text
    assert "your intake certificate" not in text  # its own is fine
    assert "current ca.pem" in text


# -- the handshake: whose certificate the failure points at ---------------------------------


def test_a_server_with_an_expired_certificate_is_a_failed_handshake(
    w: Workdir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for server in _serve(w, LONG_AGO):
        profile = _client(w, "intake-a", NOW, f"127.0.0.1:{server.port}")
        code, _, err = _verify(capsys, tmp_path, profile)
    assert code == 1 and "Traceback" not in err
    assert "the TLS handshake with the verification service failed" in err, err
    assert "the service's certificate has expired by this machine's clock" in err
    assert "date and time" in err
    assert "is `hedui up` running?" not in err


def test_a_server_certificate_not_yet_valid_points_at_this_machine_s_clock(
    w: Workdir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for server in _serve(w, NOW + dt.timedelta(days=2)):
        profile = _client(w, "intake-a", NOW, f"127.0.0.1:{server.port}")
        code, _, err = _verify(capsys, tmp_path, profile)
    assert code == 1
    assert "the service's certificate is not valid yet by this machine's clock" in err, err
    assert "probably behind" in err


def test_a_server_that_refuses_this_machine_s_certificate_is_a_failed_handshake(
    w: Workdir,
) -> None:
    """The client's certificate expired, but its clock (injected) says it is still valid: the
    check before connecting passes, and the server rejects the handshake."""
    for server in _serve(w, NOW):
        profile = IntakeProfile.load(_client(w, "intake-old", LONG_AGO, f"127.0.0.1:{server.port}"))
        client = IntakeClient(profile, timeout=10, now=lambda: LONG_AGO + dt.timedelta(days=1))
        with pytest.raises(ClientError) as info:
            client.verify(verification_pb2.VerifyRequest(request_id="r-1"))
        client.close()
    text = str(info.value)
    assert "the TLS handshake with the verification service failed" in text, text
    assert "did not accept this machine's certificate" in text
    assert "date and time" in text and "is `hedui up` running?" not in text


def test_a_server_of_another_name_is_a_failed_handshake(w: Workdir) -> None:
    for server in _serve(w, NOW, name="registry"):
        profile = IntakeProfile.load(_client(w, "intake-a", NOW, f"127.0.0.1:{server.port}"))
        client = IntakeClient(profile, timeout=10)
        with pytest.raises(ClientError, match="not for the profile's server_name"):
            client.verify(verification_pb2.VerifyRequest(request_id="r-1"))
        client.close()


def test_a_good_handshake_reaches_the_server(w: Workdir) -> None:
    """The control: the same certificates, all in date, get through to the server (which
    offers no verification here: UNIMPLEMENTED, an answer from past the handshake)."""
    for server in _serve(w, NOW):
        profile = IntakeProfile.load(_client(w, "intake-a", NOW, f"127.0.0.1:{server.port}"))
        client = IntakeClient(profile, timeout=10)
        with pytest.raises(ClientError, match=r"^UNIMPLEMENTED"):
            client.verify(verification_pb2.VerifyRequest(request_id="r-1"))
        client.close()


def test_nothing_listening_is_still_not_reachable(
    w: Workdir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = _client(w, "intake-a", NOW, f"127.0.0.1:{closed_port()}")
    code, _, err = _verify(capsys, tmp_path, profile)
    assert code == 1
    assert err == (
        "hedui: error: UNAVAILABLE: the verification service is not reachable (connection "
        "refused); is `hedui up` running?\n"
    )


# -- every command that connects -------------------------------------------------------------


def test_recheck_stops_at_once_on_a_failed_handshake(w: Workdir, tmp_path: Path) -> None:
    roster = tmp_path / "roster.txt"
    roster.write_text(APPLICANT + "\n")
    out = tmp_path / "roster.verdicts.jsonl"

    def sleep(seconds: float) -> None:
        raise AssertionError("a certificate problem is not asked again")

    for server in _serve(w, LONG_AGO):
        profile = IntakeProfile.load(_client(w, "intake-a", NOW, f"127.0.0.1:{server.port}"))
        with pytest.raises(ClientError) as info:
            recheck(
                profile,
                roster,
                out,
                program="dibao",
                campaign_number="doc-1",
                sleep=sleep,
            )
    text = str(info.value)
    assert "the service's certificate has expired" in text, text
    assert "run the same command again to resume" in text
    assert out.read_text() == ""


def test_recheck_checks_the_certificate_s_dates_first(
    w: Workdir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _client(w, "intake-old", LONG_AGO, f"127.0.0.1:{closed_port()}")
    (w.root / "intake-old.toml").rename(w.intake_profile)
    roster = tmp_path / "roster.txt"
    roster.write_text(APPLICANT + "\n")
    code, _, err = run(
        capsys, "recheck", "--workdir", str(w.root), "--ids", str(roster), "--quiet",
        "--campaign", "doc-1",
    )  # fmt: skip
    assert code == 1 and "your intake certificate" in err and "expired on" in err, err


def test_the_auditor_is_told_of_a_failed_handshake_not_that_nothing_runs(w: Workdir) -> None:
    w.service_config.parent.mkdir(parents=True, exist_ok=True)
    w.service_config.write_text('[service]\nlog_origin = "test"\n', encoding="utf-8")
    said: list[str] = []
    for server in _serve(w, LONG_AGO):
        log_pub = w.keys("service").root / "log" / "log.pub"  # an auditor is given it
        log_pub.parent.mkdir(parents=True, exist_ok=True)
        log_pub.write_bytes(b"the log's verifier key")
        enrol_client(w, "auditor-a", "auditor", NOW)
        keys = w.keys("auditor-a")
        cert, key = keys.tls_paths("auditor-a")
        w.auditor_profile.write_text(
            f'address = "127.0.0.1:{server.port}"\nserver_name = "service"\ninsecure = false\n'
            f'ca = "{keys.root / "ca.pem"}"\ncert = "{cert}"\nkey = "{key}"\n',
            encoding="utf-8",
        )
        with pytest.raises(ClientError) as info:
            open_session(w, say=said.append)
    assert "the service's certificate has expired" in str(info.value)
    assert "--offline" in str(info.value) and said == []
