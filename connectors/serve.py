"""``hedui serve registry --config FILE`` and ``hedui serve connector NAME --config FILE``.

A connector's config file is its own (``[connector]``: its id, its database, its key
directory, where it listens); a bank runs its connector on its own host with only its own keys.
One process may serve several connectors, each from its own config file and directory (how
`hedui up` runs 87 of them on one machine).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

from hedui.connectors.errors import ConnectorError
from hedui.connectors.server import ConnectorSettings, start_connector, start_registry
from hedui.connectors.token_authority import AuthoritySettings
from hedui.core.config import load_settings, read_toml, section, to_toml, toml_value
from hedui.core.errors import ConfigFileError
from hedui.core.keystore import REGISTRY_ID, KeyDir
from hedui.core.rpc import RunningServer
from hedui.core.serving import Started, run_until_signalled


def load_connector_config(path: Path, env: Mapping[str, str]) -> ConnectorSettings:
    table = read_toml(path, "write the connector's config (see README, Operating hedui)")
    settings = load_settings(
        ConnectorSettings, section(table, "connector", path), env, f"{path} [connector]"
    )
    if settings.keys_dir is None:
        raise ConfigFileError(f"{path} [connector]: keys_dir required")
    return settings


def connector_config_toml(settings: ConnectorSettings) -> str:
    return to_toml(settings, f"hedui connector {settings.connector_id}", "connector")


def write_authority_config(
    path: Path, connector_ids: Sequence[str], allowances: Mapping[str, int]
) -> None:
    """The token authority's settings: the deployment's connectors and their allowances."""
    earlier = load_authority_settings(path).allowances if path.exists() else {}
    merged = {**earlier, **allowances}
    lines = [
        "# hedui token authority (the registry)",
        f"connectors = {toml_value(tuple(connector_ids))}",
        "",
        "[allowances]  # token evaluations per connector per 30 days",
    ]
    lines += [f'"{c}" = {n}' for c, n in sorted(merged.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def load_authority_settings(path: Path) -> AuthoritySettings:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
        return AuthoritySettings(
            tuple(str(c) for c in doc["connectors"]),
            {str(k): int(v) for k, v in doc.get("allowances", {}).items()},
            default_allowance=int(doc.get("default_allowance", 64)),
        )
    except (OSError, KeyError, ValueError, TypeError, tomllib.TOMLDecodeError) as e:
        raise ConnectorError(f"{path}: not a token authority configuration ({e})") from None


def _start(path: Path, env: Mapping[str, str], registry: bool) -> Started:
    settings = load_connector_config(path, env)
    assert settings.keys_dir is not None
    keys = KeyDir(settings.keys_dir)
    running: RunningServer
    if registry:
        if settings.connector_id != REGISTRY_ID or settings.authority_config is None:
            raise ConfigFileError(
                f'{path}: the registry\'s config names connector_id = "registry" and its '
                "authority_config"
            )
        running = start_registry(settings, keys, load_authority_settings(settings.authority_config))
    else:
        if settings.connector_id == REGISTRY_ID:
            raise ConfigFileError(f"{path} is the registry's: use `hedui serve registry`")
        running = start_connector(settings, keys)
    return Started(settings.connector_id, settings.address, running, path, settings.metrics_address)


def serve_registry(config_path: Path, env: Mapping[str, str]) -> None:
    run_until_signalled([_start(config_path, env, registry=True)])


def serve_connectors(
    config_paths: Sequence[Path], env: Mapping[str, str], name: str | None = None
) -> None:
    """Serve each connector of ``config_paths`` (``name``, if given, must be the one's id)."""
    started: list[Started] = []
    try:
        for path in config_paths:
            s = _start(path, env, registry=False)
            if name is not None and s.party != name:
                s.server.stop(0)
                raise ConfigFileError(f"{path} configures {s.party}, not {name}")
            started.append(s)
    except BaseException:
        for s in started:
            s.server.stop(0)
        raise
    run_until_signalled(started)
