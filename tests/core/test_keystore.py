"""No silent regeneration: an existing key set with a file missing or damaged stops start-up,
naming the file; a clock before the certificates is reported as such."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from hedui.clients.cli import main
from hedui.core.errors import KeyFileError
from hedui.core.keystore import KeyDir


@pytest.fixture(scope="module")
def keyset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("keyset") / "keys"
    KeyDir(root).init(["bank-01"], paillier_bits=1024)
    return root


def _copy(src: Path, dst: Path) -> KeyDir:
    import shutil

    shutil.copytree(src, dst)
    return KeyDir(dst)


@pytest.mark.parametrize(
    ("missing", "why"),
    [
        ("service/audit.key", "unsearchable"),
        ("log/log.key", "another history"),
        ("token-authority/oprf-1.key", "keys rotate"),
        ("connectors/bank-01/signing.key", "Restore them"),
    ],
)
def test_a_missing_secret_stops_start_up_and_is_not_recreated(
    keyset: Path, tmp_path: Path, missing: str, why: str
) -> None:
    keys = _copy(keyset, tmp_path / "keys")
    (keys.root / missing).unlink()
    with pytest.raises(KeyFileError, match=why) as info:
        keys.init(["bank-01"])
    assert missing in str(info.value)
    assert not (keys.root / missing).exists()  # nothing was regenerated


def test_a_damaged_key_is_named_not_a_traceback(keyset: Path, tmp_path: Path) -> None:
    keys = _copy(keyset, tmp_path / "keys")
    log_key = keys.root / "log" / "log.key"
    log_key.write_bytes(log_key.read_bytes()[:40])  # truncated
    with pytest.raises(KeyFileError, match=r"log\.key is damaged"):
        keys.log_signing_key()


def test_a_clock_before_the_certificates_is_reported(keyset: Path) -> None:
    two_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    with pytest.raises(KeyFileError, match=r"clock says .* before .* becomes valid.*Fix the clock"):
        KeyDir(keyset).tls("service", now=two_days_ago)


def test_keys_rotate_is_logged(keyset: Path, tmp_path: Path, capsys) -> None:
    from hedui.audit.store import LogStore, open_log_engine
    from hedui.core.workdir import Workdir
    from hedui.proto.v1 import audit_pb2

    w = tmp_path / "w"
    _copy(keyset, w / "keys")
    assert main(["keys", "rotate", "--tokens", "--workdir", str(w)]) == 0
    store = LogStore(open_log_engine(Workdir(w).audit_db_url))
    (entry,) = [audit_pb2.AuditEntry.FromString(b) for _, b in store.entries(0, 10)]
    assert entry.key_event.event == "rotated" and entry.key_event.key_name.endswith("epoch-2")
    assert "audit entry 0" in capsys.readouterr().out
