"""Enrolment at an offline CA and revocation checked on each call (issue #12 item 3), the one
config loader, and each party's metrics and log lines (item 6)."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hedui.clients.logs import ZonedJsonFormatter
from hedui.core import metrics
from hedui.core.ca import CertificateAuthority
from hedui.core.config import load_settings
from hedui.core.errors import ConfigFileError, CryptoError
from hedui.core.keystore import KeyDir
from hedui.core.rpc import create_server, open_channel
from hedui.core.tls import CRL_DAYS, Revocations, revocation_list
from hedui.custodian.service import CustodianConfig

NOW = dt.datetime.now(dt.UTC)


def _enrol(ca: CertificateAuthority, root: Path, name: str, role: str) -> KeyDir:
    keys = KeyDir(root / name)
    csr = keys.request_certificate(name, role)
    assert b"PRIVATE" not in csr.read_bytes()  # only the request leaves the party's host
    keys.install_certificate(name, ca.sign(csr.read_bytes(), NOW), ca.cert_path.read_bytes())
    (keys.root / "crl.pem").write_bytes(ca.crl_path.read_bytes())
    return keys


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    authority = CertificateAuthority(tmp_path / "ca")
    assert authority.init(NOW) and not authority.init(NOW)  # made once, then kept
    return authority


def test_a_name_has_one_live_certificate_and_a_certificate_fits_only_its_key(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    keys = _enrol(ca, tmp_path, "bank-07", "connector")
    again = KeyDir(tmp_path / "again").request_certificate("bank-07", "connector")
    with pytest.raises(CryptoError, match="already holds certificate"):
        ca.sign(again.read_bytes(), NOW)
    other = _enrol(ca, tmp_path, "bank-08", "connector")
    with pytest.raises(CryptoError, match="not for the key"):
        keys.install_certificate(
            "bank-07", other.tls_paths("bank-08")[0].read_bytes(), ca.cert_path.read_bytes()
        )
    stranger = CertificateAuthority(tmp_path / "stranger")
    stranger.init(NOW)
    with pytest.raises(CryptoError, match="not issued by the CA"):
        keys.install_certificate(
            "bank-07", keys.tls_paths("bank-07")[0].read_bytes(), stranger.cert_path.read_bytes()
        )
    for party in ("bank-07", "bank-08"):  # a party holds its own key, never the CA's
        keys_found = {p.name for p in (tmp_path / party).rglob("*.key")}
        assert keys_found == {f"{party}.key"}


def _health(address: str, keys: KeyDir, name: str) -> None:
    channel = open_channel(address, tls=keys.tls(name), server_name="registry")
    try:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    finally:
        channel.close()


def test_revocation_takes_effect_on_the_next_call_and_a_forged_list_admits_nobody(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    server_keys = _enrol(ca, tmp_path, "registry", "connector")
    good = _enrol(ca, tmp_path, "service", "service")
    bad = _enrol(ca, tmp_path, "intake-b", "intake")
    running = create_server(
        "127.0.0.1:0", tls=server_keys.tls("registry"), roles={}, register=[], party="registry"
    )
    address = f"127.0.0.1:{running.port}"
    first_list = ca.crl_path.read_bytes()
    try:
        _health(address, bad, "intake-b")
        ca.revoke(NOW, name="intake-b")
        (server_keys.root / "crl.pem").write_bytes(ca.crl_path.read_bytes())
        with pytest.raises(grpc.RpcError) as info:
            _health(address, bad, "intake-b")
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        _health(address, good, "service")  # the others go on
        # a list signed by another CA would un-revoke: it is refused, and so is every call
        stranger = CertificateAuthority(tmp_path / "stranger")
        stranger.init(NOW)
        forged = revocation_list(stranger._ca(), [], now=NOW, number=99)
        (server_keys.root / "crl.pem").write_bytes(forged)
        with pytest.raises(grpc.RpcError) as info:
            _health(address, good, "service")
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        # an older list of this CA (number 1, before the revocation) does not un-revoke
        (server_keys.root / "crl.pem").write_bytes(first_list)
        with pytest.raises(grpc.RpcError) as info:
            _health(address, bad, "intake-b")
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        _health(address, good, "service")
        # no list at all: nobody is admitted (fail closed)
        (server_keys.root / "crl.pem").unlink()
        with pytest.raises(grpc.RpcError) as info:
            _health(address, good, "service")
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    finally:
        running.stop(0)
    scraped = _scrape()
    assert 'hedui_rpc_requests_total{code="UNAUTHENTICATED"' in scraped
    assert 'party="registry"' in scraped


def test_an_expired_list_admits_nobody_until_the_ca_refreshes_it(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    keys = _enrol(ca, tmp_path, "registry", "connector")
    later = [NOW]
    checks = Revocations(ca.cert_path.read_bytes(), keys.root / "crl.pem", clock=lambda: later[0])
    assert not checks.revoked(1)
    later[0] = NOW + dt.timedelta(days=CRL_DAYS, hours=1)
    with pytest.raises(CryptoError, match=r"expired on .*hedui ca refresh"):
        checks.revoked(1)
    first = ca.revocation_list().number
    fresh = ca.refresh(later[0])
    assert fresh.number > first and fresh.next_update > later[0]
    (keys.root / "crl.pem").write_bytes(ca.crl_path.read_bytes())
    assert not checks.revoked(1)


def test_a_rollback_of_the_list_is_refused_after_a_restart_and_at_install(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    keys = _enrol(ca, tmp_path, "registry", "connector")
    old_list = ca.crl_path.read_bytes()
    ca.revoke(NOW + dt.timedelta(seconds=1), name="registry")
    revoked = ca.records()[0].serial
    (keys.root / "crl.pem").write_bytes(ca.crl_path.read_bytes())
    assert Revocations(ca.cert_path.read_bytes(), keys.root / "crl.pem").revoked(revoked)
    (keys.root / "crl.pem").write_bytes(old_list)  # the older list, then a restart
    with pytest.raises(CryptoError, match="older than number"):
        Revocations(ca.cert_path.read_bytes(), keys.root / "crl.pem").revoked(revoked)
    cert = keys.tls_paths("registry")[0].read_bytes()
    with pytest.raises(CryptoError, match="older than number"):
        keys.install_certificate("registry", cert, ca.cert_path.read_bytes(), crl_pem=old_list)
    with pytest.raises(CryptoError, match=r"expired on .*hedui ca refresh"):
        keys.install_certificate(
            "registry",
            cert,
            ca.cert_path.read_bytes(),
            crl_pem=ca.crl_path.read_bytes(),
            now=NOW + dt.timedelta(days=CRL_DAYS + 1),
        )
    # a CA that lost its crl.pem still numbers its next list above every earlier one
    number = ca.revocation_list().number
    ca.crl_path.unlink()
    assert ca.refresh(NOW + dt.timedelta(seconds=5)).number > number


def test_install_takes_only_this_ca_s_list_and_keeps_the_ca_it_trusts(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    keys = _enrol(ca, tmp_path, "bank-07", "connector")
    cert = keys.tls_paths("bank-07")[0].read_bytes()
    stranger = CertificateAuthority(tmp_path / "stranger")
    stranger.init(NOW)
    with pytest.raises(CryptoError, match="not signed by this deployment's CA"):
        keys.install_certificate(
            "bank-07", cert, ca.cert_path.read_bytes(), crl_pem=stranger.crl_path.read_bytes()
        )
    (keys.root / "ca.pem").write_bytes(stranger.cert_path.read_bytes())  # trusted before
    with pytest.raises(CryptoError, match=r"another CA.s certificate.*--replace-ca"):
        keys.install_certificate("bank-07", cert, ca.cert_path.read_bytes())
    keys.install_certificate(
        "bank-07",
        cert,
        ca.cert_path.read_bytes(),
        crl_pem=ca.crl_path.read_bytes(),
        replace_ca=True,
    )
    assert (keys.root / "ca.pem").read_bytes() == ca.cert_path.read_bytes()


def _scrape() -> str:
    server = metrics.serve_metrics("127.0.0.1:0")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics") as r:
            return str(r.read().decode())
    finally:
        server.shutdown()


def test_one_loader_names_a_bad_setting_and_takes_overrides(tmp_path: Path) -> None:
    table = {"keys_dir": "k", "state_dir": "s", "connectors": ["hrss"], "log_origin": "o"}
    config = load_settings(CustodianConfig, table, {"HEDUI_MIN_BANKS": "5"}, "c.toml")
    assert config.min_banks == 5 and config.keys_dir == Path("k")
    with pytest.raises(ConfigFileError, match="HEDUI_MIN_BANKS: min_banks must be a int"):
        load_settings(CustodianConfig, table, {"HEDUI_MIN_BANKS": "many"}, "c.toml")
    with pytest.raises(ConfigFileError, match=r"unknown setting.*min_bank"):
        load_settings(CustodianConfig, {**table, "min_bank": 3}, {}, "c.toml")
    with pytest.raises(ConfigFileError, match="state_dir required"):
        load_settings(
            CustodianConfig, {"keys_dir": "k", "connectors": [], "log_origin": "o"}, {}, "c"
        )


def test_a_party_logs_json_lines_with_its_time_zone() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(ZonedJsonFormatter())
    logger = logging.getLogger("hedui.test.json")
    logger.addHandler(handler)
    logger.warning("registry listening on %s", "127.0.0.1:7001")
    line = json.loads(out.getvalue())
    assert line["message"] == "registry listening on 127.0.0.1:7001"
    assert line["level"] == "WARNING" and line["time"].endswith("+08:00")


def test_the_ca_signs_only_what_its_operator_expects(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    """A bank asking for the service's role, or for a bare host name that is another party's,
    or a name with odd characters, gets nothing signed."""
    asks_service = KeyDir(tmp_path / "a").request_certificate("bank-07", "service")
    with pytest.raises(CryptoError, match="not bank-07 in role connector"):
        ca.sign(asks_service.read_bytes(), NOW, name="bank-07", role="connector")
    posing = KeyDir(tmp_path / "b").request_certificate("bank-08", "connector", ["custodian"])
    with pytest.raises(CryptoError, match="bare host name 'custodian'"):
        ca.sign(posing.read_bytes(), NOW, name="bank-08", role="connector")
    odd = KeyDir(tmp_path / "c").request_certificate("bank-09\tx", "connector")
    with pytest.raises(CryptoError, match="lower-case letters"):
        ca.sign(odd.read_bytes(), NOW)
    hosted = KeyDir(tmp_path / "d").request_certificate("bank-10", "connector", ["bank10.example"])
    ca.sign(hosted.read_bytes(), NOW, name="bank-10", role="connector")
    assert [r.name for r in ca.records()] == ["bank-10"]


def test_one_intake_system_cannot_take_every_place_from_another(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    """Admission per caller (issue #22): of 3 places, one intake system may hold 2; a third
    call of its own is refused at once with a RetryInfo, another intake's call is admitted."""
    import threading

    from google.rpc import error_details_pb2

    from hedui.core.rpc import Admission, error_details

    server_keys = _enrol(ca, tmp_path, "service", "service")
    a = _enrol(ca, tmp_path, "intake-a", "intake")
    b = _enrol(ca, tmp_path, "intake-b", "intake")
    release, entered = threading.Event(), threading.Semaphore(0)

    def hold(request: bytes, context: grpc.ServicerContext) -> bytes:
        entered.release()
        release.wait(30)
        return b"ok"

    def register(server: grpc.Server) -> None:
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "test.Probe", {"Call": grpc.unary_unary_rpc_method_handler(hold)}
                ),
            )
        )

    method = "/test.Probe/Call"
    running = create_server(
        "127.0.0.1:0",
        tls=server_keys.tls("service"),
        roles={"test.Probe": {"intake"}},
        register=[register],
        admission=Admission({method: 3}, per_caller={method: 2}),
    )
    address = f"127.0.0.1:{running.port}"
    channels = {
        n: open_channel(address, tls=k.tls(n), server_name="service")
        for n, k in (("intake-a", a), ("intake-b", b))
    }
    call = {n: ch.unary_unary(method) for n, ch in channels.items()}  # type: ignore[call-arg]
    try:
        held = [call["intake-a"].future(b"x", timeout=30) for _ in range(2)]
        for _ in range(2):
            assert entered.acquire(timeout=10)
        with pytest.raises(grpc.RpcError) as info:
            call["intake-a"](b"x", timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        assert "intake-a has 2 calls in progress" in str(info.value.details())  # type: ignore[attr-defined]
        assert any(isinstance(d, error_details_pb2.RetryInfo) for d in error_details(info.value))
        other = call["intake-b"].future(b"x", timeout=30)  # its share is untouched
        assert entered.acquire(timeout=10)
        release.set()
        assert other.result() == b"ok" and all(f.result() == b"ok" for f in held)
        assert call["intake-a"](b"x", timeout=10) == b"ok"  # every place was given back
    finally:
        release.set()
        for ch in channels.values():
            ch.close()
        running.stop(0)
