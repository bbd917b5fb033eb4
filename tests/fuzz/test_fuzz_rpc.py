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

import datetime as dt
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from hedui.connectors.token_authority import HouseholdTokens
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
from tests.fuzz.strategies import (
    MAX_REQUEST_BYTES,
    Mutation,
    mutated,
    mutations,
    one_element,
    requests,
    requests_with,
)


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

# (test id, method, its requests, the party called, the certificate it is called with, examples);
# a method that serves one household or many is also fuzzed in the shape of one household's
# request (one applicant, one household's tokens, one household to decrypt)
GENERIC: list[tuple[str, str, st.SearchStrategy[Any], str, str, int]] = [
    (
        "VerificationService/Verify",
        "VerificationService/Verify",
        requests(verification_pb2.VerifyRequest),
        "service",
        "intake",
        60,
    ),
    (
        "AuditService/GetCheckpoint",
        "AuditService/GetCheckpoint",
        requests(audit_pb2.GetCheckpointRequest),
        "service",
        "auditor",
        100,
    ),
    (
        "AuditService/GetEntries",
        "AuditService/GetEntries",
        requests(audit_pb2.GetEntriesRequest),
        "service",
        "auditor",
        100,
    ),
    (
        "AuditService/GetInclusionProof",
        "AuditService/GetInclusionProof",
        requests(audit_pb2.GetInclusionProofRequest),
        "service",
        "auditor",
        100,
    ),
    (
        "AuditService/GetConsistencyProof",
        "AuditService/GetConsistencyProof",
        requests(audit_pb2.GetConsistencyProofRequest),
        "service",
        "auditor",
        100,
    ),
    (
        "AuditService/Search",
        "AuditService/Search",
        requests(audit_pb2.SearchRequest),
        "service",
        "auditor",
        100,
    ),
    (
        "RegistryService/GetHouseholds-one-applicant",
        "RegistryService/GetHouseholds",
        requests_with(
            connector_pb2.HouseholdsRequest,
            applicants=one_element(connector_pb2.HouseholdsRequest, "applicants"),
        ),
        "registry",
        "service",
        40,
    ),
    (
        "RegistryService/GetHouseholds",
        "RegistryService/GetHouseholds",
        requests(connector_pb2.HouseholdsRequest),
        "registry",
        "service",
        40,
    ),
    (
        "TokenAuthorityService/BlindEvaluate",
        "TokenAuthorityService/BlindEvaluate",
        requests(connector_pb2.BlindEvaluateRequest),
        "registry",
        "<connector>",
        40,
    ),
    (
        "ConnectorService/Describe",
        "ConnectorService/Describe",
        requests(connector_pb2.DescribeRequest),
        "<connector>",
        "service",
        5,
    ),
    (
        "ConnectorService/QueryBatch-one-household",
        "ConnectorService/QueryBatch",
        requests_with(
            connector_pb2.QueryBatchRequest,
            households=one_element(connector_pb2.QueryBatchRequest, "households"),
        ),
        "<connector>",
        "service",
        40,
    ),
    (
        "ConnectorService/QueryBatch",
        "ConnectorService/QueryBatch",
        requests(connector_pb2.QueryBatchRequest),
        "<connector>",
        "service",
        40,
    ),
    (
        "CustodianService/DecryptBatch-one-household",
        "CustodianService/DecryptBatch",
        requests_with(custodian_pb2.DecryptBatchRequest, households=st.just(1)),
        "custodian",
        "service",
        25,
    ),
    (
        "CustodianService/DecryptBatch",
        "CustodianService/DecryptBatch",
        requests(custodian_pb2.DecryptBatchRequest),
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
    reply = call(
        label,
        lambda: rpc(request, timeout=DEADLINE),
        unavailable_ok=method == "VerificationService/Verify",
    )
    _reply_ok(label, request, reply)
    return reply


def _reply_ok(label: str, request: Message, reply: Any) -> None:
    """What an answer to a fuzzed call must hold, whatever was changed in the request."""
    if isinstance(request, connector_pb2.HouseholdsRequest) and isinstance(
        reply, connector_pb2.HouseholdsResponse
    ):
        # one household per applicant, in request order; a refused monitoring request is that
        # household's answer, and it holds nothing
        if len(reply.households) != len(request.applicants):
            raise Finding(
                f"{label}: {len(request.applicants)} applicants, {len(reply.households)} households"
            )
        for i, h in enumerate(reply.households):
            if h.monitoring_refused and (h.members or h.tokens or h.monitoring_handle):
                raise Finding(f"{label}: household {i} refused monitoring but holds {h}")
            leaked = [word for word in LEAKS if word in h.monitoring_refused + h.problem]
            if leaked:
                raise Finding(f"{label}: household {i} with internal text {leaked}: {h}")
    if isinstance(reply, custodian_pb2.DecryptBatchResponse):
        # no request sent here carries evidence that its query is in the log (a drawn one has
        # no valid grant either): the custodian must decrypt nothing
        raise Finding(f"{label}: the custodian decrypted: {_summary(reply)}")


def _nothing_for_garbage(label: str, request: Message, reply: Any) -> None:
    """A drawn request carries no valid grant and no valid monitoring handle (neither can be
    drawn): no connector answers it, and no registry names a household by its handle."""
    if isinstance(reply, connector_pb2.QueryBatchResponse):
        raise Finding(f"{label}: a connector answered a drawn query: {_summary(reply)}")
    if isinstance(request, connector_pb2.HouseholdsRequest) and isinstance(
        reply, connector_pb2.HouseholdsResponse
    ):
        for a, h in zip(request.applicants, reply.households, strict=True):
            if a.monitoring_handle and not h.monitoring_refused:
                raise Finding(f"{label}: a drawn monitoring handle was not refused: {h}")


_RESPONSES: dict[str, type[Message]] = {
    "VerificationService/Verify": verification_pb2.Verdict,
    "AuditService/GetCheckpoint": audit_pb2.CheckpointResponse,
    "AuditService/GetEntries": audit_pb2.GetEntriesResponse,
    "AuditService/GetInclusionProof": audit_pb2.ProofResponse,
    "AuditService/GetConsistencyProof": audit_pb2.ProofResponse,
    "AuditService/Search": audit_pb2.SearchResponse,
    "RegistryService/GetHouseholds": connector_pb2.HouseholdsResponse,
    "TokenAuthorityService/BlindEvaluate": connector_pb2.BlindEvaluateResponse,
    "ConnectorService/Describe": connector_pb2.DescribeResponse,
    "ConnectorService/QueryBatch": connector_pb2.QueryBatchResponse,
    "CustodianService/DecryptBatch": custodian_pb2.DecryptBatchResponse,
}


def _summary(request: Message, limit: int = 300) -> str:
    """A short text of a request for a failure message (long values cut)."""
    text = " ".join(str(request).split())
    return text if len(text) <= limit else text[:limit] + f"… ({request.ByteSize()} bytes)"


@pytest.mark.parametrize(
    ("method", "drawn", "party", "cert", "examples"),
    [row[1:] for row in GENERIC],
    ids=[name for name, *_ in GENERIC],
)
def test_generated_requests(
    deployment: Deployment,
    method: str,
    drawn: st.SearchStrategy[Message],
    party: str,
    cert: str,
    examples: int,
) -> None:
    d = deployment
    others = [c for c in d.connector_ids if c not in TARGETS]

    @fuzz(examples=examples)
    @given(request=drawn, target=st.sampled_from(TARGETS), caller=st.data())
    def run(request: Message, target: str, caller: st.DataObject) -> None:
        to = target if party == "<connector>" else party
        # every token evaluation counts against the caller's allowance: spread them out
        as_ = caller.draw(st.sampled_from(others)) if cert == "<connector>" else cert
        reply = _invoke(d, method, to, as_, request)
        _nothing_for_garbage(f"{method} on {to} <- {_summary(request)}", request, reply)

    run()
    _still_up(d, "service", "registry", "custodian", *TARGETS)


# -- the verification service: valid applications changed in one field ----------------------


def _application(d: Deployment, i: int = 0) -> verification_pb2.VerifyRequest:
    rid = d.fresh_id("fuzz-verify")
    return verification_pb2.VerifyRequest(
        request_id=rid,
        id_number=d.applicants[i % len(d.applicants)],
        program="dibao",
        consent=verification_pb2.Consent(campaign=d.up.campaign()),
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


def _standing(d: Deployment) -> connector_pb2.Signatures:
    """The service's way past the signer check: a monitoring campaign the bureau registered."""
    return connector_pb2.Signatures(campaign=d.up.campaign("monitoring"), program="dibao")


MONITOR_UNTIL = (DEPLOYMENT.today() + dt.timedelta(days=30)).isoformat()
_handles: dict[str, bytes] = {}


def _monitoring_handle(d: Deployment) -> bytes:
    """A real monitoring handle of the third applicant (asked for once per deployment)."""
    key = str(d.up.workdir.root)
    if key not in _handles:
        reply = d.registry().GetHouseholds(
            connector_pb2.HouseholdsRequest(
                query_id=d.fresh_id("fuzz-handle"),
                applicants=[
                    connector_pb2.Applicant(
                        id_number=d.applicants[2],
                        signatures=_standing(d),
                        monitor_until=MONITOR_UNTIL,
                    )
                ],
            ),
            timeout=DEADLINE,
        )
        handle = reply.households[0].monitoring_handle
        assert handle, f"no monitoring handle issued: {reply.households[0]}"
        _handles[key] = handle
    return _handles[key]


def _applicants(d: Deployment) -> list[connector_pb2.Applicant]:
    """One applicant of each shape: by ID number, by ID number asking for a monitoring handle,
    by a monitoring handle."""
    return [
        connector_pb2.Applicant(id_number=d.applicants[0], signatures=_standing(d)),
        connector_pb2.Applicant(
            id_number=d.applicants[1], signatures=_standing(d), monitor_until=MONITOR_UNTIL
        ),
        connector_pb2.Applicant(monitoring_handle=_monitoring_handle(d), signatures=_standing(d)),
    ]


@fuzz(examples=40)
@given(batch=st.booleans(), which=st.integers(0, 2), data=st.data())
def test_registry_one_field_changed(
    deployment: Deployment, batch: bool, which: int, data: st.DataObject
) -> None:
    """Many applicants, or one (of each shape), asked about in a valid request changed in one
    field."""
    d = deployment
    applicants = _applicants(d)
    base = connector_pb2.HouseholdsRequest(
        query_id=d.fresh_id("fuzz-households" if batch else "fuzz-household"),
        applicants=applicants if batch else [applicants[which]],
    )
    mutation = data.draw(mutations(type(base)))
    _invoke(
        d, "RegistryService/GetHouseholds", "registry", "service", mutated(base, mutation), mutation
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


def _households(
    d: Deployment, qid: str, n: int, first: int = 0
) -> connector_pb2.HouseholdsResponse:
    """The households of ``n`` applicants from the ``first``, under one grant for ``qid``."""
    ids = [d.applicants[(first + k) % len(d.applicants)] for k in range(n)]
    reply = d.registry().GetHouseholds(
        connector_pb2.HouseholdsRequest(
            query_id=qid,
            applicants=[connector_pb2.Applicant(id_number=i, signatures=_standing(d)) for i in ids],
        ),
        timeout=DEADLINE,
    )
    assert isinstance(reply, connector_pb2.HouseholdsResponse)
    assert len(reply.households) == n and all(h.tokens for h in reply.households), reply
    return reply


def _tokens(h: connector_pb2.Household, cid: str) -> connector_pb2.TokenSet:
    """The tokens (and with decoys their selectors) the registry granted ``cid`` for ``h``."""
    return HouseholdTokens.from_pb(h).token_set(cid)


def _query_batch(
    d: Deployment, cid: str, n: int, first: int = 0
) -> connector_pb2.QueryBatchRequest:
    qid = d.fresh_id("fuzz-batch")
    reply = _households(d, qid, n, first)
    return connector_pb2.QueryBatchRequest(
        query_id=qid,
        households=[_tokens(h, cid) for h in reply.households],
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
    mutation=mutations(connector_pb2.QueryBatchRequest),
    which=st.integers(0, 9),
)
def test_query_one_household_one_field_changed(
    deployment: Deployment, target: str, mutation: Mutation, which: int
) -> None:
    """One household's query (one verification), valid, changed in one field."""
    d = deployment
    request = mutated(_query_batch(d, target, 1, which), mutation)
    _invoke(d, "ConnectorService/QueryBatch", target, "service", request, mutation)


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


def _decrypt_batch(d: Deployment, n: int) -> custodian_pb2.DecryptBatchRequest:
    qid = d.fresh_id("fuzz-decrypt-batch")
    reply = _households(d, qid, n)
    grant = Grant.from_pb(reply.grant)
    answers = []
    for cid in ANSWERING:
        r = d.connector(cid).QueryBatch(
            connector_pb2.QueryBatchRequest(
                query_id=qid,
                households=[_tokens(h, cid) for h in reply.households],
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
        query_id=qid,
        answers=answers,
        households=n,
        grant=reply.grant,
        evidence=evidence,
        compositions=[custodian_pb2.Composition(members=h.members) for h in reply.households],
    )


@fuzz(examples=40)
@given(mutation=mutations(custodian_pb2.DecryptBatchRequest))
def test_decrypt_one_household_one_field_changed(
    deployment: Deployment, mutation: Mutation
) -> None:
    """One household's answers (one verification), valid, changed in one field."""
    d = deployment
    request = mutated(_decrypt_batch(d, 1), mutation)
    _invoke(d, "CustodianService/DecryptBatch", "custodian", "service", request, mutation)


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
