"""Issue #24 item 1, against a real deployment (`hedui up`, 87 connectors, mutual TLS): the
verification service receives no figure of one source.

The service's insider holds everything the service receives from the key custodian. Every value
of every reply (every integer field, and every number written in a rule's messages) is compared
with every connector's own household figure, for the household the reply is about: none is
equal. The service still gets verdicts that agree with the independent oracle, signed by the
custodian, and cannot change one it relays.
"""

from __future__ import annotations

import csv
import json
import re
import secrets
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message

from hedui.core import judgement
from hedui.core.deployment import BANK, DEPARTMENT_KINDS
from hedui.core.errors import CryptoError
from hedui.proto.v1 import common_pb2, custodian_pb2, verification_pb2
from tests.e2e import oracle
from tests.e2e.conftest import TODAY, Up, campaign_application

MONEY = {f.name for k in (*DEPARTMENT_KINDS.values(), BANK) for f in k.fields if f.unit == "fen"}
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d{2})?")


def connector_figures(data: Path, members: Mapping[str, tuple[str, ...]]) -> dict[str, set[int]]:
    """Household id -> every non-zero money figure one connector holds for the household (the
    sum over its members of one field of one connector's file)."""
    household_of = {pid.upper(): h for h, ids in members.items() for pid in ids}
    sums: dict[tuple[str, str, str], int] = defaultdict(int)
    for path in sorted(data.glob("*.csv")):
        if path.name == "registry.csv":
            continue
        with path.open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                h = household_of.get(row.pop("id_number").upper())
                for name, value in row.items():
                    if h is not None and name in MONEY:
                        sums[(h, path.stem, name)] += int(value)
    out: dict[str, set[int]] = defaultdict(set)
    for (h, _, _), value in sums.items():
        if value:
            out[h].add(value)
    return out


def integers(message: Message) -> Iterator[tuple[str, int]]:
    """Every integer a message holds, nested messages included, with its field's name; and
    every amount written in its text (a message's "1234.56 元" as 123456 fen)."""
    for field, value in message.ListFields():
        scalar = isinstance(value, Message | str | bytes | int | float)
        values = [value] if scalar else list(value)
        for v in values:
            if isinstance(v, Message):
                yield from integers(v)
            elif isinstance(v, bool):
                continue
            elif isinstance(v, int):
                yield field.name, v
            elif isinstance(v, str):
                for n in NUMBER.findall(v):
                    digits = n.replace(",", "")
                    if "." in digits:
                        yield (
                            field.name,
                            int(digits.replace(".", "").replace("-", ""))
                            * (-1 if digits.startswith("-") else 1),
                        )
                    else:
                        yield field.name, int(digits)


