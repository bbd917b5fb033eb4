"""Service configuration: one TOML file (``service.toml``), overridable by ``HEDUI_*`` variables.

The file is read once, at the edge, into frozen dataclasses that are passed in; nothing reads
the environment later. Secrets are never in the file: it names the key directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hedui.core.config import coerce, read_toml, section
from hedui.core.config import toml_value as q
from hedui.core.deployment import kind_of
from hedui.core.errors import ConfigFileError
from hedui.server.errors import ConfigError
from hedui.server.fanout import Endpoint
from hedui.server.quotas import QuotaSettings


@dataclass(frozen=True)
class ServiceConfig:
    keys_dir: Path
    registry: Endpoint
    connectors: tuple[Endpoint, ...]
    audit_database: str
    service_database: str
    address: str = "127.0.0.1:0"
    default_region: str = "demo"
    min_banks: int = 3
    query_timeout_seconds: float = 10.0
    registry_timeout_seconds: float = 5.0
    insecure: bool = False
    log_origin: str = "hedui.example/demo-log"
    timezone: str = "Asia/Shanghai"
    token_epoch: int = 1
    custodian_address: str = ""  # the key custodian's process (required)
    # admission control and per-caller quotas (issue #11 item 3)
    max_concurrent_verifications: int = 12
    # of those, at most this many for one intake system, so that another keeps its share
    max_concurrent_per_caller: int = 8
    rate_per_minute: int = 300
    daily_quota: int = 20_000
    not_found_alert: int = 20
    not_found_window_seconds: int = 600
    # a burst of not-found answers (above) refuses the caller this long (0: alert only)
    not_found_cooloff_seconds: int = 900
    quota_overrides: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    # a re-verification campaign (VerifyBatch) is not counted against the rate and quota above
    # but against its own daily budget per intake system
    campaign_daily_budget: int = 1_000_000
    # concurrent Verify calls are gathered into one pipeline run: at most this many households,
    # waiting at most this long for more while another run is in flight (an idle service
    # answers a lone call at once)
    gather_max_households: int = 32
    gather_window_ms: float = 10.0
    # days a kept verdict keeps its figures (for a retry of the same request id); after that
    # only its decision, rule outcomes and receipt (the log keeps its commitment)
    retention_days: int = 30
    # a VerifyBatch stream that sends nothing for this long is closed (ABORTED), freeing its place
    batch_idle_seconds: float = 60.0
    metrics_address: str = ""  # HOST:PORT of its Prometheus /metrics ("" = none)
    # [witness]: the witnesses that cosign the log's checkpoints (c2sp.org/tlog-witness; issue
    # #23): their submission URLs and verifier keys, pairwise, and how many must cosign. The key
    # custodian decrypts only under a checkpoint that quorum cosigned.
    witness_urls: tuple[str, ...] = ()
    witness_vkeys: tuple[str, ...] = ()
    witness_quorum: int = 1
    witness_timeout_seconds: float = 5.0
    # [disclosure]: intake systems (certificate names) shown the decision only, each with its
    # payment system's X25519 public key (PEM) the benefit is sealed to (issue #24 item 2)
    decision_only: Mapping[str, Path] = field(default_factory=dict)

    def quotas(self) -> QuotaSettings:
        return QuotaSettings(
            self.rate_per_minute,
            self.daily_quota,
            self.not_found_alert,
            self.not_found_window_seconds,
            dict(self.quota_overrides),
            self.campaign_daily_budget,
            not_found_cooloff_seconds=self.not_found_cooloff_seconds,
        )

    def to_toml(self) -> str:
        lines = ["# hedui verification service", "[service]"]
        for name in _SCALARS:
            lines.append(f"{name} = {q(getattr(self, name))}")
        lines.append(f"keys_dir = {q(self.keys_dir)}")
        lines += ["", "[registry]", f"address = {q(self.registry.address)}", "", "[connectors]"]
        lines += [f"{q(e.connector_id)} = {q(e.address)}" for e in self.connectors]
        if self.quota_overrides:
            lines += ["", "[quotas]  # caller = [per minute, per day]"]
            lines += [f"{q(c)} = [{m}, {d}]" for c, (m, d) in sorted(self.quota_overrides.items())]
        if self.witness_urls:
            lines += ["", "[witness]  # the witnesses that cosign the log's checkpoints"]
            lines += [
                f"url = {q(list(self.witness_urls))}",
                f"vkey = {q(list(self.witness_vkeys))}",
            ]
            lines += [f"quorum = {self.witness_quorum}"]
            lines += [f"timeout_seconds = {q(self.witness_timeout_seconds)}"]
        if self.decision_only:
            lines += ["", "[disclosure]  # intake systems shown the decision only"]
            lines += [
                f'{q(c)} = {{ mode = "decision_only", payment_key = {q(k)} }}'
                for c, k in sorted(self.decision_only.items())
            ]
        return "\n".join(lines) + "\n"


_SCALARS: dict[str, type] = {
    "address": str,
    "default_region": str,
    "min_banks": int,
    "query_timeout_seconds": float,
    "registry_timeout_seconds": float,
    "insecure": bool,
    "log_origin": str,
    "timezone": str,
    "token_epoch": int,
    "custodian_address": str,
    "audit_database": str,
    "service_database": str,
    "max_concurrent_verifications": int,
    "max_concurrent_per_caller": int,
    "rate_per_minute": int,
    "daily_quota": int,
    "not_found_alert": int,
    "not_found_window_seconds": int,
    "not_found_cooloff_seconds": int,
    "retention_days": int,
    "batch_idle_seconds": float,
    "metrics_address": str,
    "campaign_daily_budget": int,
    "gather_max_households": int,
    "gather_window_ms": float,
}
_POSITIVE = (
    "max_concurrent_verifications",
    "max_concurrent_per_caller",
    "campaign_daily_budget",
    "gather_max_households",
    "rate_per_minute",
    "daily_quota",
    "not_found_alert",
    "not_found_window_seconds",
    "retention_days",
    "batch_idle_seconds",
    "query_timeout_seconds",
    "registry_timeout_seconds",
)


_WITNESS = {"url", "vkey", "quorum", "timeout_seconds"}


def _strings(value: Any, where: str) -> tuple[str, ...]:
    """One string or a list of strings."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{where} must be a string or a list of strings")


