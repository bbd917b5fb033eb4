"""Issue #25 item 1: an auditor and an intake system on hosts of their own, with a profile and
no workdir. What each is told when its profile is missing, incomplete or its service is down:
the README's step by name, never a command the README does not document (the working path
with a running service is tests/e2e/test_party_by_party.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hedui.clients.auditor import AuditorProfile
from hedui.clients.errors import ClientError
from tests.clients.helpers import closed_port, run

AUDITOR_STEP = '"Operating hedui", "Auditor host"'
INTAKE_STEP = '"Operating hedui", "Intake host"'


def _auditor_profile(tmp_path: Path, **fields: str) -> Path:
    """An auditor host's profile without TLS files (insecure: nothing to read)."""
    doc = {
        "address": f'"127.0.0.1:{closed_port()}"',
        "insecure": "true",
        "log_public_key": f'"{tmp_path / "log.pub"}"',
        "log_origin": '"hedui.example/province-log"',
        "state": f'"{tmp_path / "state.json"}"',
    } | fields
    path = tmp_path / "auditor.toml"
    path.write_text("".join(f"{k} = {v}\n" for k, v in doc.items() if v))
    return path


def test_an_auditor_profile_names_its_key_origin_and_state(tmp_path: Path) -> None:
    profile = AuditorProfile.load(_auditor_profile(tmp_path))
    assert profile.log_public_key == tmp_path / "log.pub"
    assert profile.log_origin == "hedui.example/province-log"
    assert profile.state == tmp_path / "state.json"
    assert AuditorProfile.load(_auditor_profile(tmp_path, state="")).state is None


@pytest.mark.parametrize("missing", ["log_public_key", "log_origin"])
def test_an_auditor_profile_without_the_logs_key_or_origin_is_refused(
    tmp_path: Path, missing: str
) -> None:
    with pytest.raises(ClientError) as info:
        AuditorProfile.load(_auditor_profile(tmp_path, **{missing: ""}))
    assert missing in str(info.value) and AUDITOR_STEP in str(info.value)


@pytest.mark.parametrize(
    "command", [["verify"], ["show"], ["prove", "0"], ["search", "--caller", "intake"]]
)
def test_audit_commands_with_a_missing_profile_point_to_the_readme(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "nowhere.toml"
    code, _, err = run(capsys, "audit", *command, "--profile", str(missing))
    assert code == 1 and str(missing) in err and AUDITOR_STEP in err, err
    assert "keys init" not in err and "Traceback" not in err


def test_audit_needs_a_workdir_or_a_profile_not_both(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "audit", "show")
    assert code == 2 and "--workdir" in err and "--profile" in err, err
    code, _, err = run(
        capsys, "audit", "show", "--workdir", str(tmp_path), "--profile", str(tmp_path / "a")
    )
    assert code == 2 and "not allowed with" in err, err


def test_an_auditor_host_without_the_logs_key_is_told_where_it_comes_from(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    export = tmp_path / "export.json"
    export.write_text("{}")
    profile = _auditor_profile(tmp_path)
    code, _, err = run(
        capsys, "audit", "verify", "--profile", str(profile), "--export", str(export)
    )
    assert code == 1 and str(tmp_path / "log.pub") in err and AUDITOR_STEP in err, err
    assert "keys init" not in err


def test_an_auditor_host_has_no_database_to_read_offline(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    profile = _auditor_profile(tmp_path)
    code, _, err = run(capsys, "audit", "show", "--profile", str(profile), "--offline")
    assert code == 1 and "--offline" in err and "running service" in err, err


def test_an_auditor_host_whose_service_is_down_is_told_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    profile = _auditor_profile(tmp_path)
    code, _, err = run(capsys, "audit", "show", "--profile", str(profile))
    assert code == 1 and "does not answer" in err and "127.0.0.1:" in err, err
    assert "reading the log's database" not in err  # it has none


def test_a_workdir_without_a_service_config_suggests_the_auditor_host_step(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "audit", "show", "--workdir", str(tmp_path))
    assert code == 1 and "--profile FILE" in err and AUDITOR_STEP in err, err


@pytest.mark.parametrize("command", ["verify", "report"])
def test_intake_commands_need_a_profile_or_a_workdir(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    form = tmp_path / "form.pdf"
    form.write_bytes(b"form")
    args = {
        "verify": ["--id", "110101199003077777", "--program", "dibao", "--case-number", "c-1",
                   "--consent-form", str(form), "--signed-on", "2025-01-02",
                   "--signer", "110101199003077777"],
        "report": ["--request-id", "r-1", "--out", str(tmp_path / "r.html")],
    }[command]  # fmt: skip
    code, _, err = run(capsys, command, *args)
    assert code == 1 and "--profile FILE" in err and INTAKE_STEP in err, err
    missing = tmp_path / "intake.toml"
    code, _, err = run(capsys, command, *args, "--profile", str(missing))
    assert code == 1 and str(missing) in err and INTAKE_STEP in err, err
    assert "Traceback" not in err
