"""The witness's directory and configuration (``hedui serve witness --workdir DIR``).

    DIR/witness.toml      its config: [witness] settings and one [[log]] table per log
    DIR/witness.key       its Ed25519 cosigning key (0600), made at the first start
    DIR/witness.vkey      its verifier key (type 0x04), for the parties that check cosignatures
    DIR/state.json        the latest checkpoint it cosigned of each log (see hedui.witness.core)
    DIR/evidence.jsonl    log-signed checkpoints it refused as inconsistent (forks)
    DIR/keys/             its TLS key directory: ca.pem, crl.pem, tls/<tls_name>.pem and .key
    DIR/run/              witness.listening (its address) while it serves

A config::

    [witness]
    name = "witness.example.gov.cn/hedui"   # the key name of its cosignatures
    address = "0.0.0.0:7380"                # HOST:PORT it listens on (port 0: any free one)
    tls_name = "witness"                    # its certificate: keys/tls/<tls_name>.pem
    submitters = ["service"]                # roles whose certificates may submit checkpoints

    [[log]]
    origin = "hedui.local/0123abcd-log"
    vkey = "hedui.local/0123abcd-log+1a2b3c4d+AR…"   # or vkeys = [...] while a key rotates

Every [witness] setting may be overridden by a ``HEDUI_<SETTING>`` variable.

The key and the state go together: a first start (neither there) makes both; a key without its
state is refused (a witness that forgot what it cosigned would cosign a fork of the history it
vouched for), and so is a state without its key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.audit.cosignature import check_key_name, cosigner_vkey
from hedui.core import signing
from hedui.core.config import load_settings, read_toml, section
from hedui.core.errors import ConfigFileError, CryptoError, KeyFileError
from hedui.core.keyfiles import read_secret, replace_public, write_secret
from hedui.witness.core import Witness, WitnessedLog, state_bytes, write_atomically
from hedui.witness.errors import ConfigError

CONFIG_FILE = "witness.toml"
KEY_FILE = "witness.key"
VKEY_FILE = "witness.vkey"
STATE_FILE = "state.json"
EVIDENCE_FILE = "evidence.jsonl"


@dataclass(frozen=True)
class WitnessConfig:
    """The witness's settings (``[witness]`` and ``[[log]]`` of ``DIR/witness.toml``)."""

    name: str  # the key name of its cosignatures, e.g. witness.example.gov.cn/hedui
    directory: Path = Path()  # DIR (set by the loader, not the file)
    logs: tuple[WitnessedLog, ...] = ()
    address: str = "127.0.0.1:0"
    keys_dir: Path | None = None  # default DIR/keys
    tls_name: str = "witness"
    submitters: tuple[str, ...] = ("service",)
    metrics_address: str = ""  # HOST:PORT of its Prometheus /metrics ("" = none)

    @property
    def config_path(self) -> Path:
        return self.directory / CONFIG_FILE

    @property
    def tls_keys(self) -> Path:
        return self.keys_dir if self.keys_dir is not None else self.directory / "keys"

    @property
    def key_path(self) -> Path:
        return self.directory / KEY_FILE

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE


def _logs(doc: Mapping[str, Any], path: Path) -> tuple[WitnessedLog, ...]:
    tables = doc.get("log", [])
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{path}: no [[log]] table: name each log to witness (origin, vkey)")
    logs = []
    for i, table in enumerate(tables, 1):
        where = f"{path} [[log]] number {i}"
        if not isinstance(table, dict) or set(table) - {"origin", "vkey", "vkeys"}:
            raise ConfigError(f"{where}: want origin and vkey (or vkeys), nothing else")
        origin, vkeys = table.get("origin"), table.get("vkeys", [])
        if "vkey" in table:
            vkeys = [table["vkey"], *vkeys]
        if not isinstance(origin, str) or not isinstance(vkeys, list) or not vkeys:
            raise ConfigError(f"{where}: want origin and vkey (or vkeys)")
        if not all(isinstance(v, str) for v in vkeys):
            raise ConfigError(f"{where}: a vkey is not a string")
        try:
            logs.append(WitnessedLog.from_vkeys(origin, vkeys))
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    if len({entry.origin for entry in logs}) != len(logs):
        raise ConfigError(f"{path}: a log is listed twice; give one [[log]] per origin")
    return tuple(logs)


def load_witness_config(directory: Path, env: Mapping[str, str]) -> WitnessConfig:
    """The config of the witness whose directory is ``directory``."""
    directory = Path(directory).expanduser().resolve()
    path = directory / CONFIG_FILE
    try:
        doc = read_toml(path, "write the witness's config (see hedui.witness.config)")
        config = load_settings(
            WitnessConfig, section(doc, "witness", path), env, f"{path} [witness]"
        )
    except ConfigFileError as e:
        raise ConfigError(str(e)) from None
    config = dataclasses.replace(config, directory=directory, logs=_logs(doc, path))
    if config.keys_dir is not None and not config.keys_dir.is_absolute():
        config = dataclasses.replace(config, keys_dir=directory / config.keys_dir)
    try:
        check_key_name(config.name)
    except ValueError as e:
        raise ConfigError(f"{path} [witness] name: {e}") from None
    return config


def _load_key(path: Path) -> Ed25519PrivateKey:
    try:
        return signing.load_private_key(read_secret(path))
    except (ValueError, CryptoError):
        raise ConfigError(f"{path} is damaged; restore it from your backup") from None
    except KeyFileError as e:
        raise ConfigError(str(e)) from None


def prepare(config: WitnessConfig) -> Witness:
    """The witness of ``config``, with its key and state; at the first start (no key, no
    state) both are made and the verifier key written to ``DIR/witness.vkey``."""
    key_path, state_path = config.key_path, config.state_path
    has_key, has_state = key_path.exists(), state_path.exists()
    if has_key and not has_state:
        raise ConfigError(
            f"{state_path} is missing but the witness key {key_path} is there: a witness that "
            "forgot what it cosigned would cosign a fork of a log it vouched for. Restore "
            f"{state_path.name} from your backup; if it is lost, retire this witness: move "
            f"{key_path.name} away (a new key is made at the next start) and give the parties "
            f"the new {VKEY_FILE}"
        )
    if has_state and not has_key:
        raise ConfigError(
            f"{key_path} is missing but {state_path} is there; restore the key from your "
            f"backup, or move {state_path.name} away to start a new witness with a new key"
        )
    if not has_key:
        config.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        write_secret(key_path, signing.private_key_to_pem(key))
        write_atomically(state_path, state_bytes({}))
    key = _load_key(key_path)
    raw = key.public_key().public_bytes_raw()
    for entry in config.logs:
        if any(k.public_key.public_bytes_raw() == raw for k in entry.keys):
            raise ConfigError(
                f"{key_path} is a key of the log {entry.origin}: a witness must not be the log"
            )
    vkey = cosigner_vkey(config.name, key.public_key())
    vkey_path = config.directory / VKEY_FILE
    if not vkey_path.exists() or vkey_path.read_text(encoding="utf-8").strip() != vkey:
        replace_public(vkey_path, f"{vkey}\n".encode())
    return Witness(
        config.name,
        key,
        config.logs,
        state_path,
        evidence=config.directory / EVIDENCE_FILE,
    )
