"""What an auditor runs: verify the whole log against its signed checkpoint, on their own.

The auditor trusts only the log's public key and the last checkpoint they saw (kept in a local
state file). Everything else is fetched and recomputed: every leaf from the entry bytes, the
root, the consistency with the last checkpoint. On a mismatch, the log's own signed history
(one checkpoint per append) is searched for the first size whose signed root differs from the
recomputed one, which names the entry that was changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hedui.audit import merkle
from hedui.audit.checkpoint import Checkpoint, parse_and_verify, vkey
from hedui.audit.errors import AuditError, VerificationError
from hedui.audit.log import key_name
from hedui.audit.store import LogStore
from hedui.proto.v1 import audit_pb2, common_pb2

PAGE = 1000


class LogSource(Protocol):
    """Where an auditor reads a log from: the AuditService, or the database directly."""

    def checkpoint(self, size: int = 0) -> bytes | None: ...
    def entries(self, start: int, end: int) -> list[tuple[int, bytes]]: ...
    def inclusion_proof(self, index: int, size: int) -> list[bytes]: ...
    def consistency_proof(self, size1: int, size2: int) -> list[bytes]: ...


class StoreSource:
    """Read the log straight from its database (when the deployment is down)."""

    def __init__(self, store: LogStore) -> None:
        self.store = store

    def checkpoint(self, size: int = 0) -> bytes | None:
        if size:
            return self.store.checkpoint_at(size)
        latest = self.store.latest_checkpoint()
        return None if latest is None else latest[1]

    def entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        return self.store.entries(start, end)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return self.store.inclusion_proof(index, size)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        return self.store.consistency_proof(size1, size2)


class TamperingDetected(AuditError):
    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


@dataclass
class AuditorState:
    """The last checkpoint this auditor verified, kept outside the log's database."""

    path: Path
    note: bytes | None = None
    verifier_key: str | None = None

    @classmethod
    def load(cls, path: Path) -> AuditorState:
        if not path.exists():
            return cls(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            return cls(path, doc["checkpoint"].encode(), doc.get("verifier_key"))
        except (ValueError, KeyError) as e:
            raise AuditError(
                f"{path} is not an auditor state file ({e}); move it away to start afresh"
            ) from None

    def save(self, note: bytes, verifier_key: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"checkpoint": note.decode(), "verifier_key": verifier_key}, indent=2)
        )
        tmp.replace(self.path)
        self.note, self.verifier_key = note, verifier_key


@dataclass
class Report:
    checkpoint: Checkpoint
    entries: int
    previous_size: int | None
    kinds: dict[str, int] = field(default_factory=dict)
    unsigned: int = 0  # entries stored beyond the latest signed checkpoint


def read_entries(source: LogSource, size: int) -> Iterator[tuple[int, bytes]]:
    """Every entry [0, size) in order, raising at the first missing or misplaced index."""
    expected = 0
    while expected < size:
        page = source.entries(expected, min(size, expected + PAGE))
        if not page:
            raise TamperingDetected(f"entry {expected} is missing: the log ends early", expected)
        for index, data in page:
            if index != expected:
                raise TamperingDetected(
                    f"entry {expected} is missing (the next entry stored is {index})", expected
                )
            yield index, data
            expected += 1


def _signed_root(
    source: LogSource, size: int, public_key: Ed25519PublicKey, origin: str
) -> bytes | None:
    note = source.checkpoint(size)
    return (
        None
        if note is None
        else parse_and_verify(note, key_name(origin), public_key, origin=origin).root
    )


def _locate(
    source: LogSource, tree: merkle.MemoryTree, public_key: Ed25519PublicKey, origin: str
) -> tuple[str, int | None]:
    """Find the first entry that no longer matches what the log signed.

    A binary search over the log's signed history (a checkpoint per append or batch) finds the
    first signed size whose root differs from the recomputed one. Inside a batch, each entry's
    inclusion proof against that signed root tells which entries changed, unless the stored
    hashes were rebuilt too.
    """
    good, bad = 0, tree.size
    while bad - good > 1:
        probe = (good + bad) // 2
        root = _signed_root(source, probe, public_key, origin)
        while root is None and probe < bad - 1:  # the log may batch: take the next signed size
            probe += 1
            root = _signed_root(source, probe, public_key, origin)
        if root is None:
            break
        if root == tree.root(probe):
            good = probe
        else:
            bad = probe
    if bad - good == 1:
        return f"entry {good} differs from the entry the log signed at tree size {bad}", good
    root = _signed_root(source, bad, public_key, origin)
    if root is not None:
        for i in range(good, bad):
            try:
                proof = source.inclusion_proof(i, bad)
                merkle.verify_inclusion(tree.subtree_hash(i, i + 1), i, bad, proof, root)
            except (VerificationError, AuditError, ValueError):
                if i + 1 < bad:
                    later = source.inclusion_proof(i + 1, bad)
                    try:
                        merkle.verify_inclusion(
                            tree.subtree_hash(i + 1, i + 2), i + 1, bad, later, root
                        )
                    except (VerificationError, AuditError, ValueError):
                        break  # the stored hashes were rebuilt as well: only the range is known
                return f"entry {i} differs from the entry the log signed at tree size {bad}", i
    return f"an entry in [{good}, {bad}) differs from what the log signed", None