def test_the_service_receives_no_figure_of_one_source(up: Up) -> None:
    from hedui.core.tls import PeerIdentity
    from hedui.server import config as service_config
    from hedui.server.app import build_verifier

    number = up.campaign()
    v = build_verifier(service_config.load(up.workdir.service_config, {}))
    received: list[Message] = []  # everything the service process got from the custodian
    stub: Any = v.custodian._stub  # type: ignore[attr-defined]
    real = stub.DecryptBatch

    def recording(request: custodian_pb2.DecryptBatchRequest, timeout: float) -> Any:
        reply = real(request, timeout=timeout)
        received.append(reply)
        return reply

    stub.DecryptBatch = recording
    applicants = [pid for _, pid in up.summary.applicants]
    apps = [
        campaign_application(v, f"figures-{secrets.token_hex(4)}", pid, number)
        for pid in applicants
    ]
    try:
        outcomes = v.run([(a, PeerIdentity("intake", "intake")) for a in apps])
    finally:
        v.registry.close()
    verdicts = {}
    for pid, out in zip(applicants, outcomes, strict=True):
        assert not isinstance(out, Exception), out
        verdicts[pid] = out[0]

    # 1. the replies hold judgements only, and no value of one equals a connector's figure
    replies = [r for r in received if isinstance(r, custodian_pb2.DecryptBatchResponse)]
    assert replies and all(r.judgements for r in replies)
    figures = connector_figures(up.data, up.summary.members)
    head_of = {ids[0].upper(): h for h, ids in up.summary.members.items()}
    key = up.workdir.keys("service").judgement_verify_key()
    judged = [judgement.verify(key, j) for r in replies for j in r.judgements]
    by_leaf = {j.record.request_leaf_hash: j for j in judged}
    checked = 0
    for pid, verdict in verdicts.items():
        mine = by_leaf[judgement.verify(key, verdict.judgement).record.request_leaf_hash]
        st = mine.statement
        assert st is not None and mine.judgement == verdict.judgement
        own = figures[head_of[pid.upper()]]
        policy_thresholds = {
            r.threshold
            for r in st.rules
            if r.HasField("threshold") and r.id not in set(st.household_thresholds)
        }
        for name, value in [*integers(st), *integers(mine.record)]:
            if name in ("household", "household_size") or value in policy_thresholds:
                continue
            assert value not in own, (pid, name, value)
            checked += 1
    assert checked > len(verdicts)  # benefits and disclosed totals were there to compare
    # every field the custodian's reply holds is the judgement (no totals field is set)
    for r in replies:
        assert {f.name for f, _ in r.ListFields()} <= {"judgements", "witnessed_size"}

    # 2. the verdicts agree with the oracle, decided by the custodian
    households, person = oracle.load(up.data)
    for pid, verdict in verdicts.items():
        members = households[head_of[pid.upper()]]
        want = oracle.expected(members, person, TODAY.isoformat())
        assert common_pb2.Decision.Name(verdict.decision) == want["decision"], pid
        assert verdict.benefit_fen == want["benefit_fen"], pid


def test_a_relayed_decision_changed_by_the_service_fails_the_custodians_signature(
    up: Up,
) -> None:
    """The verdict carries the custodian's signed statement: a service that turns INELIGIBLE
    into ELIGIBLE (or changes the benefit) in what it relays is caught by anyone holding
    custodian/judgement.pub; the auditor checks the log's verdict entries against the signed
    records."""
    stub = up.stub()
    pid = up.summary.applicants[3][1]
    verdict = stub.Verify(
        verification_pb2.VerifyRequest(
            request_id=f"signed-{secrets.token_hex(4)}",
            id_number=pid,
            program="dibao",
            consent=up.consent(pid),
        )
    )
    key = up.workdir.keys("service").judgement_verify_key()
    judged = judgement.verify(key, verdict.judgement)
    st, record = judged.statement, judged.record
    assert st is not None
    assert (st.decision, st.benefit_fen, list(st.rules)) == (
        verdict.decision,
        verdict.benefit_fen,
        list(verdict.rules),
    )
    assert record.request_id == verdict.request_id and record.decision == verdict.decision
    other = common_pb2.ELIGIBLE if st.decision != common_pb2.ELIGIBLE else common_pb2.INELIGIBLE
    # the statement changed: it is no longer the one the signed record names
    forged = verification_pb2.JudgementStatement()
    forged.CopyFrom(st)
    forged.decision = other
    with pytest.raises(CryptoError):
        judgement.verify(
            key,
            verification_pb2.Judgement(
                statement=forged.SerializeToString(deterministic=True),
                record=verdict.judgement.record,
                signature=verdict.judgement.signature,
            ),
        )
    # the record changed: its signature fails
    changed = verification_pb2.DecisionRecord()
    changed.CopyFrom(record)
    changed.decision = other
    with pytest.raises(CryptoError):
        judgement.verify_record(
            key, changed.SerializeToString(deterministic=True), verdict.judgement.signature
        )
    # and the auditor checks every verdict entry of the log against the signed records
    r = up.cli("audit", "verify", "--workdir", str(up.workdir.root), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["judgements"]["checked"] >= 1 and doc["judgements"]["tampering"] == []
