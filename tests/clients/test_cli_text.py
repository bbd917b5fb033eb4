"""Item 12: --version, help for every option with its default, known regions in region errors,
why `bench load` failed, and --since after --until."""

from __future__ import annotations

import argparse
import importlib.metadata
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from hedui.clients.cli import build_parser
from hedui.clients.loadgen import LoadResult
from tests.clients.helpers import consent_flags, run

ID = "11010519491231002X"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out == f"hedui {importlib.metadata.version('hedui')}\n"


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


PARSERS = list(_parsers(build_parser()))


def test_every_command_is_walked() -> None:
    names = {" ".join(p) for p, _ in PARSERS}
    for command in (
        "keys init",
        "population generate",
        "connector import",
        "up",
        "verify",
        "recheck",
        "bench load",
        "demo",
        "audit verify",
        "audit show",
        "audit prove",
        "audit search",
        "audit export",
        "policy check",
        "policy explain",
    ):
        assert command in names


@pytest.mark.parametrize(
    ("path", "parser"), PARSERS, ids=[" ".join(p) or "hedui" for p, _ in PARSERS]
)
def test_every_option_says_what_it_does_and_its_default(
    path: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and len(action.help) > 10, f"{' '.join(path)} {name}: no help"
        if not action.option_strings or action.required:
            continue  # positional or required: there is no default to tell
        if isinstance(action, argparse._VersionAction):
            continue
        assert "default" in action.help, f"{' '.join(path)} {name}: help does not give the default"
        if action.default not in (None, False):
            assert "%(default)s" in action.help, f"{' '.join(path)} {name}: default not shown"
    text = parser.format_help()  # every help string renders (a stray % would raise here)
    for action in parser._actions:
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            if not isinstance(action, argparse._HelpAction):
                assert f"default: {action.default}" in " ".join(text.split())


def test_help_runs_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for path, _ in PARSERS:
        code, out, _ = run(capsys, *path, "--help")
        assert code == 0 and "usage: hedui" in out, path


# -- regions --------------------------------------------------------------------------------


def test_verify_unknown_region_lists_the_known_ones(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # refused on this side, before the (absent) deployment is contacted
    code, _, err = run(
        capsys, "verify", "--workdir", str(tmp_path), "--id", ID, "--program", "dibao",
        "--region", "nowhere", *consent_flags(tmp_path, ID),
    )  # fmt: skip
    assert code == 1
    assert "unknown region 'nowhere'; known regions: demo, shanghai" in err


def test_policy_explain_unknown_region_lists_the_known_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(capsys, "policy", "explain", "--program", "dibao", "--region", "nowhere")
    assert code == 1
    assert "unknown region 'nowhere'; known regions: demo, shanghai" in err


# -- bench load -----------------------------------------------------------------------------


def test_bench_load_against_a_stopped_deployment_says_why(
    capsys: pytest.CaptureFixture[str], stopped_workdir: Path, roster: Path
) -> None:
    code, out, err = run(
        capsys, "bench", "load", "--workdir", str(stopped_workdir), "--ids", str(roster),
        "--seconds", "0.2", "--concurrency", "2", "--campaign", "测〔2026〕1号",
    )  # fmt: skip
    assert code == 1
    assert out == ""
    assert err.startswith("hedui: error: all ") and " calls failed: UNAVAILABLE: " in err, err
    assert "not reachable" in err and "is `hedui up` running?" in err, err


def test_load_result_summary_names_the_reasons() -> None:
    errors = Counter({"UNAVAILABLE: down": 5, "DEADLINE_EXCEEDED: slow": 2})
    assert LoadResult(0, 7, 1.0, (), errors).summary() == (
        "all 7 calls failed: 5× UNAVAILABLE: down; 2× DEADLINE_EXCEEDED: slow"
    )
    one = LoadResult(0, 3, 1.0, (), Counter({"UNAVAILABLE: down": 3}))
    assert one.summary() == "all 3 calls failed: UNAVAILABLE: down"
    some = LoadResult(2, 1, 1.0, (0.1, 0.2), Counter({"INTERNAL: boom": 1})).summary()
    assert some.startswith("2 verifications in 1.0 s") and some.endswith(
        "1 failed (INTERNAL: boom)"
    )
    assert "more --seconds" in LoadResult(0, 0, 0.1, ()).summary()


def test_bench_load_seconds_must_be_positive(
    capsys: pytest.CaptureFixture[str], stopped_workdir: Path, roster: Path
) -> None:
    code, _, err = run(
        capsys, "bench", "load", "--workdir", str(stopped_workdir), "--ids", str(roster),
        "--seconds", "0", "--campaign", "测〔2026〕1号",
    )  # fmt: skip
    assert code == 2 and "--seconds" in err


# -- periods --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["export", "search"])
def test_since_after_until_is_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    extra = ["--out", str(tmp_path / "e.json")] if command == "export" else []
    code, _, err = run(
        capsys, "audit", command, "--workdir", str(tmp_path), "--since", "2025-03-02",
        "--until", "2025-03-01", *extra,
    )  # fmt: skip
    assert code == 1
    assert "--since 2025-03-02 is after --until 2025-03-01" in err
    assert not (tmp_path / "e.json").exists()


def test_since_equal_to_until_is_one_day(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(
        capsys, "audit", "export", "--workdir", str(tmp_path), "--since", "2025-03-01",
        "--until", "2025-03-01", "--out", str(tmp_path / "e.json"),
    )  # fmt: skip
    assert code == 1  # no deployment here; but the period itself was accepted
    assert "after" not in err and "service.toml" in err


@pytest.mark.parametrize(
    ("url", "said"),
    [("mysql://h/db", "mysql is not supported"), ("not a url", "is not a database URL")],
)
def test_up_database_url_must_be_sqlite_or_postgresql(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str, said: str
) -> None:
    code, _, err = run(capsys, "up", "--workdir", str(tmp_path / "w"), "--database-url", url)
    assert code == 2 and said in err and "--database-url" in err
    assert not (tmp_path / "w").exists()
