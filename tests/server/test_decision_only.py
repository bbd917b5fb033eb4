"""decision_only (issue #24 item 2): the caller sees the decision and each rule's outcome, no
figure and no benefit; the payment system alone opens the sealed benefit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from hedui.clients.cli import main
from hedui.core.errors import CryptoError
from hedui.core.payment import load_private, load_public, new_payment_key, open_benefit
from hedui.proto.v1 import audit_pb2, common_pb2, verification_pb2
from hedui.server.disclosure import DECISION_ONLY, Disclosure


def _verdict(request_id: str = "R-1") -> verification_pb2.Verdict:
    return verification_pb2.Verdict(
        request_id=request_id,
        decision=common_pb2.ELIGIBLE,
        benefit_fen=123456,
        household_size=3,
        program="dibao",
        region="demo",
        as_of="2026-12-01",
        rules=[
            verification_pb2.RuleOutcome(
                id="income_low",
                outcome=common_pb2.PASSED,
                value=80000,
                threshold=126000,
                comparison="<",
                unit="fen",
                message_zh="家庭月人均收入 800.00 元，低于 1260.00 元",
                message_en="monthly income per person 800.00 yuan, below 1260.00",
                figures=[verification_pb2.Figure(name="income", value=240000)],
                title_zh="收入",
                title_en="income",
            )
        ],
        figures_opening=bytes(range(32)),
        audit=audit_pb2.AuditReceipt(leaf_index=41),
    )


def _keys() -> tuple[X25519PrivateKey, X25519PublicKey]:
    private, public = new_payment_key()
    return load_private(private, "payment.key"), load_public(public, "payment.pub")


def test_a_decision_only_caller_sees_no_figure_and_the_payment_system_opens_the_benefit() -> None:
    private, public = _keys()
    disclosure = Disclosure({"intake-pay": public})
    full = _verdict()
    assert disclosure.shown("intake", full) is full  # others see what the policy discloses
    shown = disclosure.shown("intake-pay", full)
    assert shown.disclosure == DECISION_ONLY and shown.decision == common_pb2.ELIGIBLE
    assert shown.benefit_fen == 0 and not shown.figures_opening
    (rule,) = shown.rules
    assert not rule.HasField("value") and not rule.HasField("threshold") and not rule.figures
    assert rule.message_zh == "收入：符合" and rule.message_en == "income: met"
    text = str(shown)
    for figure in ("123456", "1234.56", "800", "240000", "126000"):
        assert figure not in text.replace(shown.sealed_benefit.hex(), "")
    opened = open_benefit(private, shown.sealed_benefit, "R-1")
    assert opened["benefit_fen"] == 123456 and opened["decision"] == "ELIGIBLE"
    assert opened["audit_leaf_index"] == 41 and opened["figures_opening"] == bytes(range(32)).hex()
    # bound to its request and its key
    with pytest.raises(CryptoError, match="does not open"):
        open_benefit(private, shown.sealed_benefit, "R-2")
    other, _ = _keys()
    with pytest.raises(CryptoError, match="does not open"):
        open_benefit(other, shown.sealed_benefit, "R-1")
    altered = shown.sealed_benefit[:-1] + bytes([shown.sealed_benefit[-1] ^ 1])
    with pytest.raises(CryptoError, match="does not open"):
        open_benefit(private, altered, "R-1")


def test_the_payment_commands_make_a_key_and_open_a_file_of_verdicts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hedui.clients.intake import verdict_to_dict

    assert main(["payment", "keys", "--out", str(tmp_path / "pay")]) == 0
    assert (tmp_path / "pay" / "payment.key").stat().st_mode & 0o077 == 0
    public = load_public((tmp_path / "pay" / "payment.pub").read_bytes(), "payment.pub")
    shown = Disclosure({"intake-pay": public}).shown("intake-pay", _verdict("R-7"))
    verdicts = tmp_path / "verdicts.jsonl"
    verdicts.write_text(json.dumps(verdict_to_dict(shown)) + "\n")
    capsys.readouterr()
    code = main(
        [
            "payment",
            "open",
            "--key",
            str(tmp_path / "pay" / "payment.key"),
            "--verdicts",
            str(verdicts),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and json.loads(out)["benefit_fen"] == 123456
    # a second key in the same folder is refused, never replaced
    assert main(["payment", "keys", "--out", str(tmp_path / "pay")]) == 1
