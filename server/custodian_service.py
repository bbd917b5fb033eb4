"""The key custodian as its own process: a gRPC server holding the only copy of the Paillier
private key, and the client the verification service uses to reach it.

The verification service (the aggregator) never holds the private key: it sends the signed
answers and its aggregate, and gets back only the totals the custodian may release.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hedui.core import packing, rpc, signing
from hedui.core.deployment import kind_of
from hedui.core.grants import MAX_BATCH, Grant
from hedui.core.keystore import KeyDir
from hedui.core.paillier import Ciphertext, PublicKey
from hedui.core.rpc import RunningServer, create_server, open_channel
from hedui.core.tls import TlsMaterial
from hedui.proto.v1 import custodian_pb2, custodian_pb2_grpc
from hedui.server.answers import BatchAnswer, SignedAnswer
from hedui.server.custodian import Deployment, EvidenceSource, KeyCustodian, Totals
from hedui.server.errors import ConfigError, CustodianRefused
from hedui.server.witness import (
    DecryptionJournal,
    LogEvidence,
    LoggedRequest,
    LogWitness,
    WitnessMoved,
)

CUSTODIAN_SERVICE = custodian_pb2.DESCRIPTOR.services_by_name["CustodianService"].full_name
CUSTODIAN_ID = "custodian"
WITNESS_FILE = "witness.json"
JOURNAL_FILE = "decryptions.jsonl"


def custodian_view(
    connector_ids: Sequence[str],
    verify_keys: Mapping[str, Ed25519PublicKey],
    plaintext_bits: int,
    authority_key: Ed25519PublicKey | None = None,
) -> Deployment:
    """The custodian's own picture of the deployment: from the connector ids and their kinds,
    never from what the connectors say of themselves."""
    holders: dict[str, set[str]] = {}
    kinds: dict[str, set[str]] = {}
    for cid in connector_ids:
        kinds.setdefault(kind_of(cid).kind, set()).add(cid)
        for name in kind_of(cid).field_names:
            holders.setdefault(name, set()).add(cid)
    return Deployment(
        verify_keys=verify_keys,
        banks=frozenset(c for c in connector_ids if kind_of(c).is_bank),
        holders={k: frozenset(v) for k, v in holders.items()},
        layout=packing.for_connectors(connector_ids),
        kinds={k: frozenset(v) for k, v in kinds.items()},
        batch_layouts={
            k: packing.batch_layout(
                [(f.name, f.max_value) for f in kind_of(next(iter(v))).fields],
                len(v),
                plaintext_bits,
            )
            for k, v in kinds.items()
        },
        authority_key=authority_key,
    )


def _totals_pb(t: Totals) -> custodian_pb2.Totals:
    return custodian_pb2.Totals(
        values=[custodian_pb2.FieldTotal(field=k, value=v) for k, v in sorted(t.values.items())],
        refused=[custodian_pb2.Refusal(field=k, reason=r) for k, r in sorted(t.refused.items())],
    )


def _totals(pb: custodian_pb2.Totals) -> Totals:
    return Totals(
        {v.field: int(v.value) for v in pb.values}, {r.field: r.reason for r in pb.refused}
    )


def _evidence(pb: custodian_pb2.LogEvidence) -> LogEvidence:
    return LogEvidence(
        bytes(pb.checkpoint),
        tuple(
            LoggedRequest(int(r.leaf_index), bytes(r.entry), tuple(r.inclusion_proof))
            for r in pb.requests
        ),
        int(pb.witness_size),
        tuple(pb.consistency_proof),
    )


def _evidence_pb(e: LogEvidence) -> custodian_pb2.LogEvidence:
    return custodian_pb2.LogEvidence(
        checkpoint=e.checkpoint,
        requests=[
            custodian_pb2.LoggedRequest(
                leaf_index=r.leaf_index, entry=r.entry, inclusion_proof=r.inclusion_proof
            )
            for r in e.requests
        ],
        witness_size=e.witness_size,
        consistency_proof=e.consistency_proof,
    )


MAX_PROOF = 64  # hashes in an inclusion or consistency proof (a log of 2^64 entries)
MAX_QUERY_ID = 128


def _bad(context: grpc.ServicerContext, field: str, description: str) -> NoReturn:
    rpc.abort(
        context,
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{field}: {description}",
        rpc.bad_request(field, description),
    )


def _check_shape(
    context: grpc.ServicerContext,
    query_id: str,
    answers: Sequence[custodian_pb2.CustodyAnswer],
    evidence: custodian_pb2.LogEvidence,
    households: int,
    known: Mapping[str, str],
    ciphertexts: Callable[[str], int],
    ciphertext_bytes: int,
) -> None:
    """Every count, size and offset of a request, checked against the deployment before
    anything is allocated or computed from it. ``known``: connector id -> kind;
    ``ciphertexts(kind)``: how many ciphertexts an answer of that kind holds."""
    if not 0 < len(query_id) <= MAX_QUERY_ID:
        _bad(context, "query_id", f"1 to {MAX_QUERY_ID} characters")
    if not 1 <= households <= MAX_BATCH:
        _bad(context, "households", f"1 to {MAX_BATCH} households, got {households}")
    if len(answers) > len(known):  # none at all: every source failed, each kind is refused
        _bad(context, "answers", f"at most {len(known)} answers (one per connector)")
    seen: set[str] = set()
    for i, a in enumerate(answers):
        kind = known.get(a.connector_id)
        if kind is None or a.connector_id in seen:
            _bad(
                context,
                f"answers[{i}].connector_id",
                "not a connector of this deployment, or twice",
            )
        seen.add(a.connector_id)
        if len(a.packed) != ciphertexts(kind):
            _bad(context, f"answers[{i}].packed", f"{ciphertexts(kind)} ciphertexts expected")
        if any(len(c) > ciphertext_bytes for c in a.packed):
            _bad(
                context, f"answers[{i}].packed", f"ciphertexts of at most {ciphertext_bytes} bytes"
            )
        if len(a.signature) > 128 or len(a.key_fingerprint) > 64 or len(a.queried) > 64:
            _bad(context, f"answers[{i}]", "signature, key fingerprint or digest too long")
    if len(evidence.requests) > households or len(evidence.consistency_proof) > MAX_PROOF:
        _bad(context, "evidence", f"at most {households} logged requests and {MAX_PROOF} hashes")
    if any(len(r.inclusion_proof) > MAX_PROOF for r in evidence.requests):
        _bad(context, "evidence.requests.inclusion_proof", f"at most {MAX_PROOF} hashes")


class CustodianServicer(custodian_pb2_grpc.CustodianServiceServicer):
    def __init__(self, custodian: KeyCustodian) -> None:
        self._custodian = custodian
        # connector id -> kind, for the shape checks of every request
        self._known = {c: k for k, ids in custodian.deployment.kinds.items() for c in ids}

    def _refuse(self, context: grpc.ServicerContext, e: CustodianRefused) -> NoReturn:
        if isinstance(e, WitnessMoved):
            rpc.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                str(e),
                rpc.precondition_failure("WITNESS", str(e.size), str(e)),
            )
        rpc.abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(e))

    def Decrypt(
        self, request: custodian_pb2.DecryptRequest, context: grpc.ServicerContext
    ) -> custodian_pb2.DecryptResponse:
        public = self._custodian.public_key
        _check_shape(
            context,
            request.query_id,
            request.answers,
            request.evidence,
            1,
            self._known,
            lambda _kind: 1,
            public.ciphertext_bytes,
        )
        if len(request.aggregate) > public.ciphertext_bytes:
            _bad(context, "aggregate", f"a ciphertext of at most {public.ciphertext_bytes} bytes")
        evidence = _evidence(request.evidence)
        try:
            answers = [
                SignedAnswer(a.connector_id, a.packed[0], a.signature, a.key_fingerprint, a.queried)
                for a in request.answers
                if len(a.packed) == 1
            ]
            if len(answers) != len(request.answers):
                raise CustodianRefused("an interactive answer holds exactly one ciphertext")
            claimed = public.from_bytes(request.aggregate, public.fingerprint)
            totals = self._custodian.decrypt_totals(
                request.query_id,
                answers,
                claimed,
                Grant.from_pb(request.grant),
                lambda _size: evidence,
            )
        except CustodianRefused as e:
            self._refuse(context, e)
        except Exception:
            rpc.abort(context, grpc.StatusCode.INVALID_ARGUMENT, "malformed answers or aggregate")
        return custodian_pb2.DecryptResponse(
            totals=_totals_pb(totals), witnessed_size=self._custodian.witness.size
        )

    def DecryptBatch(
        self, request: custodian_pb2.DecryptBatchRequest, context: grpc.ServicerContext
    ) -> custodian_pb2.DecryptBatchResponse:
        layouts = self._custodian.deployment.batch_layouts
        households = int(request.households)
        _check_shape(
            context,
            request.query_id,
            request.answers,
            request.evidence,
            households,
            self._known,
            lambda kind: -(-households // layouts[kind].per_ciphertext),
            self._custodian.public_key.ciphertext_bytes,
        )
        evidence = _evidence(request.evidence)
        try:
            answers = [
                BatchAnswer(
                    a.connector_id,
                    a.kind,
                    tuple(a.packed),
                    a.signature,
                    a.key_fingerprint,
                    a.queried,
                    signing.ciphertexts_digest(a.packed),  # never the sender's word for it
                )
                for a in request.answers
            ]
            result = self._custodian.decrypt_batch(
                request.query_id,
                answers,
                int(request.households),
                Grant.from_pb(request.grant),
                lambda _size: evidence,
            )
        except CustodianRefused as e:
            self._refuse(context, e)
        except Exception:
            rpc.abort(context, grpc.StatusCode.INVALID_ARGUMENT, "malformed batch answers")
        return custodian_pb2.DecryptBatchResponse(
            households=[_totals_pb(t) for t in result],
            witnessed_size=self._custodian.witness.size,
        )


def write_custodian_config(
    path: Path, connector_ids: Iterable[str], min_banks: int, log_origin: str, state_dir: Path
) -> None:
    ids = ", ".join(f'"{c}"' for c in connector_ids)
    path.write_text(
        f"# hedui key custodian\nmin_banks = {min_banks}\nconnectors = [{ids}]\n"
        f'log_origin = "{log_origin}"\nstate_dir = "{state_dir}"\n',
        encoding="utf-8",
    )


def start_custodian(
    config_path: Path, keys: KeyDir, *, insecure: bool, address: str = "127.0.0.1:0"
) -> RunningServer:
    """Serve the custodian with the private key from ``keys``; only the service may call it.
    Its witness state and decryption journal live in its own ``state_dir``."""
    try:
        doc = tomllib.loads(config_path.read_text(encoding="utf-8"))
        ids = [str(c) for c in doc["connectors"]]
        min_banks = int(doc["min_banks"])
        origin = str(doc["log_origin"])
        state_dir = Path(str(doc["state_dir"]))
    except (OSError, KeyError, ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{config_path}: not a custodian configuration ({e})") from None
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = keys.paillier_private()
    view = custodian_view(
        ids,
        {c: keys.connector_verify_key(c) for c in ids},
        private.public.max_plaintext_bits,
        keys.grant_verify_key(),
    )
    custodian = KeyCustodian(
        private,
        view,
        min_banks=min_banks,
        witness=LogWitness(keys.log_public_key(), origin, state_dir / WITNESS_FILE),
        journal=DecryptionJournal(state_dir / JOURNAL_FILE),
    )
    servicer = CustodianServicer(custodian)

    def register(server: grpc.Server) -> None:
        custodian_pb2_grpc.add_CustodianServiceServicer_to_server(servicer, server)

    return create_server(
        address,
        tls=None if insecure else keys.tls(CUSTODIAN_ID),
        roles={CUSTODIAN_SERVICE: {"service"}},
        register=[register],
    )


def _custody(a: SignedAnswer | BatchAnswer) -> custodian_pb2.CustodyAnswer:
    """An answer as the custodian receives it: everything it needs to check the signature."""
    out = custodian_pb2.CustodyAnswer(
        connector_id=a.connector_id,
        key_fingerprint=a.key_fingerprint,
        queried=a.queried,
        signature=a.signature,
    )
    if isinstance(a, BatchAnswer):
        out.packed.extend(a.packed)
        out.kind, out.ciphertexts = a.kind, a.ciphertexts
    else:
        out.packed.append(a.packed)
    return out


class RemoteCustodian:
    """The verification service's handle on the custodian process (same interface as
    :class:`KeyCustodian`, without the private key)."""

    def __init__(
        self,
        address: str,
        tls: TlsMaterial | None,
        public_key: PublicKey,
        view: Deployment,
        timeout: float,
    ) -> None:
        self.channel = open_channel(address, tls=tls, server_name=CUSTODIAN_ID)
        self._stub = custodian_pb2_grpc.CustodianServiceStub(self.channel)
        self.public_key = public_key
        self.batch_layouts = view.batch_layouts
        self._timeout = timeout
        self._witnessed = 0  # the custodian's last witnessed tree size, as last heard

    def _call(self, method: object, request: object) -> object:
        try:
            return method(request, timeout=self._timeout)  # type: ignore[operator]
        except grpc.RpcError as e:
            detail = e.details() if isinstance(e, grpc.Call) else None
            code = e.code() if isinstance(e, grpc.Call) else None
            if code == grpc.StatusCode.FAILED_PRECONDITION:
                for d in rpc.error_details(e):
                    for v in getattr(d, "violations", ()):
                        if getattr(v, "type", "") == "WITNESS" and v.subject.isdigit():
                            raise WitnessMoved(int(v.subject)) from None
                if detail:
                    raise CustodianRefused(detail) from None
            raise CustodianRefused(
                f"the key custodian is not reachable ({code.name if code else 'error'})"
            ) from None

    def _with_evidence(
        self, evidence: EvidenceSource, send: Callable[[custodian_pb2.LogEvidence], object]
    ) -> object:
        """Prove from the custodian's last witnessed size; if another request moved it on in
        the meantime, prove again from where it now is."""
        for _ in range(8):
            try:
                reply = send(_evidence_pb(evidence(self._witnessed)))
            except WitnessMoved as e:
                self._witnessed = e.size
                continue
            self._witnessed = max(self._witnessed, int(getattr(reply, "witnessed_size", 0)))
            return reply
        raise CustodianRefused("the custodian's witness moved on too often; retry")

    def decrypt_totals(
        self,
        query_id: str,
        answers: Sequence[SignedAnswer],
        claimed: Ciphertext,
        grant: Grant,
        evidence: EvidenceSource,
    ) -> Totals:
        def send(proof: custodian_pb2.LogEvidence) -> object:
            return self._call(
                self._stub.Decrypt,
                custodian_pb2.DecryptRequest(
                    query_id=query_id,
                    answers=[_custody(a) for a in answers],
                    aggregate=self.public_key.to_bytes(claimed),
                    grant=grant.to_pb(),
                    evidence=proof,
                ),
            )

        reply = self._with_evidence(evidence, send)
        assert isinstance(reply, custodian_pb2.DecryptResponse)
        return _totals(reply.totals)

    def decrypt_batch(
        self,
        query_id: str,
        answers: Sequence[BatchAnswer],
        households: int,
        grant: Grant,
        evidence: EvidenceSource,
    ) -> list[Totals]:
        def send(proof: custodian_pb2.LogEvidence) -> object:
            return self._call(
                self._stub.DecryptBatch,
                custodian_pb2.DecryptBatchRequest(
                    query_id=query_id,
                    households=households,
                    answers=[_custody(a) for a in answers],
                    grant=grant.to_pb(),
                    evidence=proof,
                ),
            )

        reply = self._with_evidence(evidence, send)
        assert isinstance(reply, custodian_pb2.DecryptBatchResponse)
        return [_totals(t) for t in reply.households]

    def close(self) -> None:
        self.channel.close()
