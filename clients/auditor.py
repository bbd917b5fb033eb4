"""The auditor's side: read the log over the AuditService (or, when the deployment is down,
straight from its database) and check it with nothing but the log's public key."""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hedui.audit import merkle
from hedui.audit.auditor import LogSource, StoreSource, TamperingDetected, describe_entry
from hedui.audit.checkpoint import Checkpoint, parse_and_verify, vkey
from hedui.audit.errors import VerificationError
from hedui.audit.log import DEFAULT_ORIGIN, key_name
from hedui.audit.store import LogStore, open_log_engine
from hedui.clients.args import unwritable
from hedui.clients.errors import ClientError
from hedui.clients.intake import (
    AUDITOR_STEP,
    IntakeProfile,
    describe_rpc_error,
    open_service_channel,
    read_profile,
)
from hedui.core import signing
from hedui.core.errors import CryptoError
from hedui.core.rpc import handshake_failure, wait_healthy
from hedui.core.workdir import Workdir
from hedui.proto.v1 import audit_pb2, audit_pb2_grpc


class GrpcSource:
    """The log as the AuditService serves it."""

    def __init__(self, channel: grpc.Channel, timeout: float = 30.0) -> None:
        self._channel = channel
        self._stub = audit_pb2_grpc.AuditServiceStub(channel)
        self._timeout = timeout

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self._timeout)
        except grpc.RpcError as e:
            if isinstance(e, grpc.Call) and e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise ClientError(describe_rpc_error(e)) from None

    def checkpoint(self, size: int = 0) -> bytes | None:
        r = self._call(self._stub.GetCheckpoint, audit_pb2.GetCheckpointRequest(tree_size=size))
        return None if r is None else bytes(r.checkpoint)

    def entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        r = self._call(self._stub.GetEntries, audit_pb2.GetEntriesRequest(start=start, end=end))
        return [] if r is None else [(int(e.index), bytes(e.entry)) for e in r.entries]

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        r = self._call(
            self._stub.GetInclusionProof,
            audit_pb2.GetInclusionProofRequest(index=index, tree_size=size),
        )
        return [bytes(h) for h in r.hashes]

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        r = self._call(
            self._stub.GetConsistencyProof,
            audit_pb2.GetConsistencyProofRequest(first=size1, second=size2),
        )
        return [bytes(h) for h in r.hashes]

    def search(self, request: audit_pb2.SearchRequest) -> list[tuple[int, bytes]]:
        r = self._call(self._stub.Search, request)
        return [(int(e.index), bytes(e.entry)) for e in r.entries]

    def close(self) -> None:
        self._channel.close()


@dataclass
class AuditorSession:
    """Everything an auditor command needs: the log, its origin and the pinned public key."""

    source: LogSource
    origin: str
    online: bool
    key_path: Path  # the log's public key, as the service's operator gave it to the auditor

    @property
    def public_key(self) -> Ed25519PublicKey:
        return load_log_key(self.key_path)

    def signed_size(self) -> int:
        """The size of the latest signed checkpoint, as the source gives it (not verified)."""
        note = self.source.checkpoint()
        return 0 if note is None else int(note.decode().split("\n")[1])


