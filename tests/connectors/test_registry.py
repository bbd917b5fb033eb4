"""The household registry over real gRPC: one clock, and one bad household never fails the rest."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hedui.connectors.campaigns import Campaigns
from hedui.connectors.errors import ConnectorError
from hedui.connectors.server import ConnectorSettings, start_registry
from hedui.connectors.store import Person, RegisterStore, open_engine
from hedui.connectors.token_authority import AuthoritySettings
from hedui.connectors.tokenizer import AuthorityTokenizer
from hedui.core import clock, grants
from hedui.core.keystore import KeyDir
from hedui.core.resident_id import ResidentId, make
from hedui.proto.v1 import connector_pb2
from hedui.server.consent import ConsentRefused
from hedui.server.errors import RegistryNotFound, SourceUnavailable
from hedui.server.fanout import Endpoint
from hedui.server.registry_client import Asked, GrantedHousehold, RegistryClient

# 07:00 on 24 November in Beijing, still 23 November in UTC
MORNING = dt.datetime(2026, 11, 23, 23, 0, tzinfo=dt.UTC)
NEWBORN = make("500106", dt.date(2026, 11, 24), 2)  # 重庆沙坪坝, born this morning
MOTHER = make("500106", dt.date(1996, 5, 1), 4)
SINGLE = make("330106", dt.date(1950, 1, 2), 11)
BROKEN = make("110105", dt.date(1970, 3, 3), 21)  # its member's record is malformed


CONNECTORS = ("hrss", "bank-01")
CAMPAIGN = "测试〔2026〕1号"
STANDING = connector_pb2.Signatures(campaign=CAMPAIGN, program="dibao")


def register_campaign(url: str, roster: list[str], **header: object) -> None:
    """The bureau's registration, straight into the registry's store (the gRPC path is
    tests/connectors/test_campaigns.py)."""
    fields: dict[str, Any] = {
        "number": CAMPAIGN,
        "kind": connector_pb2.RECHECK,
        "program": "dibao",
        "issued_on": "2026-11-01",
        "valid_until": "2027-10-31",
        "document_sha256": bytes(32),
    }
    fields.update(header)
    Campaigns(RegisterStore(open_engine(url))).register(
        connector_pb2.Campaign(**fields), [roster], "bureau"
    )


def _by(*signers: ResidentId) -> connector_pb2.Signatures:
    return connector_pb2.Signatures(id_numbers=[s.value for s in signers])


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    k = KeyDir(tmp_path_factory.mktemp("keys"))
    k.init(CONNECTORS, paillier_bits=1024)
    return k


@pytest.fixture
def served(tmp_path: Path, keys: KeyDir, monkeypatch) -> Iterator[tuple[RegistryClient, int]]:
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    RegisterStore(open_engine(url)).replace_all(
        [
            Person(id_number=MOTHER.value, household_id="h1", relation="head", birth_date="1996-05-01"),
            Person(id_number=NEWBORN.value, household_id="h1", relation="child", birth_date="2026-11-24"),
            Person(id_number=SINGLE.value, household_id="h2", relation="head", birth_date="1950-01-02"),
            Person(id_number=BROKEN.value, household_id="h3", relation="head", birth_date="1970-03-03"),
            Person(id_number=make("110105", dt.date(1971, 4, 4), 22).value, household_id="h3", relation="spouse", birth_date="not a date"),
        ]
    )  # fmt: skip
    register_campaign(url, [SINGLE.value, BROKEN.value, MOTHER.value])
    # both processes read the deployment's clock (Asia/Shanghai), pinned to MORNING
    monkeypatch.setattr("hedui.core.resident_id.DEPLOYMENT", clock.fixed(MORNING))
    server = start_registry(
        ConnectorSettings("registry", url),
        keys,
        AuthoritySettings(CONNECTORS, {"bank-01": 20}, default_allowance=5),
    )
    client = RegistryClient(
        Endpoint("registry", f"127.0.0.1:{server.port}"), keys.tls("service"), 5.0
    )
    yield client, server.port
    client.close()
    server.stop(0)


@pytest.fixture
def registry(served: tuple[RegistryClient, int]) -> RegistryClient:
    return served[0]


def _household(registry: RegistryClient, resident, query_id: str, signatures):
    """One applicant's household and grant; its refusal raised."""
    (household,), grant = registry.households([Asked(resident, signatures)], query_id)
    if isinstance(household, Exception):
        raise household
    assert grant is not None
    return household, grant