def _witness(table: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The [witness] table: ``url`` and ``vkey`` (one each, or lists of the same length),
    ``quorum`` (default 1) and ``timeout_seconds`` (default 5), each checked."""
    from hedui.audit.cosignature import WitnessPolicy
    from hedui.audit.log import WitnessEndpoint

    if not table:
        return {}
    where = f"{path} [witness]"
    unknown = sorted(set(table) - _WITNESS)
    if unknown:
        raise ConfigError(
            f"{where} has no setting {', '.join(unknown)} (known: {', '.join(sorted(_WITNESS))})"
        )
    if "url" not in table or "vkey" not in table:
        raise ConfigError(f"{where}: url and vkey are required (the witness's address and key)")
    urls, vkeys = _strings(table["url"], f"{where} url"), _strings(table["vkey"], f"{where} vkey")
    if len(urls) != len(vkeys):
        raise ConfigError(
            f"{where}: {len(urls)} url(s) but {len(vkeys)} vkey(s); one of each per witness"
        )
    quorum = coerce("quorum", table.get("quorum", 1), int, where)
    timeout = coerce("timeout_seconds", table.get("timeout_seconds", 5.0), float, where)
    if not timeout > 0:
        raise ConfigError(f"{where}: timeout_seconds must be above 0, got {timeout}")
    try:
        endpoints = [WitnessEndpoint.parse(u, v) for u, v in zip(urls, vkeys, strict=True)]
        WitnessPolicy(tuple(e.cosigner for e in endpoints), quorum)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    return {
        "witness_urls": urls,
        "witness_vkeys": vkeys,
        "witness_quorum": quorum,
        "witness_timeout_seconds": timeout,
    }


def _disclosure(table: Mapping[str, Any], path: Path) -> dict[str, Path]:
    """The [disclosure] table: ``"<intake>" = { mode = "decision_only", payment_key = PATH }``
    per intake system shown the decision only; the key must be an X25519 public key (PEM)."""
    from hedui.core.errors import CryptoError
    from hedui.core.payment import load_public

    out: dict[str, Path] = {}
    for caller, setting in table.items():
        where = f"{path} [disclosure] {caller}"
        if not isinstance(setting, dict) or set(setting) != {"mode", "payment_key"}:
            raise ConfigError(
                f'{where} must be {{ mode = "decision_only", payment_key = "PATH" }} (the '
                "payment system's public key, made by `hedui payment keys`)"
            )
        if setting["mode"] != "decision_only":
            raise ConfigError(f'{where}: mode must be "decision_only", got {setting["mode"]!r}')
        key = Path(str(setting["payment_key"]))
        try:
            load_public(key.read_bytes(), str(key))
        except OSError as e:
            raise ConfigError(f"{where}: cannot read payment_key {key}: {e.strerror}") from None
        except CryptoError as e:
            raise ConfigError(f"{where}: {e}") from None
        out[str(caller)] = key
    return out


def load(path: Path, env: Mapping[str, str]) -> ServiceConfig:
    """Read ``path`` and apply ``HEDUI_<SETTING>`` overrides from ``env``."""
    try:
        return _load(path, env)
    except ConfigFileError as e:
        raise ConfigError(str(e)) from None


def _load(path: Path, env: Mapping[str, str]) -> ServiceConfig:
    doc = read_toml(path, "start the deployment with `hedui up`, or write the service's config")
    service = section(doc, "service", path)
    unknown = sorted(set(service) - set(_SCALARS) - {"keys_dir"})
    if unknown:
        raise ConfigError(
            f"{path}: [service] has no setting {', '.join(unknown)} (known: keys_dir, "
            f"{', '.join(_SCALARS)})"
        )
    values: dict[str, Any] = {}
    for name, kind in _SCALARS.items():
        if name in service:
            values[name] = coerce(name, service[name], kind, str(path))
        env_name = f"HEDUI_{name.upper()}"
        if env_name in env:
            values[name] = coerce(name, env[env_name], kind, env_name)
    for required in ("audit_database", "service_database"):
        if required not in values:
            raise ConfigError(f"{path}: [service] {required} is required")
    registry = section(doc, "registry", path).get("address")
    if not isinstance(registry, str):
        raise ConfigError(f"{path}: [registry] address is required")
    connectors = section(doc, "connectors", path)
    endpoints = tuple(Endpoint(str(k), str(v)) for k, v in connectors.items())
    if not endpoints:
        raise ConfigError(f"{path}: [connectors] lists no connector")
    for endpoint in endpoints:
        try:
            kind_of(endpoint.connector_id)
        except KeyError:
            raise ConfigError(
                f"{path}: [connectors] {endpoint.connector_id} is not a known connector"
            ) from None
    overrides: dict[str, tuple[int, int]] = {}
    for caller, limits in section(doc, "quotas", path).items():
        if not (
            isinstance(limits, list)
            and len(limits) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in limits)
        ):
            raise ConfigError(
                f"{path}: [quotas] {caller} must be [per minute, per day], two positive integers"
            )
        overrides[str(caller)] = (limits[0], limits[1])
    for name in _POSITIVE:
        if name in values and not values[name] > 0:
            raise ConfigError(f"{path}: {name} must be above 0, got {values[name]}")
    if values.get("not_found_cooloff_seconds", 0) < 0:
        raise ConfigError(
            f"{path}: not_found_cooloff_seconds must be 0 (alert only) or more, got "
            f"{values['not_found_cooloff_seconds']}"
        )
    config = ServiceConfig(
        keys_dir=Path(str(service.get("keys_dir", path.parent / "keys"))),
        registry=Endpoint("registry", registry),
        connectors=endpoints,
        quota_overrides=overrides,
        **values,
        **_witness(section(doc, "witness", path), path),
        decision_only=_disclosure(section(doc, "disclosure", path), path),
    )
    if config.min_banks < 2:
        raise ConfigError(f"min_banks must be at least 2, got {config.min_banks}")
    return config
