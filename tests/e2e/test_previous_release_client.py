"""An intake system built from the previous release's `.proto` (before the one pipeline, issue
#22) gets the same verdicts from `Verify` and `VerifyBatch` as a client of this release.

The old contract (kept in tests/previous_release/) is compiled into a folder of its own and run in
a process of its own, over the deployment's real mutual TLS."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.e2e.conftest import Up, consent_for

# the contract of the last commit with the single and batch paths apart (01ad643)
KEPT = Path(__file__).resolve().parents[1] / "previous_release"

CLIENT = r"""
import json, sys, grpc
from hedui.proto.v1 import verification_pb2 as v, verification_pb2_grpc as g
profile, requests = json.loads(sys.argv[1]), json.loads(sys.argv[2])
creds = grpc.ssl_channel_credentials(
    open(profile["ca"], "rb").read(), open(profile["key"], "rb").read(),
    open(profile["cert"], "rb").read())
channel = grpc.secure_channel(profile["address"], creds,
    options=[("grpc.ssl_target_name_override", profile.get("server_name", "service"))])
stub = g.VerificationServiceStub(channel)
def req(r):
    return v.VerifyRequest(request_id=r["request_id"], id_number=r["id_number"], program="dibao",
                           consent=v.Consent.FromString(bytes.fromhex(r["consent"])))
out = {"verify": [], "batch": []}
for r in requests["verify"]:
    x = stub.Verify(req(r), timeout=60)
    out["verify"].append([x.request_id, v.Verdict.DESCRIPTOR.fields_by_name["decision"]
                          .enum_type.values_by_number[x.decision].name, x.benefit_fen])
for x in stub.VerifyBatch(iter([req(r) for r in requests["batch"]]), timeout=120):
    kind = x.WhichOneof("result")
    out["batch"].append([x.request_id, kind, x.verdict.benefit_fen if kind == "verdict"
                         else x.error.code])
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def previous_stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("previous")
    src = root / "src"
    for name in ("audit", "common", "connector", "verification"):
        (src / "hedui" / "proto" / "v1").mkdir(parents=True, exist_ok=True)
        (src / "hedui" / "proto" / "v1" / f"{name}.proto").write_text(
            (KEPT / f"{name}.proto.txt").read_text()
        )
    out = root / "out"
    out.mkdir()
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(src), f"--python_out={out}",
         f"--grpc_python_out={out}",
         *(f"hedui/proto/v1/{n}.proto" for n in ("audit", "common", "connector", "verification"))],
        check=True,
    )  # fmt: skip
    for pkg in (out / "hedui", out / "hedui" / "proto", out / "hedui" / "proto" / "v1"):
        (pkg / "__init__.py").touch()
    return out


def test_a_client_of_the_previous_release_gets_the_same_verdicts(
    up: Up, previous_stubs: Path
) -> None:
    picks = up.summary.applicants[34:38]
    requests = {
        "verify": [
            {"request_id": f"prev-{i}", "id_number": head,
             "consent": consent_for(up.summary, head).SerializeToString().hex()}
            for i, (_, head) in enumerate(picks[:2])
        ],
        "batch": [
            {"request_id": f"prev-batch-{i}", "id_number": head,
             "consent": consent_for(up.summary, head).SerializeToString().hex()}
            for i, (_, head) in enumerate(picks[2:])
        ] + [{"request_id": "prev-batch-missing", "id_number": "11010519491231002X",
              "consent": consent_for(up.summary, picks[0][1]).SerializeToString().hex()}],
    }  # fmt: skip
    profile = tomllib.loads(up.workdir.intake_profile.read_text())
    r = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(previous_stubs)!r})\n"
         + CLIENT, json.dumps(profile), json.dumps(requests)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    old = json.loads(r.stdout)
    # this release's client, the same households (new request ids: a repeat would be stored)
    from hedui.proto.v1 import common_pb2, verification_pb2

    def now(request_id: str, head: str) -> verification_pb2.Verdict:
        return up.stub().Verify(
            verification_pb2.VerifyRequest(
                request_id=request_id, id_number=head, program="dibao",
                consent=consent_for(up.summary, head),
            ),
            timeout=60,
        )  # fmt: skip

    for (rid, decision, benefit), (_, head) in zip(old["verify"], picks[:2], strict=True):
        v = now(f"{rid}-now", head)
        assert (common_pb2.Decision.Name(v.decision), v.benefit_fen) == (decision, benefit)
    batch = {rid: (kind, value) for rid, kind, value in old["batch"]}
    assert batch["prev-batch-missing"] == ("error", "NOT_FOUND")
    for i, (_, head) in enumerate(picks[2:]):
        kind, benefit = batch[f"prev-batch-{i}"]
        assert (kind, benefit) == ("verdict", now(f"prev-batch-{i}-now", head).benefit_fen)