def _relations(household) -> list[tuple[str, str]]:
    return [(m.relation, m.birth_date.isoformat()) for m in household.members]


def test_a_newborn_of_this_morning_beijing_time_is_found(registry: RegistryClient) -> None:
    household, grant = _household(registry, NEWBORN, "q1", _by(MOTHER))
    assert _relations(household) == [("head", "1996-05-01"), ("child", "2026-11-24")]
    assert grant.query_id == "q1" and grant.connectors == set(CONNECTORS)


def test_one_bad_household_fails_alone_in_a_batch(registry: RegistryClient) -> None:
    unknown = make("440103", dt.date(1980, 1, 1), 5)
    tomorrow = ResidentId(make("500106", dt.date(2026, 11, 25), 6).value)  # not born yet
    found, grant = registry.households(
        [Asked(r, STANDING) for r in (SINGLE, BROKEN, tomorrow, unknown, NEWBORN)], "q2"
    )
    assert _relations(found[0]) == [("head", "1950-01-02")]
    assert isinstance(found[1], SourceUnavailable)  # its own malformed member
    assert isinstance(found[2], RegistryNotFound)  # an ID that does not parse today
    assert isinstance(found[3], RegistryNotFound)
    assert _relations(found[4]) == [("head", "1996-05-01"), ("child", "2026-11-24")]
    assert grant is not None and grant.households == 2


def test_the_service_sees_no_id_and_connectors_no_household_size(registry: RegistryClient) -> None:
    """The registry answers relations, birth dates and padded tokens under a signed grant."""
    single, grant1 = _household(registry, SINGLE, "q3", _by(SINGLE))
    pair, grant2 = _household(registry, MOTHER, "q4", _by(MOTHER))
    for household, grant in ((single, grant1), (pair, grant2)):
        for cid in CONNECTORS:
            tokens = household.tokens[cid]
            assert len(tokens) == 8  # 1 or 2 members: a connector cannot tell
            assert grant.digest_for(cid) == grants.batch_digest([tokens])
    assert set(single.tokens["hrss"]).isdisjoint(single.tokens["bank-01"])  # not joinable
    # the wire answer holds no ID number at all
    raw = str(single) + str(pair)
    for person in (SINGLE, MOTHER, NEWBORN):
        assert person.value not in raw


def test_a_connector_learns_tokens_only_by_counted_blinded_evaluation(
    served: tuple[RegistryClient, int], keys: KeyDir, tmp_path: Path
) -> None:
    registry, port = served
    tokenizer = AuthorityTokenizer(f"127.0.0.1:{port}", keys.tls("bank-01"), "bank-01", 1)
    # the token a bank makes for its customer is the token the authority asks it about
    (token,) = tokenizer.tokens([MOTHER.value])
    household, _ = _household(registry, MOTHER, "q5", _by(MOTHER))
    assert token in household.tokens["bank-01"]
    # a flood (the population, say) is refused beyond the bank's allowance, and recorded
    with pytest.raises(ConnectorError, match="refused: bank-01 has used 1 of its 20"):
        tokenizer.tokens(
            [make("330106", dt.date(1950, 1, 1) + dt.timedelta(days=i), 1).value for i in range(40)]
        )
    hrss = AuthorityTokenizer(f"127.0.0.1:{port}", keys.tls("hrss"), "hrss", 1)
    with pytest.raises(ConnectorError, match="of its 5"):  # the default allowance
        hrss.tokens([SINGLE.value] * 6)
    # only connector certificates may evaluate at all
    service = AuthorityTokenizer(f"127.0.0.1:{port}", keys.tls("service"), "bank-01", 1)
    with pytest.raises(ConnectorError, match="not reachable \\(PERMISSION_DENIED\\)"):
        service.tokens([SINGLE.value])
    for t in (tokenizer, hrss, service):
        t.close()


