"""Fuzzing every request message of every gRPC service against a real deployment (issue #11).

The servers run as `hedui up` runs them (mutual TLS, real sockets, every connector); each call
is made as the party that may make it (intake, auditor, service or connector certificate).
Two kinds of input per method: requests drawn field by field from the message's descriptor
(:func:`tests.fuzz.strategies.requests`), and a real, valid request of the method changed in
one field (:func:`tests.fuzz.strategies.mutations`). Every call must end within the deadline
with a deliberate status: never UNKNOWN (an uncaught exception), never a message holding a
traceback, an exception's text or SQL driver text, never UNAVAILABLE from a server that should
be up. Afterwards every server still answers, none had to be restarted, none grew by more than
512 MiB, and a normal verification still gives a verdict.

Inputs that could make a server allocate in proportion to a number are capped at 2^24 (see
``CAPPED`` in strategies.py); everything else draws its type's full range.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from hedui.clients.consent import StandingAuthorisation
from hedui.core import oprf, signing
from hedui.core.clock import DEPLOYMENT
from hedui.core.grants import Grant
from hedui.proto.v1 import (
    audit_pb2,
    common_pb2,
    connector_pb2,
    custodian_pb2,
    verification_pb2,
)
from tests.fuzz.conftest import (
    DEADLINE,
    LEAKS,
    MEMORY_GROWTH_LIMIT,
    Deployment,
    Finding,
    call,
    check_status,
)
from tests.fuzz.strategies import MAX_REQUEST_BYTES, Mutation, mutated, mutations, requests


def fuzz(examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Reproducible settings: a fixed seed, no example database, no time limit per example."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        print_blob=False,
    )


# connectors a fuzzed call may be aimed at: a department of each shape and a few banks
TARGETS = ["hrss", "tax", "realestate", "vehicles", "bank-01", "bank-37", "bank-73"]
# valid queries are changed at the connectors that hold figures for most generated households (a
# slot moved out of range shows only when its figure is not 0)
RICH = ["hrss", "realestate", "bank-01"]


def _still_up(d: Deployment, *parties: str) -> None:
    for party in parties:
        d.healthy(party)
    assert d.deaths() == [], "a server process died and was restarted"


# -- requests drawn from the descriptors -----------------------------------------------------

# (method, request type, the party called, the certificate it is called with, examples)
GENERIC: list[tuple[str, type[Message], str, str, int]] = [
    ("VerificationService/Verify", verification_pb2.VerifyRequest, "service", "intake", 60),
    ("AuditService/GetCheckpoint", audit_pb2.GetCheckpointRequest, "service", "auditor", 100),
    ("AuditService/GetEntries", audit_pb2.GetEntriesRequest, "service", "auditor", 100),
    (
        "AuditService/GetInclusionProof",
        audit_pb2.GetInclusionProofRequest,
        "service",
        "auditor",
        100,
    ),
    (
        "AuditService/GetConsistencyProof",
        audit_pb2.GetConsistencyProofRequest,
        "service",
        "auditor",
        100,
    ),
    ("AuditService/Search", audit_pb2.SearchRequest, "service", "auditor", 100),
    ("RegistryService/GetHousehold", connector_pb2.HouseholdRequest, "registry", "service", 40),
    ("RegistryService/GetHouseholds", connector_pb2.HouseholdsRequest, "registry", "service", 40),
    (
        "TokenAuthorityService/BlindEvaluate",
        connector_pb2.BlindEvaluateRequest,
        "registry",
        "<connector>",
        40,
    ),
    ("ConnectorService/Describe", connector_pb2.DescribeRequest, "<connector>", "service", 5),
    ("ConnectorService/Query", connector_pb2.QueryRequest, "<connector>", "service", 40),
    ("ConnectorService/QueryBatch", connector_pb2.QueryBatchRequest, "<connector>", "service", 40),
    ("CustodianService/Decrypt", custodian_pb2.DecryptRequest, "custodian", "service", 25),
    (
        "CustodianService/DecryptBatch",
        custodian_pb2.DecryptBatchRequest,
        "custodian",
        "service",
        25,
    ),
]


def _invoke(
    d: Deployment,
    method: str,
    party: str,
    cert: str,
    request: Message,
    mutation: Mutation | None = None,
) -> Any | grpc.StatusCode:
    """Call ``method`` on ``party`` as ``cert`` through a generic unary channel method."""
    assume(request.ByteSize() < MAX_REQUEST_BYTES)  # the servers' limit is 4 MiB
    service, name = method.split("/")
    req_cls = type(request)
    path = f"/hedui.v1.{service}/{name}"
    out_cls = _RESPONSES[method]
    rpc = d.channel(party, cert).unary_unary(
        path,
        request_serializer=req_cls.SerializeToString,
        response_deserializer=out_cls.FromString,
    )
    if mutation is None:
        label = f"{method} on {party} as {cert} <- {_summary(request)}"
    else:
        path = ".".join(n if i is None else f"{n}[{i}]" for n, i in mutation[0])
        value = repr(mutation[1])
        value = value if len(value) <= 120 else value[:120] + f"… ({len(value)} chars)"
        label = f"{method} on {party} as {cert} <- a valid request with {path} = {value}"
    # the verification service answers UNAVAILABLE by contract when a backend refuses
    return call(
        label,
        lambda: rpc(request, timeout=DEADLINE),
        unavailable_ok=method == "VerificationService/Verify",
    )


_RESPONSES: dict[str, type[Message]] = {
    "VerificationService/Verify": verification_pb2.Verdict,
    "AuditService/GetCheckpoint": audit_pb2.CheckpointResponse,
    "AuditService/GetEntries": audit_pb2.GetEntriesResponse,
    "AuditService/GetInclusionProof": audit_pb2.ProofResponse,
    "AuditService/GetConsistencyProof": audit_pb2.ProofResponse,
    "AuditService/Search": audit_pb2.SearchResponse,
    "RegistryService/GetHousehold": connector_pb2.HouseholdGrant,
    "RegistryService/GetHouseholds": connector_pb2.HouseholdsResponse,
    "TokenAuthorityService/BlindEvaluate": connector_pb2.BlindEvaluateResponse,
    "ConnectorService/Describe": connector_pb2.DescribeResponse,
    "ConnectorService/Query": connector_pb2.QueryResponse,
    "ConnectorService/QueryBatch": connector_pb2.QueryBatchResponse,
    "CustodianService/Decrypt": custodian_pb2.DecryptResponse,
    "CustodianService/DecryptBatch": custodian_pb2.DecryptBatchResponse,
}


def _summary(request: Message, limit: int = 300) -> str:
    """A short text of a request for a failure message (long values cut)."""
    text = " ".join(str(request).split())
    return text if len(text) <= limit else text[:limit] + f"… ({request.ByteSize()} bytes)"


@pytest.mark.parametrize(
    ("method", "request_type", "party", "cert", "examples"),
    GENERIC,
    ids=[m for m, *_ in GENERIC],
)
def test_generated_requests(
    deployment: Deployment,
    method: str,
    request_type: type[Message],
    party: str,
    cert: str,
    examples: int,
) -> None:
    d = deployment
    others = [c for c in d.connector_ids if c not in TARGETS]

    @fuzz(examples=examples)
    @given(request=requests(request_type), target=st.sampled_from(TARGETS), caller=st.data())
    def run(request: Message, target: str, caller: st.DataObject) -> None:
        to = target if party == "<connector>" else party
        # every token evaluation counts against the caller's allowance: spread them out
        as_ = caller.draw(st.sampled_from(others)) if cert == "<connector>" else cert
        _invoke(d, method, to, as_, request)

    run()
    _still_up(d, "service", "registry", "custodian", *TARGETS)


# -- the verification service: valid applications changed in one field ----------------------


def _application(d: Deployment, i: int = 0) -> verification_pb2.VerifyRequest:
    rid = d.fresh_id("fuzz-verify")
    return verification_pb2.VerifyRequest(
        request_id=rid,
        id_number=d.applicants[i % len(d.applicants)],
        program="dibao",
        consent=StandingAuthorisation(f"fuzz-{rid}", DEPLOYMENT.today(), bytes(32)).consent(),
    )


@fuzz(examples=20)
@given(mutation=mutations(verification_pb2.VerifyRequest), which=st.integers(0, 9))
def test_verify_one_field_changed(deployment: Deployment, mutation: Mutation, which: int) -> None:
    d = deployment
    request = mutated(_application(d, which), mutation)
    _invoke(d, "VerificationService/Verify", "service", "intake", request, mutation)


def _batch_result_ok(label: str, r: verification_pb2.BatchResult) -> None:
    if r.WhichOneof("result") == "error":
        code, message = r.error.code, r.error.message
        if code in ("UNKNOWN", "DEADLINE_EXCEEDED") or not code:
            raise Finding(f"{label}: batch error code {code!r}: {message[:400]!r}")
        leaked = [word for word in LEAKS if word in message]
        if leaked:
            raise Finding(f"{label}: batch error {code} with internal text {leaked}: {message!r}")


@fuzz(examples=12)
@given(
    stream=st.lists(
        st.one_of(
            requests(verification_pb2.VerifyRequest).map(lambda r: (r, None)),
            st.tuples(st.just(None), mutations(verification_pb2.VerifyRequest)),
        ),
        max_size=4,
    )
)
def test_verify_batch_streams(
    deployment: Deployment,
    stream: list[tuple[verification_pb2.VerifyRequest | None, Mutation | None]],
) -> None:
    """A stream of drawn and of one-field-changed applications: one result per application."""
    d = deployment
    sent = [
        r if r is not None else mutated(_application(d, i), m)  # type: ignore[arg-type]
        for i, (r, m) in enumerate(stream)
    ]
    label = f"VerificationService/VerifyBatch <- {[_summary(r, 120) for r in sent]}"
    stub = d.verification()
    try:
        results = list(stub.VerifyBatch(iter(sent), timeout=DEADLINE * 3))
    except grpc.RpcError as e:
        check_status(label, e)
        return
    for r in results:
        _batch_result_ok(label, r)
    if len(results) != len(sent):
        raise Finding(f"{label}: {len(sent)} applications sent, {len(results)} results")


# -- the audit service: valid requests changed in one field ----------------------------------


def _log_size(d: Deployment) -> int:
    reply = d.audit().GetCheckpoint(audit_pb2.GetCheckpointRequest(), timeout=DEADLINE)
    return int(reply.checkpoint.split(b"\n")[1])


@fuzz(examples=60)
@given(
    method=st.sampled_from(
        ["GetCheckpoint", "GetEntries", "GetInclusionProof", "GetConsistencyProof", "Search"]
    ),
    data=st.data(),
)
def test_audit_one_field_changed(deployment: Deployment, method: str, data: st.DataObject) -> None:
    d = deployment
    size = _log_size(d)
    base: Message = {
        "GetCheckpoint": audit_pb2.GetCheckpointRequest(tree_size=size),
        "GetEntries": audit_pb2.GetEntriesRequest(start=0, end=size),
        "GetInclusionProof": audit_pb2.GetInclusionProofRequest(index=0, tree_size=size),
        "GetConsistencyProof": audit_pb2.GetConsistencyProofRequest(first=1, second=size),
        "Search": audit_pb2.SearchRequest(applicant_id_number=d.applicants[0], limit=10),
    }[method]
    mutation = data.draw(mutations(type(base)))
    _invoke(d, f"AuditService/{method}", "service", "auditor", mutated(base, mutation), mutation)


# -- the registry and the token authority -----------------------------------------------------


@fuzz(examples=40)
@given(batch=st.booleans(), data=st.data())
def test_registry_one_field_changed(
    deployment: Deployment, batch: bool, data: st.DataObject
) -> None:
    d = deployment
    base: Message
    if batch:
        base = connector_pb2.HouseholdsRequest(
            id_numbers=d.applicants[:3],
            query_id=d.fresh_id("fuzz-households"),
            signatures=[STANDING] * 3,
        )
    else:
        base = connector_pb2.HouseholdRequest(
            id_number=d.applicants[1], query_id=d.fresh_id("fuzz-household"), signatures=STANDING
        )
    mutation = data.draw(mutations(type(base)))
    method = "GetHouseholds" if batch else "GetHousehold"
    _invoke(
        d, f"RegistryService/{method}", "registry", "service", mutated(base, mutation), mutation
    )


@fuzz(examples=30)
@given(mutation=mutations(connector_pb2.BlindEvaluateRequest), data=st.data())
def test_blind_evaluate_one_field_changed(
    deployment: Deployment, mutation: Mutation, data: st.DataObject
) -> None:
    d = deployment
    caller = data.draw(st.sampled_from([c for c in d.connector_ids if c not in TARGETS]))
    base = connector_pb2.BlindEvaluateRequest(
        epoch=d.epoch, blinded_elements=[oprf.blind(b"330106198005171235")[1]]
    )
    request = mutated(base, mutation)
    _invoke(d, "TokenAuthorityService/BlindEvaluate", "registry", caller, request, mutation)


# -- connectors: real queries under real grants, changed in one field --------------------------

STANDING = connector_pb2.Signatures(standing=True)  # the service's way past the signer check


def _household(d: Deployment, qid: str, i: int = 0) -> connector_pb2.HouseholdGrant:
    reply = d.registry().GetHousehold(
        connector_pb2.HouseholdRequest(
            id_number=d.applicants[i % len(d.applicants)], query_id=qid, signatures=STANDING
        ),
        timeout=DEADLINE,
    )
    assert isinstance(reply, connector_pb2.HouseholdGrant)
    return reply


def _households(d: Deployment, qid: str, n: int) -> connector_pb2.HouseholdsResponse:
    reply = d.registry().GetHouseholds(
        connector_pb2.HouseholdsRequest(
            id_numbers=d.applicants[:n], query_id=qid, signatures=[STANDING] * n
        ),
        timeout=DEADLINE,
    )
    assert isinstance(reply, connector_pb2.HouseholdsResponse)
    return reply


def _tokens(h: connector_pb2.Household, cid: str) -> list[bytes]:
    return next(list(t.tokens) for t in h.tokens if t.connector_id == cid)


def _query(d: Deployment, cid: str, i: int = 0) -> connector_pb2.QueryRequest:
    qid = d.fresh_id("fuzz-query")
    reply = _household(d, qid, i)
    return connector_pb2.QueryRequest(
        query_id=qid,
        tokens=_tokens(reply.household, cid),
        key_fingerprint=d.fingerprint,
        layout=d.kind_layout(cid),
        grant=reply.grant,
    )


def _query_batch(d: Deployment, cid: str, n: int) -> connector_pb2.QueryBatchRequest:
    qid = d.fresh_id("fuzz-batch")
    reply = _households(d, qid, n)
    return connector_pb2.QueryBatchRequest(
        query_id=qid,
        households=[connector_pb2.TokenSet(tokens=_tokens(h, cid)) for h in reply.households],
        key_fingerprint=d.fingerprint,
        layout=d.batch_layout(_kind(cid)),
        grant=reply.grant,
    )


def _kind(cid: str) -> str:
    from hedui.core.deployment import kind_of

    return kind_of(cid).kind


@fuzz(examples=300)
@given(
    target=st.sampled_from(RICH),
    mutation=mutations(connector_pb2.QueryRequest),
    which=st.integers(0, 9),
)
def test_query_one_field_changed(
    deployment: Deployment, target: str, mutation: Mutation, which: int
) -> None:
    d = deployment
    request = mutated(_query(d, target, which), mutation)
    _invoke(d, "ConnectorService/Query", target, "service", request, mutation)


@fuzz(examples=300)
@given(
    target=st.sampled_from(RICH),
    mutation=mutations(connector_pb2.QueryBatchRequest),
    households=st.integers(1, 4),
)
def test_query_batch_one_field_changed(
    deployment: Deployment, target: str, mutation: Mutation, households: int
) -> None:
    d = deployment
    request = mutated(_query_batch(d, target, households), mutation)
    _invoke(d, "ConnectorService/QueryBatch", target, "service", request, mutation)


# -- the key custodian: real signed answers under a real grant, changed in one field ----------

ANSWERING = ["hrss", "bank-01", "bank-02"]


def _evidence(d: Deployment, qid: str) -> custodian_pb2.LogEvidence:
    """A real checkpoint, and a request entry of the query that the log does not hold."""
    checkpoint = d.audit().GetCheckpoint(audit_pb2.GetCheckpointRequest(), timeout=DEADLINE)
    entry = audit_pb2.AuditEntry(request=audit_pb2.RequestEntry(query_id=qid, request_id=qid))
    return custodian_pb2.LogEvidence(
        checkpoint=checkpoint.checkpoint,
        requests=[custodian_pb2.LoggedRequest(leaf_index=0, entry=entry.SerializeToString())],
    )


def _decrypt(d: Deployment) -> custodian_pb2.DecryptRequest:
    qid = d.fresh_id("fuzz-decrypt")
    reply = _household(d, qid)
    grant = Grant.from_pb(reply.grant)
    public = d.up.workdir.keys("custodian").paillier_public()
    answers = []
    for cid in ANSWERING:
        r = d.connector(cid).Query(
            connector_pb2.QueryRequest(
                query_id=qid,
                tokens=_tokens(reply.household, cid),
                key_fingerprint=d.fingerprint,
                layout=d.kind_layout(cid),
                grant=reply.grant,
            ),
            timeout=DEADLINE,
        )
        answers.append(
            custodian_pb2.CustodyAnswer(
                connector_id=cid,
                key_fingerprint=r.key_fingerprint,
                queried=grant.digest_for(cid) or b"",
                signature=r.signature,
                packed=[r.packed],
            )
        )
    total = public.add(public.from_bytes(a.packed[0], d.fingerprint) for a in answers)
    return custodian_pb2.DecryptRequest(
        query_id=qid,
        answers=answers,
        aggregate=public.to_bytes(total),
        grant=reply.grant,
        evidence=_evidence(d, qid),
    )


def _decrypt_batch(d: Deployment, n: int) -> custodian_pb2.DecryptBatchRequest:
    qid = d.fresh_id("fuzz-decrypt-batch")
    reply = _households(d, qid, n)
    grant = Grant.from_pb(reply.grant)
    answers = []
    for cid in ANSWERING:
        r = d.connector(cid).QueryBatch(
            connector_pb2.QueryBatchRequest(
                query_id=qid,
                households=[
                    connector_pb2.TokenSet(tokens=_tokens(h, cid)) for h in reply.households
                ],
                key_fingerprint=d.fingerprint,
                layout=d.batch_layout(_kind(cid)),
                grant=reply.grant,
            ),
            timeout=DEADLINE,
        )
        answers.append(
            custodian_pb2.CustodyAnswer(
                connector_id=cid,
                key_fingerprint=r.key_fingerprint,
                queried=grant.digest_for(cid) or b"",
                signature=r.signature,
                packed=list(r.packed),
                kind=_kind(cid),
                ciphertexts=signing.ciphertexts_digest(list(r.packed)),
            )
        )
    evidence = _evidence(d, qid)
    return custodian_pb2.DecryptBatchRequest(
        query_id=qid, answers=answers, households=n, grant=reply.grant, evidence=evidence
    )


@fuzz(examples=40)
@given(mutation=mutations(custodian_pb2.DecryptRequest))
def test_decrypt_one_field_changed(deployment: Deployment, mutation: Mutation) -> None:
    d = deployment
    request = mutated(_decrypt(d), mutation)
    _invoke(d, "CustodianService/Decrypt", "custodian", "service", request, mutation)


@fuzz(examples=30)
@given(mutation=mutations(custodian_pb2.DecryptBatchRequest), households=st.integers(1, 3))
def test_decrypt_batch_one_field_changed(
    deployment: Deployment, mutation: Mutation, households: int
) -> None:
    d = deployment
    request = mutated(_decrypt_batch(d, households), mutation)
    _invoke(d, "CustodianService/DecryptBatch", "custodian", "service", request, mutation)


# -- afterwards: everything still up and still right -----------------------------------------


def test_servers_still_answer_after_fuzzing(deployment: Deployment) -> None:
    d = deployment
    _still_up(d, "service", "registry", "custodian", *d.connector_ids)
    grown = {pid: n for pid, n in d.memory_growth().items() if n > MEMORY_GROWTH_LIMIT}
    assert grown == {}, f"peak RSS grew by more than 512 MiB: {grown}"
    verdict = d.verification().Verify(_application(d, 4), timeout=DEADLINE * 3)
    assert verdict.decision != common_pb2.DECISION_UNSPECIFIED
    assert verdict.connectors_answered == len(d.connector_ids)
    found = d.audit().Search(
        audit_pb2.SearchRequest(applicant_id_number=d.applicants[4], limit=10), timeout=DEADLINE
    )
    assert found.entries
