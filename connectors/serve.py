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

from hedui.connectors.server import ConnectorSettings, start_connector, start_registry
from hedui.connectors.token_authority import DEFAULT_DECOYS, MAX_DECOYS, AuthoritySettings
from hedui.core.ca import PARTY_NAME
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


AUTHORITY_KEYS = (
    "connectors",
    "default_allowance",
    "allowances",
    "decoys_interactive",
    "decoys_campaign",
)
DEFAULT_ALLOWANCE = 64  # token evaluations per connector per 30 days, unless configured


def write_authority_config(
    path: Path, connector_ids: Sequence[str], allowances: Mapping[str, int]
) -> None:
    """The token authority's settings: the deployment's connectors and their allowances (an
    earlier file's allowances are kept for the connectors still listed)."""
    before = load_authority_settings(path) if path.exists() else None
    earlier = before.allowances if before else {}
    merged = {c: n for c, n in {**earlier, **allowances}.items() if c in connector_ids}
    interactive = before.decoys_interactive if before else DEFAULT_DECOYS
    campaign = before.decoys_campaign if before else DEFAULT_DECOYS
    lines = [
        "# hedui token authority (the registry); README, Operating hedui, authority.toml",
        f"connectors = {toml_value(tuple(connector_ids))}",
        "# k: a household is asked about among k - 1 decoy households (1 = none; the same k on",
        "# both paths, or a connector links a household's interactive and campaign lists)",
        f"decoys_interactive = {interactive}",
        f"decoys_campaign = {campaign}",
        "",
        "[allowances]  # token evaluations per connector per 30 days",
    ]
    lines += [f'"{c}" = {n}' for c, n in sorted(merged.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _allowance(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigFileError(f"{where} must be a positive whole number, not {value!r}")
    return value


def load_authority_settings(path: Path) -> AuthoritySettings:
    """The registry's ``authority.toml``, checked whole at start: ``connectors`` (the ids of
    every connector of the deployment), ``default_allowance`` and ``[allowances]`` (token
    evaluations per connector per 30 days); anything else is refused by name."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigFileError(
            f"cannot read {path} ({e.strerror}): write the token authority's settings "
            "(README, Operating hedui, authority.toml)"
        ) from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigFileError(f"{path} is not valid TOML: {e}") from None
    for key in doc:
        if key not in AUTHORITY_KEYS:
            raise ConfigFileError(
                f"{path}: unknown setting {key!r}; authority.toml holds only "
                f"{', '.join(AUTHORITY_KEYS)} (README, Operating hedui, authority.toml)"
            )
    ids = doc.get("connectors")
    if not isinstance(ids, list) or not all(isinstance(c, str) for c in ids):
        raise ConfigFileError(
            f'{path}: connectors must be a list of connector ids, e.g. connectors = ["bank-01", '
            '"hrss"]'
        )
    for cid in ids:
        if not PARTY_NAME.fullmatch(cid) or cid == REGISTRY_ID:
            raise ConfigFileError(
                f"{path}: connectors lists {cid!r}, which is not a connector's id (3 to 48 "
                "lower-case letters, digits and hyphens, as in its certificate)"
            )
    twice = sorted({c for c in ids if ids.count(c) > 1})
    if twice:
        raise ConfigFileError(f"{path}: connectors lists {', '.join(twice)} more than once")
    default = _allowance(
        doc.get("default_allowance", DEFAULT_ALLOWANCE), f"{path}: default_allowance"
    )
    table = doc.get("allowances", {})
    if not isinstance(table, dict):
        raise ConfigFileError(f'{path}: allowances must be a table: [allowances] "bank-01" = 5000')
    allowances: dict[str, int] = {}
    for cid, value in table.items():
        if cid not in ids:
            raise ConfigFileError(
                f"{path}: [allowances] names {cid!r}, which connectors does not list; add it "
                "there or remove its allowance"
            )
        allowances[cid] = _allowance(value, f'{path}: [allowances] "{cid}"')
    decoys = {}
    for key in ("decoys_interactive", "decoys_campaign"):
        k = doc.get(key, 1)  # a file of a release before decoys keeps them off
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_DECOYS:
            raise ConfigFileError(
                f"{path}: {key} must be a whole number from 1 (no decoys) to {MAX_DECOYS}, "
                f"not {k!r}"
            )
        decoys[key] = k
    if len({decoys["decoys_interactive"], decoys["decoys_campaign"]} - {1}) > 1:
        raise ConfigFileError(
            f"{path}: decoys_interactive and decoys_campaign must be the same where neither is 1 "
            "(one partition of the register into decoy groups serves both paths; two would let "
            "a connector intersect a household's groups)"
        )
    return AuthoritySettings(
        tuple(ids),
        allowances,
        default_allowance=default,
        source=path,
        decoys_interactive=decoys["decoys_interactive"],
        decoys_campaign=decoys["decoys_campaign"],
    )


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
