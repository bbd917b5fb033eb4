"""A grant's bindings name the applicant's audit token and digest the members' relations and
birth dates: a connector gets the grant without them (found in review of issue #26: a bank
tried the birth dates of its customers' households against an unsalted composition digest and
found which household was asked; the audit token linked every query of one applicant)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.core import grants
from hedui.core.errors import CryptoError
from hedui.core.grants import Binding, Grant

KEY = Ed25519PrivateKey.generate()
BINDING = Binding(b"a" * 32, b"b" * 32, b"c" * 32)


def _issue() -> Grant:
    return grants.issue(
        KEY,
        query_id="q",
        epoch=1,
        households=1,
        issued_unix_ms=1,
        digests={"bank-01": b"d" * 32},
        bindings=[BINDING],
    )


def test_a_connector_gets_the_digest_of_the_bindings_not_the_bindings() -> None:
    grant = _issue()
    wire = grant.for_connectors()
    assert not wire.bindings and not wire.binding_salt
    assert BINDING.composition not in wire.SerializeToString()
    assert BINDING.applicant_audit_token not in wire.SerializeToString()
    grants.verify(KEY.public_key(), Grant.from_pb(wire))  # it still checks the signature
    grants.verify(KEY.public_key(), Grant.from_pb(grant.to_pb()))  # and so does the custodian


def test_the_digest_is_salted_per_grant() -> None:
    assert _issue().bindings_digest != _issue().bindings_digest


def test_bindings_other_than_the_signed_ones_are_refused() -> None:
    pb = _issue().to_pb()
    pb.bindings[0].composition = b"x" * 32
    with pytest.raises(CryptoError):
        grants.verify(KEY.public_key(), Grant.from_pb(pb))
