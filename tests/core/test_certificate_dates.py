"""A certificate's dates against the clock, for the client's check before it connects: a CA file
that holds the old and the new CA during a rotation is out of date only when both are."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hedui.core.tls import outside_validity

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def _ca(name: str, start: dt.datetime, end: dt.datetime) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_one_certificate_expired_or_not_yet_valid() -> None:
    year = dt.timedelta(days=365)
    assert outside_validity(_ca("ok", NOW - year, NOW + year), NOW) is None
    expired = outside_validity(_ca("old", NOW - 2 * year, NOW - year), NOW)
    assert expired is not None and expired.state == "expired"
    early = outside_validity(_ca("new", NOW + year, NOW + 2 * year), NOW)
    assert early is not None and early.state == "not yet valid"


def test_a_rotation_bundle_is_out_of_date_only_when_every_ca_in_it_is() -> None:
    year = dt.timedelta(days=365)
    old = _ca("old", NOW - 2 * year, NOW - year)
    new = _ca("new", NOW - year, NOW + year)
    assert outside_validity(old + new, NOW) is None
    both = outside_validity(old + _ca("older", NOW - 3 * year, NOW - 2 * year), NOW)
    assert both is not None and both.state == "expired"
