"""`hedui connector import` refuses to empty or shrink a connector, and logs every import."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from hedui.audit.store import LogStore, open_log_engine
from hedui.clients.cli import main
from hedui.core.resident_id import make
from hedui.core.workdir import Workdir
from hedui.proto.v1 import audit_pb2


def _bank_file(path: Path, people: int) -> Path:
    """A household register of ``people`` one-person households (the registry imports without
    the token authority; a bank's import through it is tested end to end)."""
    rows = []
    for i in range(people):
        birth = dt.date(1960, 1, 1) + dt.timedelta(days=i)
        rows.append(f"H{i},{make('500106', birth, 1).value},head,{birth.isoformat()}\n")
    path.write_text("household_id,id_number,relation,birth_date\n" + "".join(rows))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shrink") / "w"
    assert (
        main(["keys", "init", "--workdir", str(root), "--paillier-bits", "1024", "--banks", "2"])
        == 0
    )
    return root


def _import(w: Path, file: Path, *extra: str) -> int:
    return main(
        [
            "connector",
            "import",
            "--workdir",
            str(w),
            "--connector",
            "registry",
            "--file",
            str(file),
            *extra,
        ]
    )


def test_shrinking_imports_are_refused_and_every_import_is_logged(
    workdir: Path, tmp_path: Path, capsys
) -> None:
    assert _import(workdir, _bank_file(tmp_path / "ten.csv", 10)) == 0
    header_only = tmp_path / "header.csv"
    header_only.write_text("household_id,id_number,relation,birth_date\n")
    assert _import(workdir, header_only) == 1
    err = capsys.readouterr().err
    assert "holds 10 people now and the file holds nobody" in err and "--allow-shrink" in err
    assert _import(workdir, _bank_file(tmp_path / "seven.csv", 7)) == 1  # a loss of 30 %
    assert "drop 3 of 10 people (30%)" in capsys.readouterr().err
    assert _import(workdir, _bank_file(tmp_path / "eight.csv", 8)) == 0  # 20 % is allowed
    assert _import(workdir, header_only, "--allow-shrink") == 0
    store = LogStore(open_log_engine(Workdir(workdir).audit_db_url))
    changes = [
        (e.caller, e.config_change.setting, e.config_change.old_value, e.config_change.new_value)
        for e in (audit_pb2.AuditEntry.FromString(b) for _, b in store.entries(0, 100))
        if e.HasField("config_change")
    ]
    assert changes == [
        ("hedui-operator", "data:registry:people", "", "10"),
        ("hedui-operator", "data:registry:people", "10", "8"),
        ("hedui-operator", "data:registry:people", "8", "0"),
    ]