def _service_settings(w: Workdir) -> dict[str, Any]:
    try:
        return dict(tomllib.loads(w.service_config.read_text(encoding="utf-8")).get("service", {}))
    except (FileNotFoundError, NotADirectoryError):
        raise ClientError(
            f"{w.service_config} does not exist; is {w.root} a hedui workdir? "
            f"(an auditor on a host of its own gives --profile FILE instead: {AUDITOR_STEP})"
        ) from None
    except OSError as e:
        raise ClientError(f"cannot read {w.service_config}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ClientError(f"{w.service_config} is not a valid hedui configuration: {e}") from None


def log_origin(w: Workdir) -> str:
    """The origin line of the workdir's audit log (read from its configuration, no network)."""
    return str(_service_settings(w).get("log_origin", DEFAULT_ORIGIN))


def write_auditor_profile(
    w: Workdir, address: str, insecure: bool, *, name: str = "auditor", path: Path | None = None
) -> None:
    keys = w.keys(name)
    cert, key = keys.tls_paths(name)
    (path or w.auditor_profile).write_text(
        "# hedui auditor profile (written by `hedui up`)\n"
        f'address = "{address}"\nserver_name = "service"\ninsecure = {"true" if insecure else "false"}\n'
        f'ca = "{keys.root / "ca.pem"}"\ncert = "{cert}"\nkey = "{key}"\n'
        f'log_public_key = "{keys.root / "log" / "log.pub"}"\n'
        f"log_origin = {json.dumps(log_origin(w))}\n",
        encoding="utf-8",
    )


def load_log_key(path: Path) -> Ed25519PublicKey:
    """The log's public key the auditor pinned, refused by name when missing or damaged."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise ClientError(
            f"{path} does not exist: the log's public key (log/log.pub) comes from the "
            f"service's operator ({AUDITOR_STEP}); with `hedui up`, start the deployment once"
        ) from None
    except OSError as e:
        raise ClientError(f"cannot read the log's public key {path}: {e.strerror}") from None
    try:
        return signing.load_public_key(pem)
    except (ValueError, TypeError, CryptoError):
        raise ClientError(
            f"{path} is not the log's public key (an Ed25519 public key, PEM): ask the "
            "service's operator for log/log.pub again"
        ) from None


@dataclass(frozen=True)
class AuditorProfile:
    """An auditor on a host of its own (README, "Operating hedui"): how it reaches the
    service (the client profile's address and TLS files), the log's public key it pinned and
    the log's origin, and where it keeps the last checkpoint it verified. It has no database:
    it reads the log through the service's AuditService only."""

    path: Path
    client: IntakeProfile
    log_public_key: Path
    log_origin: str
    state: Path | None

    @classmethod
    def load(cls, path: Path) -> AuditorProfile:
        doc = read_profile(
            path, f"{path} does not exist; an auditor host writes its profile as in {AUDITOR_STEP}"
        )
        missing = [k for k in ("log_public_key", "log_origin") if not doc.get(k)]
        if missing:
            raise ClientError(
                f"{path}: an auditor profile needs {' and '.join(missing)} "
                f"(the log's public key file and the service's log_origin; {AUDITOR_STEP})"
            )
        state = doc.get("state")
        return cls(
            path,
            IntakeProfile.from_doc(path, doc),  # the same client settings: address, TLS files
            Path(str(doc["log_public_key"])).expanduser(),
            str(doc["log_origin"]),
            Path(str(state)).expanduser() if state else None,
        )


def _handshake_failed(channel: grpc.Channel) -> str | None:
    """Why the TLS handshake on ``channel`` fails, or None when it does not (nothing listens)."""
    try:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    except grpc.RpcError as e:
        if (
            isinstance(e, grpc.Call)
            and e.code() == grpc.StatusCode.UNAVAILABLE
            and handshake_failure(e.details() or "") is not None
        ):
            return describe_rpc_error(e)
    return None


def open_session(w: Workdir, *, offline: bool = False, say: Any = print) -> AuditorSession:
    settings = _service_settings(w)
    origin = str(settings.get("log_origin", DEFAULT_ORIGIN))
    key_path = w.keys("auditor").root / "log" / "log.pub"
    client = None
    if not offline and w.auditor_profile.exists():
        client = IntakeProfile.load(w.auditor_profile)  # the same client profile format
    url = str(settings.get("audit_database", w.audit_db_url))
    return _open(client, key_path, origin, url, say)


def open_profile_session(
    profile: AuditorProfile, *, offline: bool = False, say: Any = print
) -> AuditorSession:
    """The log through the service named in an auditor host's profile (it has no database)."""
    if offline:
        raise ClientError(
            "--offline reads the log's database, which is on the service's host: there, give "
            "--workdir; an auditor host (--profile) reads the log through the running service"
        )
    return _open(profile.client, profile.log_public_key, profile.log_origin, None, say)


def _open(
    client: IntakeProfile | None, key_path: Path, origin: str, url: str | None, say: Any
) -> AuditorSession:
    """Through the service of ``client`` when it answers, else the database at ``url``."""
    if client is not None:
        channel = open_service_channel(client)
        try:
            wait_healthy(channel, timeout=3)
            return AuditorSession(GrpcSource(channel), origin, True, key_path)
        except (grpc.RpcError, grpc.FutureTimeoutError, RuntimeError):
            failed = _handshake_failed(channel)
            channel.close()
            if url is None:  # an auditor host: the service is its only way to the log
                raise ClientError(
                    failed
                    or f"the verification service at {client.address} does not answer: an "
                    "auditor host reads the log through the running service; try again when "
                    "it runs, or ask its operator"
                ) from None
            if failed:  # it runs, but will not talk to this machine: not "not running"
                raise ClientError(
                    f"{failed}\n(`--offline` reads the log's database on this host instead)"
                ) from None
            say("the deployment is not running: reading the log's database directly")
    if url is None:
        raise ClientError("an auditor host has no log database: it needs the running service")
    return AuditorSession(StoreSource(LogStore(open_log_engine(url))), origin, False, key_path)


def search(
    session: AuditorSession,
    *,
    id_number: str | None,
    caller: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> list[tuple[int, bytes]]:
    since_ms = int(since.timestamp() * 1000) if since else 0
    until_ms = int(until.timestamp() * 1000) if until else 0
    if isinstance(session.source, GrpcSource):
        req = audit_pb2.SearchRequest(since_unix_ms=since_ms, until_unix_ms=until_ms)
        if id_number is not None:
            req.applicant_id_number = id_number
        elif caller is not None:
            req.caller = caller
        else:
            req.time_range_only = True
        return session.source.search(req)
    # Offline there is no service to log the search: searching by person is refused (every
    # search by person must leave its own audit entry), by caller or time is allowed.
    if id_number is not None:
        raise ClientError(
            "searching by person needs the running deployment, which logs every such search; "
            "start it with `hedui up`, or search by --caller or --since"
        )
    assert isinstance(session.source, StoreSource)
    return session.source.store.search(caller=caller, since_ms=since_ms, until_ms=until_ms)


def export(session: AuditorSession, since: dt.datetime, until: dt.datetime, out: Path) -> int:
    """Entries of a period with inclusion proofs against one checkpoint: verifiable offline."""
    note = session.source.checkpoint()
    if note is None:
        raise ClientError("the log has no checkpoint yet")
    cp = parse_and_verify(note, key_name(session.origin), session.public_key, origin=session.origin)
    lo, hi = int(since.timestamp() * 1000), int(until.timestamp() * 1000)
    items = []
    start = 0
    while start < cp.size:
        for index, data in session.source.entries(start, min(cp.size, start + 1000)):
            d = describe_entry(data)
            if lo <= d["time_unix_ms"] < hi:
                items.append(
                    {
                        "index": index,
                        "entry_hex": data.hex(),
                        "entry": d,
                        "inclusion_proof": [
                            h.hex() for h in session.source.inclusion_proof(index, cp.size)
                        ],
                    }
                )
        start += 1000
    doc = {
        "format": "hedui-audit-export/v1",
        "origin": session.origin,
        "checkpoint": note.decode(),
        "verifier_key": vkey(key_name(session.origin), session.public_key),
        "since": since.isoformat(),
        "until": until.isoformat(),
        "entries": items,
    }
    try:
        out.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    except OSError as e:
        raise unwritable(out, "--out", e) from None
    return len(items)


def verify_export(path: Path, session_key: Ed25519PublicKey, origin: str) -> tuple[Checkpoint, int]:
    """Check every entry of an export against its checkpoint, with the pinned log key."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ClientError(f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise ClientError(f"{path} is not a hedui audit export: {e}") from None
    try:
        try:
            cp = parse_and_verify(
                doc["checkpoint"].encode(), key_name(origin), session_key, origin=origin
            )
        except VerificationError as e:
            raise TamperingDetected(f"the export's checkpoint does not verify: {e}") from None
        for item in doc["entries"]:
            index = int(item["index"])
            data = bytes.fromhex(item["entry_hex"])
            proof = [bytes.fromhex(h) for h in item["inclusion_proof"]]
            try:
                merkle.verify_inclusion(merkle.leaf_hash(data), index, cp.size, proof, cp.root)
            except VerificationError as e:
                raise TamperingDetected(
                    f"entry {index}: its signed bytes or its proof were changed ({e})", index
                ) from None
            if describe_entry(data) != item["entry"]:
                raise TamperingDetected(
                    f"entry {index}: the readable copy differs from the signed bytes", index
                )
    except OSError as e:
        raise ClientError(f"cannot read {path}: {e.strerror}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ClientError(f"{path} is not a hedui audit export: {e}") from None
    return cp, len(doc["entries"])
