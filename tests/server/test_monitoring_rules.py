"""主动发现 rules in the region's policy file: validated with line numbers, read into frozen
rules; an amount event is raised when its running total crosses the threshold, once."""

from __future__ import annotations

from pathlib import Path

import pytest

from hedui.clients.cli import main
from hedui.core.policy import params

DEMO = Path(params.__file__).parent / "params" / "demo.toml"
BASE = DEMO.read_text(encoding="utf-8").split("# 主动发现")[0]


def test_the_demo_region_monitors_the_issue_s_events() -> None:
    rules = params.load_file(DEMO).monitoring
    assert rules is not None and rules.deadline_days == 15 and rules.escalate_after_days == 5
    assert set(rules.events) == {
        "death",
        "unemployment",
        "medical_self_pay",
        "disability",
        "vehicle",
        "commercial_property",
        "business",
    }
    medical = rules.events["medical_self_pay"]
    assert (medical.source, medical.threshold_fen, medical.suggest) == (
        "medical",
        4_000_000,
        "zhichu",
    )
    assert rules.events["vehicle"].alert == "on_change" and rules.events["death"].source == "civil"
    assert all(r.reference for r in rules.events.values())


@pytest.mark.parametrize(
    ("before", "now", "raised"),
    [
        (None, 4_000_000, True),  # first report, at the threshold
        (None, 3_999_999, False),
        (3_500_000, 4_100_000, True),  # crossed since the last report
        (4_100_000, 4_300_000, False),  # still over: raised once already
        (4_100_000, 3_000_000, False),
    ],
)
def test_a_running_total_raises_the_event_when_it_crosses(
    before: int | None, now: int, raised: bool
) -> None:
    rules = params.load_file(DEMO).monitoring
    assert rules is not None
    assert rules.events["medical_self_pay"].crossed(now, before) is raised
    assert rules.events["death"].crossed(0, None)  # no amount: always


def test_policy_check_names_each_problem_by_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        BASE
        + '[monitoring]\ndeadline_days = 0\nescalate_after_days = 5\nreference = "r"\n'
        + '[monitoring.events.medical_selfpay]\nsource = "medical"\nreference = "r"\n'
        + '[monitoring.events.vehicle]\nsource = "bank"\nthreshold_fen = 5\nreference = "r"\n'
        + '[monitoring.events.medical_self_pay]\nsource = "medical"\nthreshold_fen = 40000.0\n'
        + 'alert = "sometimes"\nreference = "r"\n',
        encoding="utf-8",
    )
    assert main(["policy", "check", str(bad)]) == 1
    out = capsys.readouterr().out
    lines = BASE.count("\n")
    assert f"bad.toml:{lines + 2}: monitoring.deadline_days must be a whole number" in out
    assert (
        f"bad.toml:{lines + 5}: unknown event kind medical_selfpay; did you mean medical_self_pay?"
        in out
    )
    assert "monitoring.events.vehicle.source must be a department" in out
    assert "a vehicle event has no amount, so no threshold_fen" in out
    assert (
        "monitoring.events.medical_self_pay.threshold_fen must be a positive amount in fen" in out
    )
    assert "monitoring.events.medical_self_pay.alert must be one of always, on_change" in out
    assert "6 problem(s)" in out


def test_every_event_kind_has_its_words_and_the_deployments_amount_flag() -> None:
    from hedui.core.deployment import EVENT_AMOUNTS
    from hedui.core.policy.monitoring import EVENT_KINDS

    assert list(EVENT_KINDS) == list(EVENT_AMOUNTS)
    assert [k for k, v in EVENT_KINDS.items() if v.amount] == ["medical_self_pay"]
