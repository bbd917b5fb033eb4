"""Key events and configuration changes, appended to the audit log when the service starts.

On every start the service compares the keys it holds (the custodian's Paillier key, the log's
checkpoint key, every connector's answer-signing key) and the settings that decide verdicts with
what the log last recorded, and appends a ``KeyEvent`` (``generated`` for a new key, ``rotated``
for a changed one) or a ``ConfigChange`` for each difference. An auditor can thus see when a key
or a threshold changed, without trusting the operator's word.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hedui.audit.log import AuditLog
from hedui.proto.v1 import audit_pb2

SERVICE_CALLER = "hedui-service"


def ed25519_fingerprint(key: Ed25519PublicKey) -> bytes:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:16]


def _recorded(log: AuditLog) -> tuple[dict[str, bytes], dict[str, str]]:
    keys: dict[str, bytes] = {}
    settings: dict[str, str] = {}
    for _, data in log.store.search(caller=SERVICE_CALLER, limit=1_000_000):
        entry = audit_pb2.AuditEntry.FromString(data)
        if entry.HasField("key_event"):
            keys[entry.key_event.key_name] = entry.key_event.public_fingerprint
        elif entry.HasField("config_change"):
            settings[entry.config_change.setting] = entry.config_change.new_value
    return keys, settings


def record_startup(
    log: AuditLog,
    *,
    keys: Mapping[str, bytes],
    settings: Mapping[str, str],
    now: dt.datetime,
) -> int:
    """Append what changed since the last start; answers how many entries were appended."""
    seen_keys, seen_settings = _recorded(log)
    ms = int(now.timestamp() * 1000)
    entries = []
    for name, fingerprint in sorted(keys.items()):
        if seen_keys.get(name) == fingerprint:
            continue
        event = "rotated" if name in seen_keys else "generated"
        entries.append(
            audit_pb2.AuditEntry(
                time_unix_ms=ms,
                caller=SERVICE_CALLER,
                caller_role="service",
                key_event=audit_pb2.KeyEvent(
                    event=event, key_name=name, public_fingerprint=fingerprint
                ),
            )
        )
    for setting, value in sorted(settings.items()):
        if seen_settings.get(setting) == value:
            continue
        entries.append(
            audit_pb2.AuditEntry(
                time_unix_ms=ms,
                caller=SERVICE_CALLER,
                caller_role="service",
                config_change=audit_pb2.ConfigChange(
                    setting=setting, old_value=seen_settings.get(setting, ""), new_value=value
                ),
            )
        )
    if entries:
        log.append(entries)
    return len(entries)
