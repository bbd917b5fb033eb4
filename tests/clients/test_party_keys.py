"""A party's operator's own commands (`hedui ca …`, `hedui keys …`) on a real CA: the registry's
role, and a revocation list that only moves forward."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography import x509

from hedui.clients.cli import main
from hedui.core.tls import identity_from_pem


def _number(crl: Path) -> int:
    loaded = x509.load_pem_x509_crl(crl.read_bytes())
    return loaded.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def _request(tmp_path: Path, party: str, role: str) -> int:
    keys = tmp_path / party
    return main(["keys", "request", "--party", party, "--role", role, "--keys", str(keys)])


def _enrolled(tmp_path: Path, party: str, role: str) -> Path:
    """``party``'s key directory; its request signed by the CA in tmp_path/ca (the certificate
    is written beside the request, ``tls/<party>.pem``)."""
    assert _request(tmp_path, party, role) == 0
    csr = tmp_path / party / "tls" / f"{party}.csr"
    ca = tmp_path / "ca"
    assert main(["ca", "sign", "--dir", str(ca), str(csr), "--name", party, "--role", role]) == 0
    return tmp_path / party


def _install(keys: Path, party: str, ca: Path, crl: Path) -> int:
    cert = keys / "tls" / f"{party}.pem"
    return main(
        [
            *("keys", "install", "--party", party, "--keys", str(keys)),
            *("--cert", str(cert), "--ca", str(ca / "ca.pem"), "--crl", str(crl)),
        ]
    )


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    assert main(["ca", "init", "--dir", str(tmp_path / "ca")]) == 0
    return tmp_path / "ca"


def test_the_registry_enrols_in_a_role_of_its_own(
    tmp_path: Path, ca: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = _enrolled(tmp_path, "registry", "registry")
    assert (keys / "token-authority" / "grant.key").exists()  # the token authority's keys
    assert _install(keys, "registry", ca, ca / "crl.pem") == 0
    cert = (keys / "tls" / "registry.pem").read_bytes()
    assert identity_from_pem(cert).role == "registry"
    capsys.readouterr()
    # the role is the registry's alone: a bank asking for it is refused before any key is made
    assert _request(tmp_path, "bank-07", "registry") == 1
    err = capsys.readouterr().err
    assert "role registry is the household registry's own" in err and "Traceback" not in err
    assert not (tmp_path / "bank-07").exists()
    with pytest.raises(SystemExit):
        main(["keys", "request", "--help"])
    assert "registry (the household registry" in " ".join(capsys.readouterr().out.split())


def test_keys_install_never_puts_back_an_older_revocation_list(
    tmp_path: Path, ca: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = _enrolled(tmp_path, "bank-07", "connector")
    _enrolled(tmp_path, "intake-b", "intake")
    older = tmp_path / "older-crl.pem"
    shutil.copy(ca / "crl.pem", older)
    assert _install(keys, "bank-07", ca, older) == 0
    assert main(["ca", "revoke", "--dir", str(ca), "--name", "intake-b"]) == 0
    newer = ca / "crl.pem"
    assert _number(newer) > _number(older)
    # the operator copies the new list in by hand, as `ca revoke` says; no server read it yet,
    # so crl.number still holds the older list's number
    shutil.copy(newer, keys / "crl.pem")
    capsys.readouterr()
    assert _install(keys, "bank-07", ca, older) == 1
    err = capsys.readouterr().err
    assert f"{older} is list number {_number(older)}, older than number {_number(newer)}" in err
    assert "Traceback" not in err
    assert (keys / "crl.pem").read_bytes() == newer.read_bytes()  # the newer list stays
    # installed through `keys install`, the newer list's number is recorded at once
    assert _install(keys, "bank-07", ca, newer) == 0
    assert int((keys / "crl.number").read_text()) == _number(newer)
    (keys / "crl.pem").unlink()  # even with the list gone, its number is remembered
    assert _install(keys, "bank-07", ca, older) == 1
    assert "older than number" in capsys.readouterr().err
    assert not (keys / "crl.pem").exists()


def test_hedui_up_gives_the_registry_its_role() -> None:
    from hedui.clients.provision import role_of

    assert role_of("registry") == "registry" and role_of("bank-07") == "connector"


def test_the_ca_signs_the_registry_role_for_the_registry_only(
    tmp_path: Path, ca: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hedui"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "registry"),
            x509.NameAttribute(NameOID.COMMON_NAME, "bank-07"),
        ]
    )  # made by hand: `hedui keys request` refuses to make it
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject)
    request = tmp_path / "bank-07.csr"
    key = ec.generate_private_key(ec.SECP256R1())
    request.write_bytes(csr.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM))
    capsys.readouterr()
    signing = ["ca", "sign", "--dir", str(ca), str(request), "--name", "bank-07"]
    assert main([*signing, "--role", "registry"]) == 1
    assert "role registry is the household registry's own" in capsys.readouterr().err
    assert not request.with_suffix(".pem").exists()
