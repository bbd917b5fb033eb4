"""The key custodian as its own process: a gRPC server holding the only copy of the Paillier
private key. Only the verification service may call it (the service's client is
:mod:`hedui.server.custodian_client`): it sends the signed answers about a query's households,
and gets back only the totals the custodian may release.

A refusal is FAILED_PRECONDITION with the custodian's reason, logged (a WARNING with the query
id and the reason); a journal or witness state it cannot write is UNAVAILABLE ("cannot write its
journal: …; nothing decrypted", with an ``ErrorInfo``), logged, and nothing was decrypted: the
same request may be sent again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import grpc

from hedui.audit import merkle
from hedui.audit.cosignature import WitnessPolicy
from hedui.core import metrics, rpc, signing
from hedui.core.answers import BatchAnswer, marks_from_pb
from hedui.core.config import load_settings, read_toml, section, to_toml
from hedui.core.custody import (
    CUSTODIAN_ID,
    CUSTODIAN_SERVICE,
    custodian_view,
    evidence_from_pb,
)
from hedui.core.errors import ConfigFileError
from hedui.core.grants import MAX_BATCH, Grant
from hedui.core.keystore import KeyDir
from hedui.core.policy.book import PolicyBook
from hedui.core.rpc import RunningServer, create_server
from hedui.core.tls import TlsMaterial
from hedui.custodian.errors import ConfigError, Refused, Unavailable
from hedui.custodian.judges import Judges
from hedui.custodian.keeper import KeyCustodian
from hedui.custodian.witness import DecryptionJournal, LogWitness, WitnessMoved
from hedui.proto.v1 import custodian_pb2, custodian_pb2_grpc

log = logging.getLogger("hedui.custodian")

WITNESS_FILE = "witness.json"
JOURNAL_FILE = "decryptions.jsonl"


MAX_PROOF = 64  # hashes in an inclusion or consistency proof (a log of 2^64 entries)
MAX_QUERY_ID = 128
MAX_MEMBERS = 64  # members of one household (the register holds none larger)


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
    compositions: Sequence[custodian_pb2.Composition],
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
    if len(compositions) != households:
        _bad(context, "compositions", f"one per household ({households}), got {len(compositions)}")
    for i, c in enumerate(compositions):
        if not 1 <= len(c.members) <= MAX_MEMBERS or any(
            len(m.birth_date) > 10 or m.masked_id for m in c.members
        ):
            _bad(
                context,
                f"compositions[{i}]",
                f"1 to {MAX_MEMBERS} members as the registry answered them",
            )


class CustodianServicer(custodian_pb2_grpc.CustodianServiceServicer):
    def __init__(self, custodian: KeyCustodian) -> None:
        self._custodian = custodian
        # connector id -> kind, for the shape checks of every request
        self._known = {c: k for k, ids in custodian.deployment.kinds.items() for c in ids}

    def _refuse(
        self, context: grpc.ServicerContext, e: Refused, method: str, query_id: str
    ) -> NoReturn:
        metrics.DECRYPTIONS.labels(method, "refused").inc()
        if isinstance(e, WitnessMoved):  # not a refusal: the service proves again from there
            log.debug("%s query=%s: %s", method, query_id[:MAX_QUERY_ID], e)
            rpc.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                str(e),
                rpc.precondition_failure("WITNESS", str(e.size), str(e)),
            )
        log.warning("%s query=%s refused: %s", method, query_id[:MAX_QUERY_ID], e)
        rpc.abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(e))

    def _unavailable(
        self, context: grpc.ServicerContext, e: Unavailable, method: str, query_id: str
    ) -> NoReturn:
        metrics.DECRYPTIONS.labels(method, "unavailable").inc()
        log.error("%s query=%s: %s (%s)", method, query_id[:MAX_QUERY_ID], e, e.error)
        rpc.abort(
            context,
            grpc.StatusCode.UNAVAILABLE,
            str(e),
            rpc.error_info(e.reason, CUSTODIAN_ID),
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
            request.compositions,
        )
        evidence = evidence_from_pb(request.evidence)
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
                    marks_from_pb(a.marked),
                )
                for a in request.answers
            ]
            judgements = self._custodian.judge(
                request.query_id,
                answers,
                int(request.households),
                Grant.from_pb(request.grant),
                lambda _size: evidence,
                [list(c.members) for c in request.compositions],
            )
        except Refused as e:
            self._refuse(context, e, "DecryptBatch", request.query_id)
        except Unavailable as e:
            self._unavailable(context, e, "DecryptBatch", request.query_id)
        except Exception as e:
            log.warning("DecryptBatch: malformed batch answers (%s)", type(e).__name__)
            rpc.abort(context, grpc.StatusCode.INVALID_ARGUMENT, "malformed batch answers")
        metrics.DECRYPTIONS.labels("DecryptBatch", "released").inc()
        return custodian_pb2.DecryptBatchResponse(
            judgements=judgements, witnessed_size=self._custodian.witness.size
        )


@dataclass(frozen=True)
class CustodianConfig:
    """The key custodian's settings (``[custodian]`` of its config file)."""

    keys_dir: Path  # its own key directory: the Paillier private key and what it trusts
    state_dir: Path  # its witness of the log and its decryption journal
    connectors: tuple[str, ...]  # the answering connectors whose answers it accepts
    log_origin: str
    min_banks: int = 3
    address: str = "127.0.0.1:0"
    insecure: bool = False
    metrics_address: str = ""  # HOST:PORT of its Prometheus /metrics ("" = none)
    # the verifier keys (c2sp.org/tlog-cosignature, type 0x04) of the log's witnesses, and how
    # many of them must have cosigned a checkpoint before it decrypts under it (issue #23)
    witness_vkeys: tuple[str, ...] = ()
    witness_quorum: int = 1
    # the log's checkpoint pinned at enrolment (size and hex root): the start of its chain
    # until it has witnessed one (0 and "": the empty log)
    first_checkpoint_size: int = 0
    first_checkpoint_root: str = ""

    def to_toml(self) -> str:
        return to_toml(self, "hedui key custodian", "custodian")

    def witness_policy(self) -> WitnessPolicy:
        return WitnessPolicy.from_vkeys(self.witness_vkeys, self.witness_quorum)

    def first_checkpoint(self) -> tuple[int, bytes] | None:
        if not self.first_checkpoint_size:
            return None
        return self.first_checkpoint_size, bytes.fromhex(self.first_checkpoint_root)


