import datetime as dt
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.audit.log import AuditLog
from hedui.audit.store import LogStore, open_log_engine
from hedui.proto.v1 import audit_pb2
from hedui.server.key_events import record_startup

NOW = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.UTC)


def _kinds(log: AuditLog) -> list[tuple[str, str, str]]:
    out = []
    for _, data in log.store.entries(0, 100):
        e = audit_pb2.AuditEntry.FromString(data)
        if e.HasField("key_event"):
            out.append(("key", e.key_event.event, e.key_event.key_name))
        else:
            c = e.config_change
            out.append(("config", c.setting, f"{c.old_value}->{c.new_value}"))
    return out


def test_startup_records_generated_rotated_and_changed(tmp_path: Path) -> None:
    log = AuditLog(
        LogStore(open_log_engine(f"sqlite:///{tmp_path / 'a.sqlite'}")),
        origin="t/log",
        signing_key=Ed25519PrivateKey.generate(),
    )
    keys = {"paillier": b"p1", "log": b"l1"}
    assert record_startup(log, keys=keys, settings={"min_banks": "3"}, now=NOW) == 3
    assert (
        record_startup(log, keys=keys, settings={"min_banks": "3"}, now=NOW) == 0
    )  # a plain restart
    assert (
        record_startup(
            log, keys={"paillier": b"p2", "log": b"l1"}, settings={"min_banks": "5"}, now=NOW
        )
        == 2
    )
    assert _kinds(log)[3:] == [("key", "rotated", "paillier"), ("config", "min_banks", "3->5")]
    assert ("key", "generated", "log") in _kinds(log)[:3]
