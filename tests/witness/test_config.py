"""The witness's directory: its config, its key and state made together at the first start and
never one without the other afterwards, its TLS key directory and revocation list, and
`hedui serve witness`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.audit.cosignature import Cosigner, verify_cosignature
from hedui.audit.witness_client import request_body, request_cosignature
from hedui.clients.cli import main
from hedui.core import signing
from hedui.core.keyfiles import write_public, write_secret
from hedui.core.tls import revocation_list
from hedui.witness.config import load_witness_config, prepare
from hedui.witness.errors import ConfigError
from hedui.witness.serve import start_witness
from tests.witness.conftest import NOW, WITNESS_NAME, Log, Pki
from tests.witness.test_protocol import post


def write_config(directory: Path, logs: list[Log], extra: str = "") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tables = "".join(f'[[log]]\norigin = "{g.origin}"\nvkey = "{g.vkey}"\n' for g in logs)
    (directory / "witness.toml").write_text(
        f'[witness]\nname = "{WITNESS_NAME}"\naddress = "127.0.0.1:0"\n{extra}\n{tables}',
        encoding="utf-8",
    )


def install_tls(
    directory: Path, pki: Pki, revoked: list[int] | None = None, number: int = 1
) -> None:
    keys = directory / "keys"
    write_public(keys / "ca.pem", pki.ca.cert_pem)
    write_public(keys / "crl.pem", revocation_list(pki.ca, revoked or [], now=NOW, number=number))
    write_public(keys / "tls" / "witness.pem", pki.server.cert_pem)
    write_secret(keys / "tls" / "witness.key", pki.server.key_pem)


def test_the_first_start_makes_the_key_the_vkey_and_the_state(tmp_path: Path, log: Log) -> None:
    write_config(tmp_path, [log])
    config = load_witness_config(tmp_path, {})
    assert config.logs[0].origin == log.origin and config.submitters == ("service",)
    witness = prepare(config)
    assert (tmp_path / "witness.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "witness.vkey").read_text().strip() == witness.vkey
    assert Cosigner.from_vkey(witness.vkey).name == WITNESS_NAME
    assert (tmp_path / "state.json").exists()
    assert prepare(config).vkey == witness.vkey  # the next start: the same key


def test_a_key_without_its_state_is_refused(tmp_path: Path, log: Log) -> None:
    write_config(tmp_path, [log])
    config = load_witness_config(tmp_path, {})
    prepare(config)
    (tmp_path / "state.json").unlink()
    with pytest.raises(ConfigError, match="forgot what it cosigned"):
        prepare(config)


def test_a_state_without_its_key_is_refused(tmp_path: Path, log: Log) -> None:
    write_config(tmp_path, [log])
    config = load_witness_config(tmp_path, {})
    prepare(config)
    (tmp_path / "witness.key").unlink()
    with pytest.raises(ConfigError, match=r"witness\.key is missing"):
        prepare(config)


def test_a_damaged_state_is_refused(tmp_path: Path, log: Log) -> None:
    write_config(tmp_path, [log])
    config = load_witness_config(tmp_path, {})
    prepare(config)
    (tmp_path / "state.json").write_text('{"version": 1, "logs": {"x": {"size": "7"}}}')
    with pytest.raises(ConfigError, match="damaged"):
        prepare(config)


def test_the_witness_is_not_the_log(tmp_path: Path, log: Log) -> None:
    write_config(tmp_path, [log])
    write_secret(tmp_path / "witness.key", signing.private_key_to_pem(log.key))
    (tmp_path / "state.json").write_text('{"version": 1, "logs": {}}')
    with pytest.raises(ConfigError, match="must not be the log"):
        prepare(load_witness_config(tmp_path, {}))


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('[witness]\nname = "w"\n', "name each log to witness"),
        ('[witness]\n[[log]]\norigin = "o"\nvkey = "x"\n', "name required"),
        ('[witness]\nname = "a b"\n[[log]]\norigin = "o"\nvkey = "o+00000000+AA=="\n', "name"),
        ('[witness]\nname = "w"\n[[log]]\norigin = "o"\n', "want origin and vkey"),
        ('[witness]\nname = "w"\n[[log]]\norigin = "o"\nvkey = "o+1+2"\n', "malformed vkey"),
        ('[witness]\nname = "w"\ncolour = 1\n[[log]]\norigin = "o"\nvkey = "x"\n', "colour"),
    ],
)
def test_a_bad_config_is_named(tmp_path: Path, text: str, said: str) -> None:
    (tmp_path / "witness.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=said):
        load_witness_config(tmp_path, {})


def test_a_log_listed_twice_is_refused(tmp_path: Path, log: Log) -> None:
    write_config(tmp_path, [log, log])
    with pytest.raises(ConfigError, match="listed twice"):
        load_witness_config(tmp_path, {})


def test_settings_may_come_from_the_environment(tmp_path: Path, log: Log) -> None:
    write_config(tmp_path, [log])
    config = load_witness_config(tmp_path, {"HEDUI_SUBMITTERS": "service,registry"})
    assert config.submitters == ("service", "registry")
    assert config.tls_keys == tmp_path.resolve() / "keys"


def test_started_from_its_directory_it_serves_over_mutual_tls(
    tmp_path: Path, pki: Pki, log: Log
) -> None:
    write_config(tmp_path, [log])
    install_tls(tmp_path, pki)
    server = start_witness(load_witness_config(tmp_path, {}))
    try:
        vkey = (tmp_path / "witness.vkey").read_text().strip()
        log.grow(3)
        url = f"https://127.0.0.1:{server.port}"
        lines = request_cosignature(
            url, pki.service, 0, [], log.note(), witness=Cosigner.from_vkey(vkey)
        )
        assert verify_cosignature(log.checkpoint().body(), lines, Cosigner.from_vkey(vkey))
        # the CA revokes the service's certificate: its next call is refused
        serial = x509.load_pem_x509_certificate(pki.service.cert_pem).serial_number
        crl = tmp_path / "keys" / "crl.pem"
        crl.write_bytes(revocation_list(pki.ca, [serial], now=NOW, number=2))
        os.utime(crl, (time.time() + 5, time.time() + 5))
        log.grow(1)
        status, _, said = post(
            server.port, pki.client(pki.service), request_body(3, log.proof(3), log.note())
        )
        assert status == 403 and b"revoked" in said
    finally:
        server.stop(1.0)


def test_without_a_revocation_list_every_call_is_refused(
    tmp_path: Path, pki: Pki, log: Log
) -> None:
    write_config(tmp_path, [log])
    install_tls(tmp_path, pki)
    (tmp_path / "keys" / "crl.pem").unlink()
    server = start_witness(load_witness_config(tmp_path, {}))
    try:
        log.grow(1)
        status, _, said = post(
            server.port, pki.client(pki.service), request_body(0, [], log.note())
        )
        assert status == 403 and b"cannot check revocations" in said
    finally:
        server.stop(1.0)


def test_hedui_serve_witness_names_a_bad_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "witness", "--workdir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hedui: error: ") and "witness.toml does not exist" in err
    with pytest.raises(SystemExit) as info:
        main(["serve", "witness", "--config", str(tmp_path / "witness.toml")])
    assert info.value.code == 2
    assert "the witness takes --workdir DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "custodian", "--workdir", str(tmp_path)])


def test_an_unused_key_is_not_made_twice(tmp_path: Path, log: Log) -> None:
    write_config(tmp_path, [log])
    config = load_witness_config(tmp_path, {})
    first = prepare(config).vkey
    key = signing.load_private_key((tmp_path / "witness.key").read_bytes())
    assert isinstance(key, Ed25519PrivateKey)
    assert prepare(config).vkey == first
