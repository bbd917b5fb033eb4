"""Item 11: a path that cannot be written is a clear error naming it (exit status 1), never a
traceback, and it is found before anything is contacted."""

from __future__ import annotations

from pathlib import Path

import pytest

from hedui.clients.errors import ClientError
from hedui.clients.intake import IntakeProfile
from hedui.clients.recheck import recheck
from tests.clients.helpers import authorisation, closed_port, run, run_process


def assert_clean_error(code: int, err: str, path: Path, option: str) -> None:
    assert code == 1, err
    assert err.startswith("hedui: error: "), err
    assert str(path) in err, err
    assert option in err, err  # says which option to change
    assert "Traceback" not in err


# -- population generate --out --------------------------------------------------------------


def test_population_out_under_a_file(capsys: pytest.CaptureFixture[str], a_file: Path) -> None:
    out = a_file / "data"
    code, _, err = run(capsys, "population", "generate", "--households", "2", "--out", str(out))
    assert_clean_error(code, err, out, "--out")
    assert f"{a_file} is a file, not a folder" in err


def test_population_out_is_a_file(capsys: pytest.CaptureFixture[str], a_file: Path) -> None:
    code, _, err = run(capsys, "population", "generate", "--households", "2", "--out", str(a_file))
    assert_clean_error(code, err, a_file, "--out")


def test_population_out_writable_still_works(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "new" / "data"
    code, stdout, err = run(
        capsys, "population", "generate", "--households", "2", "--out", str(out)
    )
    assert code == 0, err
    assert (out / "registry.csv").is_file() and str(out) in stdout
    assert not [p for p in out.iterdir() if p.name.startswith(".hedui-probe")]


# -- recheck --out --------------------------------------------------------------------------


def test_recheck_out_under_a_file_is_refused_before_anything(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, a_file: Path, roster: Path
) -> None:
    out = a_file / "verdicts.jsonl"
    # no deployment at all in this workdir: the --out problem is reported first
    code, _, err = run(
        capsys,
        "recheck",
        "--workdir",
        str(tmp_path / "no-deployment"),
        "--ids",
        str(roster),
        "--out",
        str(out),
        "--quiet",
        *authorisation(tmp_path),
    )
    assert_clean_error(code, err, out, "--out")


def test_recheck_out_is_a_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, stopped_workdir: Path, roster: Path
) -> None:
    code, _, err = run(
        capsys,
        "recheck",
        "--workdir",
        str(stopped_workdir),
        "--ids",
        str(roster),
        "--out",
        str(tmp_path),
        "--quiet",
        *authorisation(tmp_path),
    )
    assert_clean_error(code, err, tmp_path, "--out")
    assert "is a folder" in err


def test_recheck_library_opens_out_before_connecting(tmp_path: Path, a_file: Path) -> None:
    roster = tmp_path / "roster.txt"
    roster.write_text("11010519491231002X\n")
    out = a_file / "verdicts.jsonl"
    profile = IntakeProfile(f"127.0.0.1:{closed_port()}", "service", None)
    with pytest.raises(ClientError) as info:
        recheck(
            profile,
            roster,
            out,
            program="dibao",
            campaign_number="doc-1",
        )
    assert str(out) in str(info.value) and "not reachable" not in str(info.value)


def test_recheck_default_out_next_to_a_roster_in_an_unwritable_place(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, stopped_workdir: Path, roster: Path
) -> None:
    # the default --out is <ids>.verdicts.jsonl; make that path a folder so it cannot be written
    default_out = roster.with_suffix(".verdicts.jsonl")
    default_out.mkdir()
    code, _, err = run(
        capsys,
        "recheck",
        "--workdir",
        str(stopped_workdir),
        "--ids",
        str(roster),
        "--quiet",
        *authorisation(tmp_path),
    )
    assert_clean_error(code, err, default_out, "--out")


# -- audit export --out, audit verify --state -----------------------------------------------


