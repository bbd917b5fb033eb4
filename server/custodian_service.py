"""The key custodian as its own process: a gRPC server holding the only copy of the Paillier
private key, and the client the verification service uses to reach it.

The verification service (the aggregator) never holds the private key: it sends the signed
answers and its aggregate, and gets back only the totals the custodian may release.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hedui.core import packing, rpc
from hedui.core.deployment import kind_of
from hedui.core.keystore import KeyDir
from hedui.core.paillier import Ciphertext, PublicKey
from hedui.core.rpc import RunningServer, create_server, open_channel
from hedui.core.tls import TlsMaterial
from hedui.proto.v1 import custodian_pb2, custodian_pb2_grpc
from hedui.server.answers import BatchAnswer, SignedAnswer
from hedui.server.custodian import Deployment, KeyCustodian, Totals
from hedui.server.errors import ConfigError, CustodianRefused

CUSTODIAN_SERVICE = custodian_pb2.DESCRIPTOR.services_by_name["CustodianService"].full_name
CUSTODIAN_ID = "custodian"


def custodian_view(
    connector_ids: Sequence[str], verify_keys: Mapping[str, Ed25519PublicKey], plaintext_bits: int
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


class CustodianServicer(custodian_pb2_grpc.CustodianServiceServicer):
    def __init__(self, custodian: KeyCustodian) -> None:
        self._custodian = custodian

    def Decrypt(
        self, request: custodian_pb2.DecryptRequest, context: grpc.ServicerContext
    ) -> custodian_pb2.DecryptResponse:
        public = self._custodian.public_key
        try:
            answers = [
                SignedAnswer(a.connector_id, a.packed[0], a.signature, a.key_fingerprint, a.queried)
                for a in request.answers
                if len(a.packed) == 1
            ]
            if len(answers) != len(request.answers):
                raise CustodianRefused("an interactive answer holds exactly one ciphertext")
            claimed = public.from_bytes(request.aggregate, public.fingerprint)
            totals = self._custodian.decrypt_totals(request.query_id, answers, claimed)
        except CustodianRefused as e:
            rpc.abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except Exception:
            rpc.abort(context, grpc.StatusCode.INVALID_ARGUMENT, "malformed answers or aggregate")
        return custodian_pb2.DecryptResponse(totals=_totals_pb(totals))

    def DecryptBatch(
        self, request: custodian_pb2.DecryptBatchRequest, context: grpc.ServicerContext
    ) -> custodian_pb2.DecryptBatchResponse:
        try:
            answers = [
                BatchAnswer(
                    a.connector_id,
                    a.kind,
                    tuple(a.packed),
                    a.signature,
                    a.key_fingerprint,
                    a.queried,
                    a.ciphertexts,
                )
                for a in request.answers
            ]
            result = self._custodian.decrypt_batch(
                request.query_id, answers, int(request.households)
            )
        except CustodianRefused as e:
            rpc.abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except Exception:
            rpc.abort(context, grpc.StatusCode.INVALID_ARGUMENT, "malformed batch answers")
        return custodian_pb2.DecryptBatchResponse(households=[_totals_pb(t) for t in result])


def write_custodian_config(path: Path, connector_ids: Iterable[str], min_banks: int) -> None:
    ids = ", ".join(f'"{c}"' for c in connector_ids)
    path.write_text(
        f"# hedui key custodian\nmin_banks = {min_banks}\nconnectors = [{ids}]\n", encoding="utf-8"
    )


def start_custodian(
    config_path: Path, keys: KeyDir, *, insecure: bool, address: str = "127.0.0.1:0"
) -> RunningServer:
    """Serve the custodian with the private key from ``keys``; only the service may call it."""
    try:
        doc = tomllib.loads(config_path.read_text(encoding="utf-8"))
        ids = [str(c) for c in doc["connectors"]]
        min_banks = int(doc["min_banks"])
    except (OSError, KeyError, ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{config_path}: not a custodian configuration ({e})") from None
    private = keys.paillier_private()
    view = custodian_view(
        ids, {c: keys.connector_verify_key(c) for c in ids}, private.public.max_plaintext_bits
    )
    servicer = CustodianServicer(KeyCustodian(private, view, min_banks=min_banks))

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
        self._channel = open_channel(address, tls=tls, server_name=CUSTODIAN_ID)
        self._stub = custodian_pb2_grpc.CustodianServiceStub(self._channel)
        self.public_key = public_key
        self.batch_layouts = view.batch_layouts
        self._timeout = timeout

    def _call(self, method: object, request: object) -> object:
        try:
            return method(request, timeout=self._timeout)  # type: ignore[operator]
        except grpc.RpcError as e:
            detail = e.details() if isinstance(e, grpc.Call) else None
            code = e.code() if isinstance(e, grpc.Call) else None
            if code == grpc.StatusCode.FAILED_PRECONDITION and detail:
                raise CustodianRefused(detail) from None
            raise CustodianRefused(
                f"the key custodian is not reachable ({code.name if code else 'error'})"
            ) from None

    def decrypt_totals(
        self, query_id: str, answers: Sequence[SignedAnswer], claimed: Ciphertext
    ) -> Totals:
        request = custodian_pb2.DecryptRequest(
            query_id=query_id,
            answers=[_custody(a) for a in answers],
            aggregate=self.public_key.to_bytes(claimed),
        )
        reply = self._call(self._stub.Decrypt, request)
        assert isinstance(reply, custodian_pb2.DecryptResponse)
        return _totals(reply.totals)

    def decrypt_batch(
        self, query_id: str, answers: Sequence[BatchAnswer], households: int
    ) -> list[Totals]:
        request = custodian_pb2.DecryptBatchRequest(
            query_id=query_id,
            households=households,
            answers=[_custody(a) for a in answers],
        )
        reply = self._call(self._stub.DecryptBatch, request)
        assert isinstance(reply, custodian_pb2.DecryptBatchResponse)
        return [_totals(t) for t in reply.households]

    def close(self) -> None:
        self._channel.close()
