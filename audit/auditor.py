"""What an auditor runs: verify the whole log against its signed checkpoint, on their own.

The auditor trusts only the log's public key and the last checkpoint they saw (kept in a local
state file), and, when it pinned them, the verifier keys of the log's witnesses: the latest
checkpoint must then carry their cosignatures (c2sp.org/tlog-cosignature; issue #23), else it
is reported as not cosigned (:class:`NotCosigned`) before anything is saved, and a cosignature
by a pinned witness that does not verify is tampering. Everything else is fetched and recomputed: every leaf from the entry bytes, the
root, the consistency with the last checkpoint. On a mismatch, the entry changed is named by
the hash of each entry the auditor verified before (kept beside its state), else by the log's
own signed history (one checkpoint per append or batch): the first signed size whose root
differs from the recomputed one.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hedui.audit import merkle
from hedui.audit.checkpoint import Checkpoint, parse_and_verify, vkey
from hedui.audit.cosignature import Cosignature, WitnessPolicy
from hedui.audit.errors import AuditError, Unwitnessed, VerificationError
from hedui.audit.log import key_name
from hedui.audit.store import LogStore
from hedui.core import judgement
from hedui.core.errors import CryptoError
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


class NotCosigned(AuditError):
    """The latest checkpoint, signed by the log's key, lacks the cosignatures of the witnesses
    the auditor pinned: it may be a history shown to this auditor alone. Nothing was saved."""

    def __init__(self, message: str, checkpoint: Checkpoint) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


@dataclass
class AuditorState:
    """What this auditor verified, kept outside the log's database, by log origin: for each log,
    the last checkpoint verified and the log's verifier key. A log of another origin (another
    deployment) is another log, never tampering with this one.

    Beside the file, ``<file>.<origin digest>.leaves`` keeps the hash of every entry verified (32
    bytes each): a later change to any of them is then named exactly, even when the stored
    hashes were rebuilt or the log's history was signed again."""

    path: Path
    logs: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> AuditorState:
        if not path.exists():
            return cls(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if "logs" in doc:
                logs = {
                    str(origin): {
                        "checkpoint": str(r["checkpoint"]),
                        "verifier_key": str(r.get("verifier_key") or ""),
                    }
                    for origin, r in doc["logs"].items()
                }
            else:  # one log per file, as hedui 0.x wrote it: keyed by its checkpoint's origin
                note = str(doc["checkpoint"])
                logs = {
                    note.split("\n", 1)[0]: {
                        "checkpoint": note,
                        "verifier_key": str(doc.get("verifier_key") or ""),
                    }
                }
            return cls(path, logs)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise AuditError(
                f"{path} is not an auditor state file ({e}); move it away to start afresh"
            ) from None

    def note(self, origin: str) -> bytes | None:
        record = self.logs.get(origin)
        return None if record is None else record["checkpoint"].encode()

    def verifier_key(self, origin: str) -> str | None:
        record = self.logs.get(origin)
        return (record or {}).get("verifier_key") or None

    def leaves_path(self, origin: str) -> Path:
        digest = hashlib.sha256(origin.encode()).hexdigest()[:16]
        return self.path.with_name(f"{self.path.name}.{digest}.leaves")

    def leaves(self, origin: str) -> list[bytes] | None:
        """The entry hashes kept with the last checkpoint verified, or None (none kept, or the
        file does not hold exactly that many)."""
        try:
            raw = self.leaves_path(origin).read_bytes()
        except OSError:
            return None
        if len(raw) % merkle.HASH_SIZE:
            return None
        n = merkle.HASH_SIZE
        return [raw[i : i + n] for i in range(0, len(raw), n)]

    def save(
        self, origin: str, note: bytes, verifier_key: str, leaves: list[bytes] | None = None
    ) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if leaves is not None:
            target = self.leaves_path(origin)
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(b"".join(leaves))
            tmp.replace(target)
        self.logs[origin] = {"checkpoint": note.decode(), "verifier_key": verifier_key}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"logs": self.logs}, indent=2))
        tmp.replace(self.path)


