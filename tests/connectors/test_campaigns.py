"""Campaigns registered with the registry by the bureau, over real mutual TLS (issue #23)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from hedui.clients import campaign_cli
from hedui.clients.errors import ClientError
from hedui.clients.intake import IntakeProfile
from hedui.connectors.server import ConnectorSettings, start_registry
from hedui.connectors.store import Person, RegisterStore, open_engine
from hedui.connectors.token_authority import AuthoritySettings
from hedui.core import grants
from hedui.core.keyfiles import write_public, write_secret
from hedui.core.keystore import KeyDir
from hedui.core.resident_id import ResidentId
from hedui.core.tls import Issued, issue
from hedui.proto.v1 import connector_pb2
from hedui.server.consent import ConsentRefused
from hedui.server.fanout import Endpoint
from hedui.server.registry_client import Asked, GrantedHousehold, RegistryClient
from tests.connectors.test_registry import MOTHER, NEWBORN, SINGLE

TODAY = dt.date.today()
OTHER = ResidentId("110105194912310021")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    k = KeyDir(tmp_path_factory.mktemp("keys"))
    k.init(("hrss", "bank-01"), paillier_bits=1024)
    ca = Issued((k.root / "ca.pem").read_bytes(), (k.root / "ca.key").read_bytes())
    leaf = issue(ca, name="bureau", role="bureau", now=dt.datetime.now(dt.UTC))
    cert, key = k.tls_paths("bureau")
    write_public(cert, leaf.cert_pem)
    write_secret(key, leaf.key_pem)
    return k


@pytest.fixture
def served(tmp_path: Path, keys: KeyDir) -> Iterator[tuple[int, RegistryClient]]:
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    RegisterStore(open_engine(url)).replace_all(
        [
            Person(id_number=MOTHER.value, household_id="h1", relation="head", birth_date="1996-05-01"),
            Person(id_number=NEWBORN.value, household_id="h1", relation="child", birth_date="2026-11-24"),
            Person(id_number=SINGLE.value, household_id="h2", relation="head", birth_date="1950-01-02"),
        ]
    )  # fmt: skip
    server = start_registry(
        ConnectorSettings("registry", url), keys, AuthoritySettings(("hrss", "bank-01"))
    )
    client = RegistryClient(
        Endpoint("registry", f"127.0.0.1:{server.port}"), keys.tls("service"), 5.0
    )
    yield server.port, client
    client.close()
    server.stop(0)


def _profile(keys: KeyDir, port: int, party: str) -> IntakeProfile:
    return IntakeProfile(f"127.0.0.1:{port}", "registry", keys.tls(party))


def _header(number: str, **kw: object) -> connector_pb2.Campaign:
    fields: dict[str, object] = {
        "number": number,
        "kind": connector_pb2.RECHECK,
        "program": "dibao",
        "title": "2026年下半年低保复核",
        "issued_on": TODAY.isoformat(),
        "valid_until": (TODAY + dt.timedelta(days=180)).isoformat(),
        "document_sha256": bytes(range(32)),
    }
    fields.update(kw)
    return connector_pb2.Campaign(**fields)  # type: ignore[arg-type]


def test_the_bureau_registers_a_campaign_and_the_registry_answers_its_roster_only(
    served: tuple[int, RegistryClient], keys: KeyDir
) -> None:
    port, registry = served
    receipt = campaign_cli.register(
        _profile(keys, port, "bureau"),
        _header("杭民复〔2026〕3号"),
        [NEWBORN.value, MOTHER.value, OTHER.value, "not an id"],
    )
    assert receipt.campaign.households == 1  # the newborn's and the mother's household, once
    assert receipt.unknown == 2 and list(receipt.unknown_positions) == [3, 4]
    assert receipt.duplicates == 1
    assert receipt.campaign.registered_by == "bureau"
    signatures = connector_pb2.Signatures(campaign="杭民复〔2026〕3号", program="dibao")
    found, grant = registry.households(
        [Asked(MOTHER, signatures), Asked(SINGLE, signatures)], "q-c1"
    )
    assert isinstance(found[0], GrantedHousehold)  # on the roster, no signer needed
    assert isinstance(found[1], ConsentRefused)  # not on it
    assert "not on the roster" in str(found[1])
    assert grant is not None and grant.households == 1
    # the grant names the campaign and the applicant the registry looked up
    (binding,) = grant.bindings
    assert binding.authority == grants.authority_digest(
        program="dibao", campaign="杭民复〔2026〕3号", case_number="",
        signed_on=TODAY.isoformat(), form_sha256=bytes(range(32)), signer_audit_tokens=[],
    )  # fmt: skip
    assert binding.applicant_audit_token == keys.audit_token_key().token(MOTHER)
    # one campaign asked for two programmes in one call: each is checked on its own
    tekun = connector_pb2.Signatures(campaign="杭民复〔2026〕3号", program="tekun")
    mixed, g = registry.households([Asked(MOTHER, signatures), Asked(NEWBORN, tekun)], "q-mix")
    assert isinstance(mixed[0], GrantedHousehold) and isinstance(mixed[1], ConsentRefused)
    assert g is not None and g.households == 1
    # another programme, or an unregistered number: refused per household
    for other in (
        connector_pb2.Signatures(campaign="杭民复〔2026〕3号", program="tekun"),
        connector_pb2.Signatures(campaign="杭民复〔2026〕4号", program="dibao"),
    ):
        (h,), g = registry.households([Asked(MOTHER, other)], f"q-{other.program}-{other.campaign}")
        assert isinstance(h, ConsentRefused) and g is None
    # a claim of standing without a campaign is a consent without signers: no tokens
    (h,), g = registry.households(
        [Asked(MOTHER, connector_pb2.Signatures(standing=True))], "q-standing"
    )
    assert isinstance(h, ConsentRefused) and g is None
    # a number is registered once
    with pytest.raises(ClientError, match="ALREADY_EXISTS"):
        campaign_cli.register(
            _profile(keys, port, "bureau"), _header("杭民复〔2026〕3号"), [MOTHER.value]
        )
    listed = campaign_cli.campaigns(_profile(keys, port, "service"))
    assert [c.number for c in listed] == ["杭民复〔2026〕3号"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"number": "案 110105194912310021"}, "--number"),  # an ID in free text
        ({"kind": connector_pb2.CAMPAIGN_KIND_UNSPECIFIED}, "--kind"),
        ({"program": "Dibao!"}, "--program"),
        ({"issued_on": (TODAY + dt.timedelta(days=1)).isoformat()}, "--issued-on"),
        ({"valid_until": (TODAY - dt.timedelta(days=1)).isoformat()}, "--valid-until"),
        ({"valid_until": (TODAY + dt.timedelta(days=4 * 366)).isoformat()}, "--valid-until"),
        ({"document_sha256": b"short"}, "--document"),
        ({"valid_until": "2027-W01-1"}, "--valid-until"),  # an ISO week date: YYYY-MM-DD only
        ({"number": "民政〔２０２６〕１２号"}, "--number"),  # full-width: one form per number
        ({"number": "民政〔2026〕12号 "}, "--number"),  # a trailing space
    ],
)
def test_a_malformed_campaign_is_refused_by_field(
    served: tuple[int, RegistryClient], keys: KeyDir, change: dict[str, object], field: str
) -> None:
    port, _ = served
    with pytest.raises(ClientError, match=rf"(?s)INVALID_ARGUMENT: invalid campaign\n  {field}: "):
        campaign_cli.register(
            _profile(keys, port, "bureau"),
            _header(str(change.pop("number", "杭民复〔2026〕5号")), **change),
            [MOTHER.value],
        )


def test_only_the_bureau_registers(served: tuple[int, RegistryClient], keys: KeyDir) -> None:
    port, _ = served
    for party in ("service", "intake"):
        with pytest.raises(ClientError, match="PERMISSION_DENIED"):
            campaign_cli.register(
                _profile(keys, port, party), _header(f"杭民复〔2026〕{party}号"), [MOTHER.value]
            )