def test_audit_export_out_under_a_file_is_refused_before_anything(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, a_file: Path
) -> None:
    out = a_file / "export.json"
    code, _, err = run(
        capsys,
        "audit",
        "export",
        "--workdir",
        str(tmp_path),  # not even a deployment: the --out problem comes first
        "--since",
        "2025-01-01",
        "--until",
        "2025-12-31",
        "--out",
        str(out),
    )
    assert_clean_error(code, err, out, "--out")


def _service_config(root: Path) -> None:
    """A workdir's service config, with no running deployment."""
    from hedui.core.workdir import Workdir

    path = Workdir(root).service_config
    path.parent.mkdir(parents=True)
    path.write_text("[service]\n")


def test_audit_verify_state_under_a_file_is_refused_before_anything(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, a_file: Path
) -> None:
    _service_config(tmp_path)  # a workdir, no running deployment
    state = a_file / "auditor" / "state.json"
    code, _, err = run(capsys, "audit", "verify", "--workdir", str(tmp_path), "--state", str(state))
    assert_clean_error(code, err, state, "--state")
    assert "the deployment is not running" not in err  # refused before contacting it


def test_audit_verify_state_is_a_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _service_config(tmp_path)
    code, _, err = run(
        capsys, "audit", "verify", "--workdir", str(tmp_path), "--state", str(tmp_path)
    )
    assert_clean_error(code, err, tmp_path, "--state")


def test_audit_verify_default_state_in_an_unwritable_home(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    a_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _service_config(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(a_file / "state"))
    code, _, err = run(capsys, "audit", "verify", "--workdir", str(tmp_path))
    assert_clean_error(code, err, a_file / "state", "--state")


def test_audit_commands_on_a_workdir_under_a_file(
    capsys: pytest.CaptureFixture[str], a_file: Path
) -> None:
    w = a_file / "work"
    code, _, err = run(capsys, "audit", "show", "--workdir", str(w))
    assert code == 1 and str(w) in err and "Traceback" not in err, err


# -- up --workdir, keys init --workdir (core/workdir.py raises WorkdirError) -----------------


@pytest.mark.parametrize("command", [["up"], ["keys", "init"]])
def test_workdir_under_a_file(
    capsys: pytest.CaptureFixture[str], a_file: Path, command: list[str]
) -> None:
    w = a_file / "work"
    code, _, err = run(capsys, *command, "--workdir", str(w))
    assert_clean_error(code, err, w, "--workdir")


# -- as a user runs it: a separate process, exit status 1, no traceback at all ---------------


def test_in_a_separate_process(tmp_path: Path, a_file: Path) -> None:
    out = a_file / "export.json"
    r = run_process(
        "audit", "export", "--workdir", str(tmp_path), "--since", "2025-01-01",
        "--until", "2025-01-31", "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert (
        r.stderr.startswith(f"hedui: error: cannot write {out}: ") and "Traceback" not in r.stderr
    )
    r = run_process("population", "generate", "--households", "1", "--out", str(a_file / "d"))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(a_file / "d") in r.stderr


def test_recheck_missing_roster_is_named_before_its_default_out(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ids = tmp_path / "missing" / "roster.txt"
    code, _, err = run(
        capsys, "recheck", "--workdir", str(tmp_path), "--ids", str(ids), *authorisation(tmp_path)
    )
    assert code == 1 and f"the roster {ids} is not a file" in err, err


def test_recheck_keeps_retrying_an_unreachable_service_until_its_patience_runs_out(
    tmp_path: Path,
) -> None:
    roster = tmp_path / "roster.txt"
    roster.write_text("11010519491231002X\n")
    out = tmp_path / "verdicts.jsonl"
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    with pytest.raises(ClientError) as info:
        recheck(
            IntakeProfile(f"127.0.0.1:{closed_port()}", "service", None),
            roster,
            out,
            program="dibao",
            campaign_number="doc-1",
            patience=120.0,
            sleep=sleep,
            clock=lambda: now[0],
        )
    # backoff doubles up to 30 s, and stops once 120 s passed with nothing settled
    assert slept == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert "1 household(s) could not be settled: 120 s passed without progress" in str(info.value)
    assert "not reachable" in str(info.value) and out.read_text() == ""