def test_a_query_id_is_granted_once(registry: RegistryClient) -> None:
    _household(registry, SINGLE, "once", _by(SINGLE))
    with pytest.raises(SourceUnavailable, match="refused the query"):
        _household(
            registry, MOTHER, "once", _by(MOTHER)
        )  # an old query id aimed at another household


def test_the_fakes_of_a_household_are_the_same_every_time(registry: RegistryClient) -> None:
    """Fresh fakes would let a connector intersect two queries and count the real tokens."""
    first, _ = _household(registry, MOTHER, "pad-1", _by(MOTHER))
    second, _ = _household(registry, MOTHER, "pad-2", _by(MOTHER))
    assert first.tokens == second.tokens
    other, _ = _household(registry, SINGLE, "pad-3", _by(SINGLE))
    assert set(other.tokens["bank-01"]).isdisjoint(first.tokens["bank-01"])


def test_a_batch_of_one_household_has_a_batch_grant(registry: RegistryClient) -> None:
    (household,), grant = registry.households([Asked(SINGLE, _by(SINGLE))], "batch-of-one")
    assert grant is not None and grant.households == 1
    assert isinstance(household, GrantedHousehold)
    assert grant.digest_for("hrss") == grants.batch_digest([household.tokens["hrss"]])


def test_no_tokens_without_every_adult_signature(registry: RegistryClient) -> None:
    """The registry holds the consent: a household with an adult who did not sign gets no
    tokens and no grant, whatever the service asks; the adult is named masked."""
    with pytest.raises(ConsentRefused) as refused:
        _household(registry, NEWBORN, "c1", _by(NEWBORN))  # the baby's signature, not the mother's
    (subject, description), *_ = refused.value.violations
    assert subject == "consent.signers"
    assert "head (户主) born 1996" in description and MOTHER.masked() in description
    assert MOTHER.value not in str(refused.value) + refused.value.detail
    with pytest.raises(ConsentRefused):
        _household(registry, SINGLE, "c2", connector_pb2.Signatures())  # nobody signed
    # a stranger's signature does not stand in for a member's
    with pytest.raises(ConsentRefused):
        _household(registry, SINGLE, "c3", _by(MOTHER))
    household, grant = _household(registry, NEWBORN, "c4", _by(MOTHER))
    assert grant.query_id == "c4" and household.tokens
    # a standing authorisation (re-verification) needs no signer
    household, _ = _household(registry, SINGLE, "c5", STANDING)
    assert household.tokens


def test_a_batch_household_without_consent_fails_alone_outside_the_grant(
    registry: RegistryClient,
) -> None:
    found, grant = registry.households(
        [Asked(SINGLE, _by(SINGLE)), Asked(MOTHER, _by(NEWBORN)), Asked(NEWBORN, STANDING)], "c6"
    )
    assert isinstance(found[0], GrantedHousehold) and isinstance(found[2], GrantedHousehold)
    assert isinstance(found[1], ConsentRefused)
    assert grant is not None and grant.households == 2


def test_the_household_pseudonym_is_stable_and_names_no_one(registry: RegistryClient) -> None:
    mother, _ = _household(registry, MOTHER, "p1", _by(MOTHER))
    baby, _ = _household(registry, NEWBORN, "p2", _by(MOTHER))
    single, _ = _household(registry, SINGLE, "p3", _by(SINGLE))
    assert len(mother.pseudonym) == 32
    assert mother.pseudonym == baby.pseudonym != single.pseudonym
    assert b"h1" not in mother.pseudonym