def verify_log(
    source: LogSource,
    public_key: Ed25519PublicKey,
    origin: str,
    state: AuditorState | None = None,
) -> Report:
    """Verify everything; raise TamperingDetected saying what is wrong and where."""
    try:
        return _verify_log(source, public_key, origin, state)
    except TamperingDetected:
        raise
    except VerificationError as e:
        raise TamperingDetected(
            f"a signed checkpoint or proof of the log does not verify: {e}"
        ) from None


def _verify_log(
    source: LogSource,
    public_key: Ed25519PublicKey,
    origin: str,
    state: AuditorState | None,
) -> Report:
    note = source.checkpoint()
    if note is None:
        raise AuditError("the log has no signed checkpoint yet: nothing to verify")
    try:
        cp = parse_and_verify(note, key_name(origin), public_key, origin=origin)
    except VerificationError as e:
        raise TamperingDetected(
            f"the latest checkpoint is not signed by the log's key: {e}"
        ) from None
    tree = merkle.MemoryTree()
    kinds: dict[str, int] = {}
    for index, data in read_entries(source, cp.size):
        tree.append(data)
        try:
            entry = audit_pb2.AuditEntry.FromString(data)
        except Exception:
            entry = None
        if entry is None or entry.SerializeToString(deterministic=True) != data:
            raise TamperingDetected(f"entry {index} is not a canonical audit entry", index)
        kind = entry.WhichOneof("body") or "unknown"
        kinds[kind] = kinds.get(kind, 0) + 1
    if tree.root() != cp.root:
        where, changed = _locate(source, tree, public_key, origin)
        raise TamperingDetected(
            f"the entries do not hash to the signed root at size {cp.size}: {where}", changed
        )
    previous_size = None
    if (
        state is not None
        and state.verifier_key
        and state.verifier_key != vkey(key_name(origin), public_key)
    ):
        raise TamperingDetected(
            f"the log's public key is not the one you verified with before ({state.verifier_key}); "
            "a replaced key can sign any history"
        )
    if state is not None and state.note is not None:
        old = parse_and_verify(state.note, key_name(origin), public_key, origin=origin)
        previous_size = old.size
        if cp.size < old.size:
            raise TamperingDetected(
                f"the log was rolled back: it now has {cp.size} entries, you verified {old.size} before"
            )
        if old.size and tree.root(old.size) != old.root:
            where, changed = _locate(source, tree, public_key, origin)
            raise TamperingDetected(
                f"the log forked: its first {old.size} entries differ from the checkpoint you "
                f"verified before ({where})",
                changed,
            )
        if 0 < old.size < cp.size:
            proof = source.consistency_proof(old.size, cp.size)
            try:
                merkle.verify_consistency(old.size, cp.size, proof, old.root, cp.root)
            except VerificationError as e:
                raise TamperingDetected(
                    f"the log's consistency proof from {old.size} to {cp.size} fails: {e}"
                ) from None
    unsigned = len(source.entries(cp.size, cp.size + PAGE))
    if state is not None:
        state.save(note, vkey(key_name(origin), public_key))
    return Report(cp, tree.size, previous_size, kinds, unsigned)


def verify_inclusion(
    source: LogSource, public_key: Ed25519PublicKey, origin: str, index: int
) -> tuple[bytes, Checkpoint, list[bytes]]:
    """Entry ``index``, the checkpoint it is proven in, and the proof (verified here)."""
    note = source.checkpoint()
    if note is None:
        raise AuditError("the log has no signed checkpoint yet")
    cp = parse_and_verify(note, key_name(origin), public_key, origin=origin)
    if not 0 <= index < cp.size:
        raise AuditError(
            f"index {index} is outside the log, which has {cp.size} entries (0..{cp.size - 1})"
        )
    page = source.entries(index, index + 1)
    if not page or page[0][0] != index:
        raise TamperingDetected(f"entry {index} is missing", index)
    data = page[0][1]
    proof = source.inclusion_proof(index, cp.size)
    merkle.verify_inclusion(merkle.leaf_hash(data), index, cp.size, proof, cp.root)
    return data, cp, proof