def load_custodian_config(path: Path, env: Mapping[str, str]) -> CustodianConfig:
    try:
        table = read_toml(path, "write the custodian's config (see README, Operating hedui)")
        config = load_settings(
            CustodianConfig, section(table, "custodian", path), env, f"{path} [custodian]"
        )
    except ConfigFileError as e:
        raise ConfigError(str(e)) from None
    if not config.connectors:
        raise ConfigError(f"{path}: [custodian] connectors lists no connector")
    if not config.witness_vkeys:
        raise ConfigError(
            f"{path}: [custodian] witness_vkeys names no witness: the custodian decrypts only "
            "under log checkpoints cosigned by a witness that is not the service (issue #23); "
            "give the witness's verifier key (its witness.vkey)"
        )
    try:
        config.witness_policy()
    except ValueError as e:
        raise ConfigError(f"{path}: [custodian] witness_vkeys / witness_quorum: {e}") from None
    try:
        root = bytes.fromhex(config.first_checkpoint_root)
    except ValueError:
        root = b""
    if config.first_checkpoint_size < 0 or (
        config.first_checkpoint_size and len(root) != merkle.HASH_SIZE
    ):
        raise ConfigError(
            f"{path}: [custodian] first_checkpoint_size and first_checkpoint_root: a tree size "
            "and its root (64 hex digits), or 0 and nothing"
        )
    return config


def check_witness_state(state_dir: Path, journal: DecryptionJournal) -> None:
    """A custodian that has decrypted never takes a log's checkpoint on trust again: with its
    witness state gone and its journal still there, it does not start (it would accept any log
    signed by the log key, a foreign one-entry log included), and says how to restore it."""
    state = state_dir / WITNESS_FILE
    if state.exists():
        return
    last = journal.last_witnessed()
    if last is None:
        return  # never decrypted: its first checkpoint is the first it is shown
    size, root = last
    raise ConfigError(
        f"{state} is missing, but the custodian's journal {journal.path} records decryptions "
        f"under the log at size {size}: it will not take a log's checkpoint on trust again. "
        f"Restore {WITNESS_FILE} from the backup of {state_dir}, or, after checking the log "
        f"with `hedui audit verify`, write the journal's last witnessed checkpoint into it: "
        f'{{"size": {size}, "root": "{root}"}}'
    )


def start_custodian(config: CustodianConfig) -> RunningServer:
    """Serve the custodian with the private key from its key directory; only the service may
    call it. Its witness state and decryption journal live in its own ``state_dir``."""
    keys = KeyDir(config.keys_dir)
    ids, min_banks, origin, state_dir = (
        list(config.connectors),
        config.min_banks,
        config.log_origin,
        config.state_dir,
    )
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = keys.paillier_private()
    keys.ensure_judgement_key()  # a custodian enrolled before issue #24 makes it now
    judgement_key = keys.judgement_signing_key()
    view = custodian_view(
        ids,
        {c: keys.connector_verify_key(c) for c in ids},
        private.public.max_plaintext_bits,
        keys.grant_verify_key(),
    )
    journal = DecryptionJournal(state_dir / JOURNAL_FILE)
    check_witness_state(state_dir, journal)
    log_key = keys.log_public_key()
    policy = config.witness_policy()
    if any(w.raw_key == log_key.public_bytes_raw() for w in policy.witnesses):
        raise ConfigError(
            "a witness of witness_vkeys has the log's own key: the witness must not be the service"
        )
    custodian = KeyCustodian(
        private,
        view,
        min_banks=min_banks,
        witness=LogWitness(
            log_key,
            origin,
            state_dir / WITNESS_FILE,
            witnesses=policy,
            first=config.first_checkpoint(),
        ),
        journal=journal,
        judges=Judges(PolicyBook.builtin(), judgement_key),
    )
    log.info(
        "decrypting only under checkpoints cosigned by %d of: %s",
        policy.quorum,
        ", ".join(w.vkey for w in policy.witnesses),
    )
    return serve_custodian(
        custodian, config.address, None if config.insecure else keys.tls(CUSTODIAN_ID)
    )


def serve_custodian(
    custodian: KeyCustodian, address: str, tls: TlsMaterial | None
) -> RunningServer:
    """Serve ``custodian`` on ``address`` (``tls=None``: plaintext); only the service may call."""
    servicer = CustodianServicer(custodian)

    def register(server: grpc.Server) -> None:
        custodian_pb2_grpc.add_CustodianServiceServicer_to_server(servicer, server)

    return create_server(
        address,
        tls=tls,
        roles={CUSTODIAN_SERVICE: {"service"}},
        register=[register],
        party=CUSTODIAN_ID,
    )
