"""Item 13: decisions in English and Chinese in the human output; a verdict that needs review
shows no benefit ("—"), not 0.00."""

from __future__ import annotations

import pytest

from hedui.clients.cli import demo_table
from hedui.clients.intake import decision_text, verdict_to_text, width
from hedui.proto.v1 import common_pb2, verification_pb2


def verdict(decision: int, benefit_fen: int = 0) -> verification_pb2.Verdict:
    v = verification_pb2.Verdict(
        request_id="r-1",
        decision=decision,  # type: ignore[arg-type]
        benefit_fen=benefit_fen,
        household_size=2,
        program="dibao",
        region="demo",
        as_of="2025-08-01",
        policy_version="v",
        connectors_answered=87,
    )
    v.rules.add(
        id="income",
        outcome=common_pb2.UNDECIDED if decision == common_pb2.NEEDS_REVIEW else common_pb2.PASSED,
        message_zh="家庭月收入 0.00 元，低于低保线 2520.00 元",
        message_en="household monthly income 0.00 yuan is below the line of 2520.00 yuan",
        references=["民发〔2012〕220号"],
    )
    return v


@pytest.mark.parametrize(
    ("decision", "text"),
    [
        (common_pb2.ELIGIBLE, "ELIGIBLE 准予"),
        (common_pb2.INELIGIBLE, "INELIGIBLE 不予"),
        (common_pb2.NEEDS_REVIEW, "NEEDS_REVIEW 需人工复核"),
    ],
)
def test_decision_in_english_and_chinese(decision: int, text: str) -> None:
    assert decision_text(decision) == text  # type: ignore[arg-type]
    assert decision_text(common_pb2.Decision.Name(decision)) == text  # type: ignore[arg-type]
    lines = verdict_to_text(verdict(decision)).splitlines()
    assert lines[0] == f"decision       {text}"


def test_needs_review_shows_no_benefit() -> None:
    text = verdict_to_text(verdict(common_pb2.NEEDS_REVIEW))
    benefit = next(line for line in text.splitlines() if line.startswith("benefit"))
    assert "—" in benefit and "0.00" not in benefit


def test_eligible_and_ineligible_show_the_amount() -> None:
    text = verdict_to_text(verdict(common_pb2.ELIGIBLE, 252000))
    assert "benefit        2520.00 yuan per month" in text.splitlines()
    text = verdict_to_text(verdict(common_pb2.INELIGIBLE))
    assert "benefit        0.00 yuan per month" in text.splitlines()


def test_demo_table_is_bilingual_and_aligned() -> None:
    rows = [
        ("income one fen below", "110105********002X", verdict(common_pb2.ELIGIBLE, 100), 12.0),
        ("assets above", "110105********003X", verdict(common_pb2.INELIGIBLE), 9.0),
        ("sources disagree", "110105********004X", verdict(common_pb2.NEEDS_REVIEW), 15.0),
    ]
    lines = demo_table(rows).splitlines()
    assert "ELIGIBLE 准予" in lines[1] and "INELIGIBLE 不予" in lines[2]
    assert "NEEDS_REVIEW 需人工复核" in lines[3]
    # the benefit column ends in the same terminal column on every line
    ends = {width(line[: line.index(token) + len(token)]) for line, token in zip(
        lines, ("benefit", "1.00", "0.00", "—"), strict=True
    )}  # fmt: skip
    assert len(ends) == 1, lines
    assert "0.00" not in lines[3]
