"""The README's examples as a newcomer pastes them, and the paths and sources they name (issue 25)."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import tomllib
from pathlib import Path

from hedui.clients.cli import build_parser
from hedui.core.policy.book import FIELD_KINDS, PROGRAMS, PolicyBook
from hedui.core.policy.engine import HouseholdFacts, Member, Outcome
from hedui.core.workdir import Workdir

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(f"\n{title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end >= 0 else None]


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_the_deployment_block_pastes_into_a_shell() -> None:
    block = _blocks(_section("## Running a deployment"), "sh")[0]
    commands = [line.split("#", 1)[0] for line in block.splitlines() if "hedui " in line]
    assert any("hedui verify" in c for c in commands)
    # no optional-argument notation reaches the shell: optional flags are in comment lines
    for line in block.splitlines():
        code = line.split("  #", 1)[0] if not line.lstrip().startswith("#") else ""
        assert "[--" not in code, line


def test_paths_named_are_the_layout_hedui_up_makes(tmp_path: Path) -> None:
    for stale in ("w/keys/", "w/custodian/", "WORKDIR/db"):
        assert stale not in README, stale
    w = Workdir(tmp_path / "w")
    journal = w.custodian_dir / "decryptions.jsonl"
    assert f"`w/{journal.relative_to(w.root)}`" in README
    assert "w/parties/<party>/keys/" in README


def test_up_help_names_where_the_databases_are() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices["up"].format_help()
    flat = " ".join(text.split())
    assert "WORKDIR/db)" not in flat
    assert "WORKDIR/parties/service/db" in flat


def test_ci_names_readme_passages_that_exist() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for title in re.findall(r'README, "([^"]+)"', ci) + re.findall(r'README: "([^"]+)"', ci):
        assert re.search(rf"^#+ {re.escape(title)}$", README, re.M), title


def _needed_sources(program: str) -> set[str]:
    """The kinds of source whose absence leaves a rule of ``program`` undecided."""
    book, as_of = PolicyBook.builtin(), dt.date(2025, 8, 1)
    members = (Member("head", dt.date(1985, 1, 1), True),)
    complete = {f: 0 for f in FIELD_KINDS} | {"severe_disability_members": 1}
    rules = book.apply(program, "demo", HouseholdFacts(members, complete), as_of).evaluation.rules
    assert all(r.outcome is not Outcome.UNDECIDED for r in rules)
    needed = set()
    for kind in set(FIELD_KINDS.values()):
        fields = [f for f, k in FIELD_KINDS.items() if k == kind]
        totals = {f: v for f, v in complete.items() if f not in fields}
        facts = HouseholdFacts(members, totals, {f: (kind,) for f in fields})
        rules = book.apply(program, "demo", facts, as_of).evaluation.rules
        if any(r.outcome is Outcome.UNDECIDED for r in rules):
            needed.add("banks" if kind == "bank" else kind)
    return needed


def test_the_sources_each_programme_needs_and_the_custodian_example() -> None:
    operating = _section("## Operating hedui")
    table = {
        m.group(1): {s.strip() for s in m.group(2).split(",")}
        for m in re.finditer(r"^\| (\w+) \| ([a-z, -]+) \|$", operating, re.M)
    }
    assert table.keys() >= set(PROGRAMS)
    for program in PROGRAMS:
        assert table[program] == _needed_sources(program), program
    custodian = next(b for b in _blocks(operating, "toml") if "[custodian]" in b)
    config = tomllib.loads(custodian)["custodian"]
    listed = set(config["connectors"])
    banks = {c for c in listed if c.startswith("bank-")}
    assert len(banks) >= config["min_banks"]
    assert table["dibao"] - {"banks"} <= listed  # a dibao check can be decided