_DECISIONS = {v: k for k, v in common_pb2.Decision.items()}
_OUTCOMES = {v: k for k, v in common_pb2.Outcome.items()}


def describe_entry(data: bytes) -> dict[str, Any]:
    """An entry as plain data for a person or a JSON export (bytes as hex)."""
    entry = audit_pb2.AuditEntry.FromString(data)
    kind = entry.WhichOneof("body") or "unknown"
    out: dict[str, Any] = {
        "kind": kind,
        "time_unix_ms": entry.time_unix_ms,
        "caller": entry.caller,
        "caller_role": entry.caller_role,
    }
    if kind == "unknown":
        return out
    body = getattr(entry, kind)
    for f, value in body.ListFields():
        # a body field never overwrites the entry's own: a search *for* a caller is
        # ``search_caller``, while ``caller`` stays the authenticated party that searched
        name = f.name if f.name not in out else f"{kind}_{f.name}"
        if isinstance(value, bytes):
            out[name] = value.hex()
        elif name == "decision":
            out[name] = _DECISIONS.get(value, str(value))
        elif name == "rules":
            out[name] = [
                {
                    "id": r.id,
                    "outcome": _OUTCOMES.get(r.outcome, "?"),
                    "threshold": r.threshold if r.HasField("threshold") else None,
                }
                for r in value
            ]
        elif name == "connectors_failed":
            out[name] = [{"connector_id": x.connector_id, "reason": x.reason} for x in value]
        elif name == "answer_digests":
            out[name] = {x.connector_id: x.digest.hex() for x in value}
        elif name == "consent":
            out[name] = {
                "case_number": value.case_number,
                "signed_on": value.signed_on,
                "form_sha256": value.form_sha256.hex(),
                "signer_audit_tokens": [t.hex() for t in value.signer_audit_tokens],
                "standing": value.standing,
            }
        elif f.is_repeated:
            out[name] = list(value)
        else:
            out[name] = value
    return out


@dataclass
class DecryptionCheck:
    """The key custodian's journal against the log (see hedui.custodian.witness)."""

    decrypted: int = 0
    refused: int = 0
    forks: list[str] = field(default_factory=list)  # roots the log never had: tampering
    not_logged: list[str] = field(default_factory=list)  # decryptions of no logged request
    without_verdict: list[str] = field(default_factory=list)  # query ids without an outcome


def check_decryptions(
    source: LogSource, size: int, records: Iterable[Mapping[str, Any]]
) -> DecryptionCheck:
    """Every decryption the custodian journaled must be of request entries of the log's first
    ``size`` entries, under a root the log really had, and end in a verdict (or an outcome) entry
    of the same query id; anything else is listed."""
    tree = merkle.MemoryTree()
    requests: dict[int, str] = {}
    outcomes: set[str] = set()
    for index, data in read_entries(source, size):
        tree.append(data)
        entry = audit_pb2.AuditEntry.FromString(data)
        if entry.HasField("request"):
            requests[index] = entry.request.query_id
        elif entry.HasField("verdict"):
            outcomes.add(entry.verdict.query_id)
    out = DecryptionCheck()
    seen: set[str] = set()
    for r in records:
        if r.get("event") == "refused":
            out.refused += 1
            continue
        if r.get("event") != "decrypted":
            continue
        out.decrypted += 1
        qid = str(r.get("query_id", ""))
        if qid in seen:
            out.not_logged.append(f"query {qid}: decrypted more than once")
            continue
        seen.add(qid)
        witnessed = int(r.get("tree_size", 0))
        if witnessed > tree.size:
            out.forks.append(
                f"query {qid}: the custodian was shown a log of {witnessed} entries, "
                f"this log has {tree.size}"
            )
            continue
        if tree.root(witnessed).hex() != r.get("root"):
            out.forks.append(
                f"query {qid}: the custodian was shown a root at size {witnessed} this log "
                "never had (a forked history)"
            )
            continue
        leaves = [int(i) for i in r.get("request_leaves", [])]
        if not leaves or any(requests.get(i) != qid for i in leaves):
            out.not_logged.append(f"query {qid}: its request entries are not in the log")
        elif qid not in outcomes:
            out.without_verdict.append(qid)
    return out


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The records of the key custodian's journal (JSON lines; a cut-off last line is skipped)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out
