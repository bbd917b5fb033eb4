"""The verification service's handle on the key custodian process (which alone holds the
Paillier private key): it sends the signed answers about a query's households, the members the
registry answered and the evidence that the query is logged, and gets back the custodian's
signed judgement of each household: its decision, benefit and rule outcomes, never a total.

How a failed call is worded: an UNAVAILABLE or DEADLINE_EXCEEDED that the custodian did not send
itself (no connection, no answer in time) is "the key custodian is not reachable (CODE)"; any
status the custodian sent is its refusal, in its words: its reason for FAILED_PRECONDITION, "the
key custodian refused (CODE): its message" for any other code (UNAVAILABLE: "cannot write its
journal: …; nothing decrypted").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hedui.core import judgement, rpc
from hedui.core.answers import BatchAnswer, marks_pb
from hedui.core.custody import CUSTODIAN_ID, EvidenceSource, evidence_pb
from hedui.core.errors import CryptoError
from hedui.core.grants import Grant
from hedui.core.judgement import Judged
from hedui.core.paillier import PublicKey
from hedui.core.rpc import open_channel
from hedui.core.tls import TlsMaterial
from hedui.proto.v1 import connector_pb2, custodian_pb2, custodian_pb2_grpc
from hedui.server.errors import CustodianRefused


class Custodian(Protocol):
    """What the verification service needs of the custodian, in process or remote."""

    @property
    def public_key(self) -> PublicKey: ...
    def judge(
        self,
        query_id: str,
        answers: Sequence[BatchAnswer],
        households: int,
        grant: Grant,
        evidence: EvidenceSource,
        compositions: Sequence[Sequence[connector_pb2.Member]],
    ) -> list[Judged]: ...


# how long a request is proven again while other requests move the witness on, at least
WITNESS_RETRY_SECONDS = 30.0


class _WitnessMoved(CustodianRefused):
    """The custodian has witnessed the log at another size: prove again from there."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the custodian has witnessed the log at size {size}")
        self.size = size


def _custody(a: BatchAnswer) -> custodian_pb2.CustodyAnswer:
    """An answer as the custodian receives it: everything it needs to check the signature,
    the connector's marks included (signed: leaving one out fails the signature)."""
    return custodian_pb2.CustodyAnswer(
        connector_id=a.connector_id,
        key_fingerprint=a.key_fingerprint,
        queried=a.queried,
        signature=a.signature,
        packed=a.packed,
        kind=a.kind,
        ciphertexts=a.ciphertexts,
        marked=marks_pb(a.marked),
    )


class RemoteCustodian:
    """The verification service's handle on the custodian process (same interface as
    :class:`KeyCustodian`, without the private key)."""

    def __init__(
        self,
        address: str,
        tls: TlsMaterial | None,
        public_key: PublicKey,
        timeout: float,
        judgement_key: Ed25519PublicKey,
    ) -> None:
        self.channel = open_channel(address, tls=tls, server_name=CUSTODIAN_ID)
        self._stub = custodian_pb2_grpc.CustodianServiceStub(self.channel)
        self.public_key = public_key
        self.judgement_key = judgement_key
        self._timeout = timeout
        self._witnessed = 0  # the custodian's last witnessed tree size, as last heard
        self._retries_lock = threading.Lock()
        self.witness_retries = 0  # requests proven again because the witness had moved on

    def _call(self, method: object, request: object) -> object:
        try:
            return method(request, timeout=self._timeout)  # type: ignore[operator]
        except grpc.RpcError as e:
            raise _refusal(e) from None

    def _with_evidence(
        self, evidence: EvidenceSource, send: Callable[[custodian_pb2.LogEvidence], object]
    ) -> object:
        """Prove the request entries in the newest checkpoint the custodian is known to have
        witnessed (or from it, in a newer one: see :func:`hedui.server.evidence.log_evidence`);
        when the custodian needs a proof from another size (another request moved its witness
        on), prove again from there, which lands in a checkpoint it has witnessed. Bounded in
        time, not in count: each retry means the witness moved on."""
        size = self._witnessed
        deadline = time.monotonic() + max(self._timeout, WITNESS_RETRY_SECONDS)
        while True:
            try:
                reply = send(evidence_pb(evidence(size)))
            except _WitnessMoved as e:
                size = self._witnessed = e.size
                with self._retries_lock:
                    self.witness_retries += 1
                if time.monotonic() > deadline:
                    raise CustodianRefused(
                        "the custodian's witness moved on too often; retry"
                    ) from None
                continue
            self._witnessed = max(self._witnessed, int(getattr(reply, "witnessed_size", 0)))
            return reply

    def judge(
        self,
        query_id: str,
        answers: Sequence[BatchAnswer],
        households: int,
        grant: Grant,
        evidence: EvidenceSource,
        compositions: Sequence[Sequence[connector_pb2.Member]],
    ) -> list[Judged]:
        """The custodian's signed judgement of each household, its signature checked."""

        def send(proof: custodian_pb2.LogEvidence) -> object:
            return self._call(
                self._stub.DecryptBatch,
                custodian_pb2.DecryptBatchRequest(
                    query_id=query_id,
                    households=households,
                    answers=[_custody(a) for a in answers],
                    grant=grant.to_pb(),
                    evidence=proof,
                    compositions=[custodian_pb2.Composition(members=c) for c in compositions],
                ),
            )

        reply = self._with_evidence(evidence, send)
        assert isinstance(reply, custodian_pb2.DecryptBatchResponse)
        if len(reply.judgements) != households:
            raise CustodianRefused("the key custodian answered for another number of households")
        out = []
        for h, j in enumerate(reply.judgements):
            try:
                judged = judgement.verify(self.judgement_key, j)
            except CryptoError as e:
                raise CustodianRefused(
                    f"the key custodian's judgement cannot be used ({e}): is its judgement key "
                    "the one in custodian/judgement.pub? copy it again from the custodian"
                ) from None
            r = judged.record
            if r.query_id != query_id or r.household != h:
                raise CustodianRefused("the key custodian judged another query or household")
            if judged.statement is None and not r.refused:
                raise CustodianRefused("the key custodian's judgement holds no statement")
            out.append(judged)
        return out

    def close(self) -> None:
        self.channel.close()


def _refusal(e: grpc.RpcError) -> CustodianRefused:
    """A failed call to the custodian in words (see the module's docstring)."""
    code = e.code() if isinstance(e, grpc.Call) else None
    detail = (e.details() if isinstance(e, grpc.Call) else None) or ""
    transport = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    if code is None or (code in transport and not rpc.sent_by_peer(e)):
        return CustodianRefused(
            f"the key custodian is not reachable ({code.name if code else 'error'})"
        )
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        for d in rpc.error_details(e):
            for v in getattr(d, "violations", ()):
                if getattr(v, "type", "") == "WITNESS" and v.subject.isdigit():
                    return _WitnessMoved(int(v.subject))
        if detail:
            return CustodianRefused(detail)
    return CustodianRefused(
        f"the key custodian refused ({code.name})" + (f": {detail}" if detail else "")
    )
