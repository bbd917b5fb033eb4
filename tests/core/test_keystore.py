"""No silent regeneration: an enrolled party with a key missing or damaged is refused, naming
the file; a clock before the certificates is reported as such."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from hedui.clients.cli import main
from hedui.clients.provision import provision
from hedui.core.errors import KeyFileError
from hedui.core.workdir import Workdir


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A provisioned workdir: a CA and every party enrolled in its own directory."""
    root = tmp_path_factory.mktemp("deployment") / "w"
    provision(Workdir(root), ["bank-01"], dt.datetime.now(dt.UTC), paillier_bits=1024)
    return root


def _copy(src: Path, dst: Path) -> Workdir:
    import shutil

    shutil.copytree(src, dst)
    return Workdir(dst)


@pytest.mark.parametrize(
    ("party", "missing"),
    [
        ("service", "service/audit.key"),
        ("service", "log/log.key"),
        ("registry", "token-authority/grant.key"),
        ("bank-01", "connectors/bank-01/signing.key"),
        ("custodian", "custodian/paillier.key"),
        ("bank-01", "tls/bank-01.key"),
    ],
)
def test_a_missing_secret_stops_enrolment_and_is_not_recreated(
    deployment: Path, tmp_path: Path, party: str, missing: str
) -> None:
    w = _copy(deployment, tmp_path / "w")
    (w.keys(party).root / missing).unlink()
    with pytest.raises(KeyFileError, match="restore it") as info:
        provision(w, ["bank-01"], dt.datetime.now(dt.UTC), paillier_bits=1024)
    assert missing in str(info.value)
    assert not (w.keys(party).root / missing).exists()  # nothing was regenerated


def test_a_damaged_key_is_named_not_a_traceback(deployment: Path, tmp_path: Path) -> None:
    keys = _copy(deployment, tmp_path / "w").keys("service")
    log_key = keys.root / "log" / "log.key"
    log_key.write_bytes(log_key.read_bytes()[:40])  # truncated
    with pytest.raises(KeyFileError, match=r"log\.key is damaged"):
        keys.log_signing_key()


def test_a_clock_before_the_certificates_is_reported(deployment: Path) -> None:
    two_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    with pytest.raises(KeyFileError, match=r"clock says .* before .* becomes valid.*Fix the clock"):
        Workdir(deployment).keys("service").tls("service", now=two_days_ago)


def test_keys_rotate_is_logged(deployment: Path, tmp_path: Path, capsys) -> None:
    from hedui.audit.store import LogStore, open_log_engine
    from hedui.proto.v1 import audit_pb2

    w = _copy(deployment, tmp_path / "w")
    assert main(["keys", "rotate", "--tokens", "--workdir", str(w.root)]) == 0
    assert w.keys("registry").token_epoch() == 2
    store = LogStore(open_log_engine(w.audit_db_url))
    (entry,) = [audit_pb2.AuditEntry.FromString(b) for _, b in store.entries(0, 10)]
    assert entry.key_event.event == "rotated" and entry.key_event.key_name.endswith("epoch-2")
    assert "audit entry 0" in capsys.readouterr().out