@dataclass
class Report:
    checkpoint: Checkpoint
    entries: int
    previous_size: int | None
    kinds: dict[str, int] = field(default_factory=dict)
    unsigned: int = 0  # entries stored beyond the latest signed checkpoint
    # the pinned witnesses' cosignatures of the checkpoint (None: no witness was pinned)
    cosignatures: tuple[Cosignature, ...] | None = None


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


def _first_unlike(tree: merkle.MemoryTree, known: list[bytes]) -> int | None:
    """The first entry whose hash, recomputed from its bytes, is not the one kept."""
    for i, h in enumerate(known[: tree.size]):
        if tree.subtree_hash(i, i + 1) != h:
            return i
    return None


def _locate(
    source: LogSource,
    tree: merkle.MemoryTree,
    public_key: Ed25519PublicKey,
    origin: str,
    *,
    known: list[bytes] | None = None,
    upto: int | None = None,
) -> tuple[str, int | None]:
    """Find the first entry that no longer matches what was verified or signed.

    First against the hashes of the entries this auditor verified before (``known``, from its
    state): exact, whatever the log re-signed or rebuilt. Beyond them, a binary search over the
    log's signed history (a checkpoint per append or batch; a probe without one takes the
    nearest signed size above, else below) finds the last signed size whose root the entries
    still give (``good``) and the next one, whose root they do not (``bad``): one entry apart,
    that is the entry. A batch signed once holds several: each one's inclusion proof against
    the signed root says which changed, unless the stored hashes were rebuilt as well.
    """
    good = 0
    if known:
        changed = _first_unlike(tree, known)
        if changed is not None:
            return (
                f"entry {changed} differs from the entry you verified before "
                f"(your state keeps the hash of each of the {len(known)} entries it verified)",
                changed,
            )
        good = min(len(known), tree.size)
    bad = tree.size if upto is None else upto
    roots: dict[int, bytes | None] = {}

    def signed(size: int) -> bytes | None:
        if size not in roots:
            roots[size] = _signed_root(source, size, public_key, origin)
        return roots[size]

    def nearest(probe: int) -> int | None:
        for size in itertools.chain(range(probe, bad), range(probe - 1, good, -1)):
            if signed(size) is not None:
                return size
        return None

    while bad - good > 1:
        size = nearest((good + bad) // 2)
        if size is None:
            break
        if signed(size) == tree.root(size):
            good = size
        else:
            bad = size
    if bad - good == 1:
        return f"entry {good} differs from the entry the log signed at tree size {bad}", good
    root = signed(bad)
    failed: list[int] = []
    if root is not None:
        for i in range(good, bad):
            try:
                proof = source.inclusion_proof(i, bad)
                merkle.verify_inclusion(tree.subtree_hash(i, i + 1), i, bad, proof, root)
            except (VerificationError, AuditError, ValueError):
                failed.append(i)
        if failed and len(failed) < bad - good:  # the stored tree still proves the others
            i = failed[0]
            return f"entry {i} differs from the entry the log signed at tree size {bad}", i
    return (
        f"an entry in [{good}, {bad}) differs from what the log signed: the log signed these "
        f"{bad - good} entries together (one checkpoint, at size {bad}) and its stored hashes "
        "were rebuilt as well, so no signature tells which; an auditor who verified the log "
        "before the change is told the entry (the state file keeps each entry's hash)",
        None,
    )


def verify_log(
    source: LogSource,
    public_key: Ed25519PublicKey,
    origin: str,
    state: AuditorState | None = None,
    witnesses: WitnessPolicy | None = None,
) -> Report:
    """Verify everything; raise TamperingDetected saying what is wrong and where, and, with
    ``witnesses``, NotCosigned when the latest checkpoint lacks their cosignatures."""
    try:
        return _verify_log(source, public_key, origin, state, witnesses)
    except (TamperingDetected, NotCosigned):
        raise
    except VerificationError as e:
        raise TamperingDetected(
            f"a signed checkpoint or proof of the log does not verify: {e}"
        ) from None


def _known_leaves(state: AuditorState, origin: str, old: Checkpoint) -> list[bytes] | None:
    """The entry hashes the state keeps, if they are those of the checkpoint it verified."""
    leaves = state.leaves(origin)
    if leaves is None or len(leaves) != old.size:
        return None
    return leaves if merkle.root_from_leaf_hashes(leaves) == old.root else None


def check_cosigned(
    note: bytes, cp: Checkpoint, witnesses: WitnessPolicy, now: float | None = None
) -> tuple[Cosignature, ...]:
    """The pinned witnesses' cosignatures of ``note`` (the checkpoint ``cp``, its log signature
    verified); NotCosigned when fewer than their quorum cosigned it, TamperingDetected when a
    cosignature by one of them does not verify (or is dated in the future)."""
    try:
        return witnesses.check(note, now=time.time() if now is None else now)
    except Unwitnessed as e:
        raise NotCosigned(
            f"the checkpoint at size {cp.size} is not cosigned by the log's witness: {e}. A "
            "checkpoint no witness cosigned may be a history shown to you alone; verify again "
            "when the witness has cosigned it, or ask the service's operator why it has not",
            cp,
        ) from None
    except VerificationError as e:
        raise TamperingDetected(
            f"a witness cosignature of the checkpoint at size {cp.size} does not verify: {e}"
        ) from None


def _verify_log(
    source: LogSource,
    public_key: Ed25519PublicKey,
    origin: str,
    state: AuditorState | None,
    witnesses: WitnessPolicy | None = None,
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
    cosigned = None if witnesses is None else check_cosigned(note, cp, witnesses)
    key = vkey(key_name(origin), public_key)
    pinned = None if state is None else state.verifier_key(origin)
    if state is not None and pinned and pinned != key:
        raise TamperingDetected(
            f"the log's public key is not the one you verified with before ({pinned}); "
            f"a replaced key can sign any history. If this is a new deployment, verify it with "
            f"a state file of its own: --state FILE, or remove {state.path} after checking why "
            "the key changed"
        )
    old = None
    known = None
    if state is not None and (old_note := state.note(origin)) is not None:
        old = parse_and_verify(old_note, key_name(origin), public_key, origin=origin)
        known = _known_leaves(state, origin, old)
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
        where, changed = _locate(source, tree, public_key, origin, known=known)
        raise TamperingDetected(
            f"the entries do not hash to the signed root at size {cp.size}: {where}", changed
        )
    if old is not None and cp.size < old.size:
        raise TamperingDetected(
            f"the log was rolled back: it now has {cp.size} entries, you verified {old.size} before"
        )
    if old is not None and old.size and tree.root(old.size) != old.root:
        # the log's key signed another history: its signatures no longer say what it was
        if known is not None:
            where, changed = _locate(source, tree, public_key, origin, known=known)
        elif _signed_root(source, old.size, public_key, origin) == old.root:
            where, changed = _locate(source, tree, public_key, origin, upto=old.size)
        else:
            where, changed = (
                "the log signed its history again, and your state file keeps no entry hashes "
                "(written by an earlier hedui) to name the entry changed",
                None,
            )
        raise TamperingDetected(
            f"the log forked: its first {old.size} entries differ from the checkpoint you "
            f"verified before ({where})",
            changed,
        )
    previous_size = None if old is None else old.size
    if old is not None and 0 < old.size < cp.size:
        proof = source.consistency_proof(old.size, cp.size)
        try:
            merkle.verify_consistency(old.size, cp.size, proof, old.root, cp.root)
        except VerificationError as e:
            raise TamperingDetected(
                f"the log's consistency proof from {old.size} to {cp.size} fails: {e}"
            ) from None
    unsigned = len(source.entries(cp.size, cp.size + PAGE))
    if state is not None:
        state.save(origin, note, key, tree.leaf_hashes())
    return Report(cp, tree.size, previous_size, kinds, unsigned, cosigned)


def verify_inclusion(
    source: LogSource, public_key: Ed25519PublicKey, origin: str, index: int
) -> tuple[bytes, Checkpoint, list[bytes]]:
    """Entry ``index``, the checkpoint it is proven in, and the proof (verified here)."""
    receipt = prove_inclusion(source, public_key, origin, index)
    return receipt.entry, receipt.checkpoint, receipt.proof


@dataclass(frozen=True)
class InclusionReceipt:
    """An entry, the signed checkpoint and the proof that it is in the checkpoint's tree:
    everything a third party needs to check it with the log's public key alone."""

    index: int
    entry: bytes
    note: bytes  # the signed checkpoint (C2SP signed note)
    checkpoint: Checkpoint
    proof: list[bytes]

    def to_json(self) -> dict[str, Any]:
        """The receipt as JSON (``hedui audit prove --json``); see ``check_receipt``."""
        return {
            "format": "hedui-audit-receipt/v1",
            "origin": self.checkpoint.origin,
            "index": self.index,
            "tree_size": self.checkpoint.size,
            "root": self.checkpoint.root.hex(),
            "checkpoint": self.note.decode(),
            "entry_base64": base64.b64encode(self.entry).decode(),
            "leaf_hash": merkle.leaf_hash(self.entry).hex(),
            "proof": [h.hex() for h in self.proof],
        }


def check_receipt(doc: Mapping[str, Any], public_key: Ed25519PublicKey) -> tuple[int, bytes]:
    """Check a receipt of ``InclusionReceipt.to_json`` with nothing but the log's public key:
    the checkpoint's signature (its key named after its origin), the leaf hash of the entry's
    bytes, the inclusion proof against the signed root. Answers (index, entry bytes)."""
    try:
        note = str(doc["checkpoint"]).encode()
        origin = note.decode().split("\n", 1)[0]
        cp = parse_and_verify(note, key_name(origin), public_key, origin=origin)
        index, data = int(doc["index"]), base64.b64decode(str(doc["entry_base64"]), validate=True)
        proof = [bytes.fromhex(str(h)) for h in doc["proof"]]
        leaf = merkle.leaf_hash(data)
        if "leaf_hash" in doc and bytes.fromhex(str(doc["leaf_hash"])) != leaf:
            raise VerificationError(f"entry {index}: its leaf hash is not that of its bytes")
        if int(doc.get("tree_size", cp.size)) != cp.size:
            raise VerificationError("the receipt's tree size is not its checkpoint's")
        merkle.verify_inclusion(leaf, index, cp.size, proof, cp.root)
    except (KeyError, TypeError, ValueError) as e:
        raise VerificationError(f"not a hedui audit receipt: {e}") from None
    return index, data


def prove_inclusion(
    source: LogSource, public_key: Ed25519PublicKey, origin: str, index: int
) -> InclusionReceipt:
    """Entry ``index`` proven in the latest signed checkpoint (verified here)."""
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
    return InclusionReceipt(index, data, note, cp, proof)


@dataclass(frozen=True)
class ConsistencyReceipt:
    """The proof that the log's tree of ``second`` entries extends its tree of ``first``,
    with both roots: signed (with the note) where the log signed a checkpoint at that size,
    else computed here from the entries."""

    first: int
    second: int
    first_root: bytes
    second_root: bytes
    first_note: bytes | None
    second_note: bytes | None
    proof: list[bytes]

    def to_json(self, origin: str) -> dict[str, Any]:
        def side(size: int, root: bytes, note: bytes | None) -> dict[str, Any]:
            return {
                "size": size,
                "root": root.hex(),
                "signed": note is not None,
                "checkpoint": None if note is None else note.decode(),
            }

        return {
            "format": "hedui-audit-consistency/v1",
            "origin": origin,
            "first": side(self.first, self.first_root, self.first_note),
            "second": side(self.second, self.second_root, self.second_note),
            "proof": [h.hex() for h in self.proof],
        }


def prove_consistency(
    source: LogSource,
    public_key: Ed25519PublicKey,
    origin: str,
    first: int,
    second: int | None = None,
) -> ConsistencyReceipt:
    """The consistency proof from tree size ``first`` to ``second`` (default: the latest signed
    size), verified here against the roots; a proof that fails is TamperingDetected."""
    latest = source.checkpoint()
    if latest is None:
        raise AuditError("the log has no signed checkpoint yet")
    cp = parse_and_verify(latest, key_name(origin), public_key, origin=origin)
    second = cp.size if second is None else second
    if not 0 < first <= second <= cp.size:
        raise AuditError(
            f"no consistency proof from size {first} to {second}: the sizes must be "
            f"1 <= FIRST <= SECOND <= {cp.size}, the size of the latest signed checkpoint"
        )
    notes = {s: (latest if s == cp.size else source.checkpoint(s)) for s in {first, second}}
    roots: dict[int, bytes] = {}
    for size, note in notes.items():
        if note is not None:
            signed = parse_and_verify(note, key_name(origin), public_key, origin=origin)
            if signed.size != size:
                raise TamperingDetected(
                    f"the checkpoint served for size {size} is of {signed.size}"
                )
            roots[size] = signed.root
    if len(roots) < len(notes):  # a size the log signed no checkpoint at: from the entries
        tree = merkle.MemoryTree()
        for _, data in read_entries(source, second):
            tree.append(data)
        roots = {s: roots.get(s) or tree.root(s) for s in notes}
    proof = source.consistency_proof(first, second) if first < second else []
    try:
        merkle.verify_consistency(first, second, proof, roots[first], roots[second])
    except VerificationError as e:
        raise TamperingDetected(
            f"the log's consistency proof from {first} to {second} fails: {e}"
        ) from None
    return ConsistencyReceipt(
        first, second, roots[first], roots[second], notes[first], notes[second], proof
    )


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


@dataclass
class JudgementCheck:
    """The verdict entries against the key custodian's signed decision records (issue #24)."""

    checked: int = 0
    without: int = 0  # verdict entries without a record (written before issue #24)
    problems: list[str] = field(default_factory=list)  # tampering


def check_judgements(source: LogSource, size: int, key: Ed25519PublicKey) -> JudgementCheck:
    """Every verdict entry of the log's first ``size`` entries must carry the decision record the
    key custodian signed for it, and say what the record says: the same query, request,
    applicant, programme, region, date, decision, rules, policy version and household size, for
    a request entry of the log (its leaf hash). A verdict entry the service changed, or gave
    another household's record, is listed."""
    out = JudgementCheck()
    requests: dict[tuple[str, str], bytes] = {}  # (query id, request id) -> leaf hash
    for index, data in read_entries(source, size):
        entry = audit_pb2.AuditEntry.FromString(data)
        if entry.HasField("request"):
            requests[(entry.request.query_id, entry.request.request_id)] = merkle.leaf_hash(data)
            continue
        if not entry.HasField("verdict") or entry.verdict.error:
            continue
        v = entry.verdict
        if not v.judgement_record:
            out.without += 1
            continue
        try:
            r = judgement.verify_record(key, v.judgement_record, v.judgement_signature)
        except CryptoError:
            out.problems.append(f"entry {index}: its decision is not signed by the key custodian")
            continue
        differ = [
            name
            for name, signed, logged in (
                ("query id", r.query_id, v.query_id),
                ("request id", r.request_id, v.request_id),
                ("applicant", r.applicant_audit_token, v.applicant_audit_token),
                ("programme", r.program, v.program),
                ("region", r.region, v.region),
                ("date", r.as_of, v.as_of),
                ("decision", r.decision, v.decision),
                ("rules", list(r.rules), list(v.rules)),
                ("policy version", r.policy_version, v.policy_version),
                ("household size", r.household_size, v.household_size),
                ("request entry", r.request_leaf_hash, requests.get((v.query_id, v.request_id))),
            )
            if signed != logged
        ]
        if r.refused:
            differ.append("refusal (the custodian decided nothing)")
        if differ:
            out.problems.append(
                f"entry {index}: {', '.join(differ)} not as the key custodian signed"
            )
        else:
            out.checked += 1
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
