"""The service's configuration file and its HEDUI_* overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from hedui.server.config import load
from hedui.server.errors import ConfigError

BASE = """
[service]
audit_database = "sqlite:///a.sqlite"
service_database = "sqlite:///s.sqlite"
[registry]
address = "127.0.0.1:1"
[connectors]
hrss = "127.0.0.1:2"
"""


def _load(tmp_path: Path, extra: str = "", env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "hedui.toml"
    path.write_text(BASE.replace("[registry]", extra + "\n[registry]"), encoding="utf-8")
    return load(path, env or {})


def test_quotas_default_and_are_overridden(tmp_path: Path) -> None:
    config = _load(tmp_path, env={"HEDUI_RATE_PER_MINUTE": "7"})
    q = config.quotas()
    assert (q.per_minute, q.per_day) == (7, 20_000)
    assert config.max_concurrent_verifications == 12


def test_the_not_found_cooling_off_is_set_in_the_file_or_the_environment(
    tmp_path: Path,
) -> None:
    assert _load(tmp_path).quotas().not_found_cooloff_seconds == 900
    config = _load(tmp_path, "not_found_cooloff_seconds = 60")
    assert config.quotas().not_found_cooloff_seconds == 60
    config = _load(tmp_path, env={"HEDUI_NOT_FOUND_COOLOFF_SECONDS": "0"})  # alert only
    assert config.quotas().not_found_cooloff_seconds == 0
    with pytest.raises(ConfigError, match="not_found_cooloff_seconds must be 0"):
        _load(tmp_path, env={"HEDUI_NOT_FOUND_COOLOFF_SECONDS": "-1"})


def test_per_caller_quotas_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "hedui.toml"
    path.write_text(BASE + '\n[quotas]\n"intake-city" = [600, 50000]\n', encoding="utf-8")
    config = load(path, {})
    assert config.quotas().limits("intake-city") == (600, 50000)
    assert config.quotas().limits("intake-town") == (300, 20_000)
    again = tmp_path / "again.toml"
    again.write_text(config.to_toml(), encoding="utf-8")
    assert load(again, {}).quota_overrides == {"intake-city": (600, 50000)}


@pytest.mark.parametrize(
    ("extra", "env", "said"),
    [
        ("daily_quota = 0", {}, "daily_quota must be above 0"),
        ("", {"HEDUI_MAX_CONCURRENT_VERIFICATIONS": "-1"}, "max_concurrent_verifications"),
        ("", {"HEDUI_QUERY_TIMEOUT_SECONDS": "0"}, "query_timeout_seconds"),
    ],
)
def test_limits_must_be_positive(
    tmp_path: Path, extra: str, env: dict[str, str], said: str
) -> None:
    with pytest.raises(ConfigError, match=said):
        _load(tmp_path, extra, env)


def test_a_malformed_quota_names_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "hedui.toml"
    path.write_text(BASE + '\n[quotas]\n"intake-city" = 600\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="intake-city must be"):
        load(path, {})
