from pathlib import Path

import pytest

from hedui.clients.cli import main
from hedui.core.policy import params

PARAMS = Path(__file__).resolve().parents[2] / "core" / "policy" / "params"


@pytest.mark.parametrize("path", sorted(PARAMS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_files_are_valid(path: Path) -> None:
    assert params.check(path.read_bytes()) == []


BAD = """region = "x"
[programs.dibao]
disclosure = "everything"
[parameters.dibao_standard]
unit = "yuan"
values = [
  { start = 2024-07-01, value = 1200.5, reference = "r" },
  { start = 2024-01-01, value = 1, reference = " " },
  { start = 2025-01-01, value = 2, reference = "r", note = "x" },
]
"""


def test_problems_name_their_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(BAD, encoding="utf-8")
    assert main(["policy", "check", str(f)]) == 1
    out = capsys.readouterr().out
    assert f"{f}:2: programs.dibao.disclosure" in out
    assert f"{f}:5: parameters.dibao_standard: unit must be 'fen/person/month'" in out
    assert (
        f"{f}:7: parameters.dibao_standard.values[0]: value must be a non-negative whole number"
        in out
    )
    assert (
        f"{f}:8: parameters.dibao_standard.values[1]: every value needs its legal reference" in out
    )
    assert f"{f}:8: parameters.dibao_standard.values[1]: dates must increase" in out
    assert f"{f}:9: parameters.dibao_standard.values[2]: unknown key(s) note" in out


def test_toml_syntax_error_names_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "syntax.toml"
    f.write_text('region = "x"\n[parameters.a\n', encoding="utf-8")
    assert main(["policy", "check", str(f)]) == 1
    assert f"{f}:2: not valid TOML" in capsys.readouterr().out


def test_next_years_standard_is_one_edit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (PARAMS / "demo.toml").read_text(encoding="utf-8")
    text = text.replace(
        '  { start = 2025-07-01, value = 126000, reference = "示范地区民政局 关于调整城乡最低生活保障标准的通知（2025）第一条" },\n',
        '  { start = 2025-07-01, value = 126000, reference = "示范地区民政局 关于调整城乡最低生活保障标准的通知（2025）第一条" },\n'
        '  { start = 2026-07-01, value = 131000, reference = "示范地区民政局 关于调整城乡最低生活保障标准的通知（2026）第一条" },\n',
    )
    f = tmp_path / "demo.toml"
    f.write_text(text, encoding="utf-8")
    assert main(["policy", "check", str(f)]) == 0
    assert (
        main(["policy", "explain", "--program", "dibao", "--as-of", "2026-07-01", "--file", str(f)])
        == 0
    )
    out = capsys.readouterr().out
    assert "1310.00 yuan" in out and "（2026）" in out


def test_explain_lists_parameters_with_references(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "policy",
                "explain",
                "--program",
                "tekun",
                "--region",
                "shanghai",
                "--as-of",
                "2024-08-01",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "1595.00 yuan" in out and "130 percent" in out and "民发〔2021〕43号" in out
    assert main(["policy", "explain", "--program", "nope"]) == 1


def test_a_misspelled_parameter_is_an_error_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo used to print OK and silently switch dibao off."""
    text = (PARAMS / "demo.toml").read_text(encoding="utf-8")
    f = tmp_path / "typo.toml"
    f.write_text(text.replace("[parameters.dibao_standard]", "[parameters.dibao_standrad]"))
    assert main(["policy", "check", str(f)]) == 1
    out = capsys.readouterr().out
    line = text.splitlines().index("[parameters.dibao_standard]") + 1
    assert f"{f}:{line}: unknown parameter dibao_standrad" in out
    assert "did you mean dibao_standard?" in out


def test_a_standard_a_hundred_times_too_small_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (PARAMS / "demo.toml").read_text(encoding="utf-8")
    f = tmp_path / "small.toml"
    f.write_text(text.replace("value = 126000", "value = 1320"))
    assert main(["policy", "check", str(f)]) == 1
    out = capsys.readouterr().out
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "value = 126000" in ln)
    assert (
        f"{f}:{line}: parameters.dibao_standard.values[2]: 1320 fen/person/month is outside" in out
    )
