"""The household registry over real gRPC: one clock, and one bad household never fails the rest."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from hedui.connectors.server import ConnectorSettings, start_registry
from hedui.connectors.store import Person, RegisterStore, open_engine
from hedui.core import clock
from hedui.core.keystore import KeyDir
from hedui.core.resident_id import ResidentId, make
from hedui.server.fanout import Endpoint, RegistryClient, RegistryNotFound, SourceUnavailable

# 07:00 on 24 November in Beijing, still 23 November in UTC
MORNING = dt.datetime(2026, 11, 23, 23, 0, tzinfo=dt.UTC)
NEWBORN = make("500106", dt.date(2026, 11, 24), 2)  # 重庆沙坪坝, born this morning
MOTHER = make("500106", dt.date(1996, 5, 1), 4)
SINGLE = make("330106", dt.date(1950, 1, 2), 11)
BROKEN = make("110105", dt.date(1970, 3, 3), 21)  # its member's record is malformed


@pytest.fixture
def registry(tmp_path: Path, monkeypatch) -> Iterator[RegistryClient]:
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
    # both processes read the deployment's clock (Asia/Shanghai), pinned to MORNING
    monkeypatch.setattr("hedui.core.resident_id.DEPLOYMENT", clock.fixed(MORNING))
    fixed = clock.fixed(MORNING)
    server = start_registry(ConnectorSettings("registry", url, insecure=True), KeyDir(tmp_path))
    client = RegistryClient(Endpoint("registry", f"127.0.0.1:{server.port}"), None, 5.0, fixed)
    yield client
    client.close()
    server.stop(0)


def _ids(household: list) -> list[str]:
    return [r.value for r, _ in household]


def test_a_newborn_of_this_morning_beijing_time_is_found(registry: RegistryClient) -> None:
    assert _ids(registry.household(NEWBORN, "q1")) == [MOTHER.value, NEWBORN.value]


def test_one_bad_household_fails_alone_in_a_batch(registry: RegistryClient) -> None:
    unknown = make("440103", dt.date(1980, 1, 1), 5)
    tomorrow = ResidentId(make("500106", dt.date(2026, 11, 25), 6).value)  # not born yet
    found = registry.households([SINGLE, BROKEN, tomorrow, unknown, NEWBORN], "q2")
    assert _ids(found[0]) == [SINGLE.value]  # type: ignore[arg-type]
    assert isinstance(found[1], SourceUnavailable)  # its own malformed member
    assert isinstance(found[2], RegistryNotFound)  # an ID that does not parse today
    assert isinstance(found[3], RegistryNotFound)
    assert _ids(found[4]) == [MOTHER.value, NEWBORN.value]  # type: ignore[arg-type]
