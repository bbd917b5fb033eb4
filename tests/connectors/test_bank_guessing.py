"""Issue #26 item 3: play the bank. Over a simulated day of applications and a campaign, a bank
sees which of its customers are among the tokens of each query; its best rules for guessing which
of them are real applicants' household members are right about 1/k of the time with k = 4 (and
every time without decoys, so the test can fail).

The bank's view is the token authority's own output (:meth:`TokenAuthority.tokens` over a
register of households grouped by :mod:`hedui.connectors.decoys`), less the selectors:
encryptions under the custodian's key, which tell the bank nothing. Run as a script for the figures of docs/design.md §5:
``python -m tests.connectors.test_bank_guessing``.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.connectors.test_decoys import authority
from tests.connectors.test_decoys import register as make_register

BANK = "bank-07"


@dataclass(frozen=True)
class Day:
    """What the bank saw, and how well each of its rules guessed."""

    k: int
    queries: int
    seen: int  # customer sightings (a customer once per query it appears in)
    real: int  # of them, members of the household asked about
    distinct_lists: int  # the bank's lists, as it can tell them apart
    repeated_households: int  # households asked twice (application and campaign)
    linked_by_list: int  # of them, those whose two lists are identical (linkable)
    departure_tokens: int  # the residents that vanish from a query when one member leaves
    group_tokens: int  # the residents of that household's query
    precision: dict[str, float]  # rule -> share of its guesses that were real


def population(households: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.choice((1, 2, 2, 3, 3, 3, 4, 4, 5)) for _ in range(households)]


def simulate(
    k: int,
    path: Path,
    households: int = 20000,
    applications: int = 200,
    campaign: int = 150,
    seed: int = 7,
) -> Day:
    """One day at a bank holding 30 % of the residents. A connector's tokens are one to one
    with residents, so the bank's view is worked out on residents: the residents of the asked
    household's decoy group (:meth:`DecoyGroups.residents` and the household's own), which
    :meth:`TokenAuthority.tokens` turns into that many tokens (tests/connectors/test_decoys.py)."""
    rng = random.Random(seed)
    store, register = make_register(path, population(households, seed))
    ta = authority(store, k, (BANK,))
    customers = {r for h in register for r in h if rng.random() < 0.3}
    asked = rng.sample(range(households), applications)
    # the campaign re-checks a third of the day's applicants and others
    again = rng.sample(asked, campaign // 3)
    rest = [h for h in rng.sample(range(households), campaign) if h not in asked]
    queries = [(h, "application") for h in asked] + [
        (h, "campaign") for h in again + rest[: campaign - len(again)]
    ]

    def residents(h: int, members: list[str]) -> set[str]:
        if ta.groups is None:
            return set(members)
        return {*members, *ta.groups.residents(f"H{h:06d}")[1]}

    lists: list[tuple[int, frozenset[str], frozenset[str]]] = []
    for h, _path in queries:
        seen = frozenset(residents(h, register[h]) & customers)
        real = frozenset(set(register[h]) & customers)
        lists.append((h, seen, real))
    # rule 1: in each query, one customer at random
    hits = [rng.choice(sorted(seen)) in real for _, seen, real in lists if seen]
    # rule 2: every customer seen in two or more queries (households asked twice)
    times = Counter(t for _, seen, _ in lists for t in seen)
    members_of_asked = {t for _, _, real in lists for t in real}
    twice = [t for t, n in times.items() if n >= 2]
    # rule 3: every customer seen (what the bank sees without decoys: all of them real)
    every = list(times)
    precision = {
        "one at random per query": sum(hits) / max(1, len(hits)),
        "seen in two queries": sum(t in members_of_asked for t in twice) / max(1, len(twice)),
        "every customer seen": sum(t in members_of_asked for t in every) / max(1, len(every)),
    }
    by_household: dict[int, list[frozenset[str]]] = {}
    for h, seen, _ in lists:
        by_household.setdefault(h, []).append(seen)
    repeated = [v for v in by_household.values() if len(v) > 1]
    # a member leaves the largest asked household: which residents vanish from its query
    h = max(asked, key=lambda i: len(register[i]))
    before = residents(h, register[h])
    after = residents(h, register[h][:-1]) - {register[h][-1]}
    return Day(
        k=k,
        queries=len(lists),
        seen=sum(len(s) for _, s, _ in lists),
        real=sum(len(r) for _, _, r in lists),
        distinct_lists=len({s for _, s, _ in lists if s}),
        repeated_households=len(repeated),
        linked_by_list=sum(1 for v in repeated if len(set(v)) == 1 and v[0]),
        departure_tokens=len(before - after),
        group_tokens=len(before),
        precision=precision,
    )


@pytest.mark.parametrize("k", [4, 8])
def test_the_banks_best_guess_is_right_about_one_time_in_k(k: int, tmp_path: Path) -> None:
    day = simulate(k, tmp_path / "register.db")
    assert day.seen >= (k - 1) * day.real  # about k times the customers
    for rule, share in day.precision.items():
        assert share <= 1 / k + 0.08, (rule, share)
    # a member leaving takes their own token only: the other residents of the group stay
    assert day.departure_tokens == 1 and day.group_tokens >= k


def test_without_decoys_the_bank_knows_every_applicant(tmp_path: Path) -> None:
    day = simulate(1, tmp_path / "register.db")
    assert day.precision["every customer seen"] == 1.0
    assert day.precision["one at random per query"] == 1.0


if __name__ == "__main__":
    import tempfile

    print(
        "| k | queries | customers seen (real) | distinct lists | households asked twice: "
        "linkable | bank's best rule right |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for k in (1, 2, 4, 8):
        with tempfile.TemporaryDirectory() as d:
            day = simulate(k, Path(d) / "register.db")
        best = max(day.precision.values())
        print(
            f"| {k} | {day.queries} | {day.seen} ({day.real}) | {day.distinct_lists} | "
            f"{day.repeated_households}: {day.linked_by_list} | {best:.2f} |"
        )
