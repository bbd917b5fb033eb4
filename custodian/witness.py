"""The key custodian as a witness of the audit log, and its journal of decryptions.

The custodian decrypts only for a query id whose request entries are in the audit log: the
service proves each entry's inclusion in a checkpoint signed by the log key, and that
checkpoint's consistency with the last one the custodian witnessed (it keeps that state in its
own directory and refuses a fork or a rollback). Every decryption, and every refusal, is
appended to the custodian's own journal, which ``hedui audit verify`` checks against the log:
an auditor counts decryptions against verdicts, and sees a decryption without a verdict, or a
checkpoint the log never had.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hedui.audit import merkle
from hedui.audit.auditor import read_journal
from hedui.audit.checkpoint import Checkpoint, parse_and_verify
from hedui.audit.errors import VerificationError
from hedui.audit.log import key_name
from hedui.core.custody import LogEvidence
from hedui.custodian.errors import Refused
from hedui.proto.v1 import audit_pb2


class WitnessMoved(Refused):
    """The evidence proves consistency from a size the custodian is no longer at."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the custodian has witnessed the log at size {size}; prove from there")
        self.size = size


class LogWitness:
    def __init__(self, log_key: Ed25519PublicKey, origin: str, state: Path | None) -> None:
        self._key = log_key
        self._origin = origin
        self._state = state
        self._lock = threading.Lock()
        self._size, self._root = 0, merkle.EMPTY_ROOT
        if state is not None and state.exists():
            try:
                doc = json.loads(state.read_text(encoding="utf-8"))
                self._size, self._root = int(doc["size"]), bytes.fromhex(doc["root"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise Refused(f"{state}: the witness state is unreadable ({e})") from None

    @property
    def size(self) -> int:
        return self._size

    def admit(self, query_id: str, evidence: LogEvidence, households: int) -> Checkpoint:
        """Check that ``households`` request entries of ``query_id`` are in a checkpoint
        consistent with everything witnessed so far; then witness that checkpoint."""
        try:
            cp = parse_and_verify(
                evidence.checkpoint, key_name(self._origin), self._key, origin=self._origin
            )
        except VerificationError as e:
            raise Refused(f"the log checkpoint does not verify: {e}") from None
        if len(evidence.requests) != households:
            raise Refused(
                f"{households} logged request(s) are needed, {len(evidence.requests)} were shown"
            )
        if len({r.leaf_index for r in evidence.requests}) != households:
            raise Refused("one logged request is shown twice")
        for r in evidence.requests:
            try:
                entry = audit_pb2.AuditEntry.FromString(r.entry)
            except Exception:
                raise Refused("a logged request is not an audit entry") from None
            if not entry.HasField("request") or entry.request.query_id != query_id:
                raise Refused(f"entry {r.leaf_index} is not a request of this query")
            try:
                merkle.verify_inclusion(
                    merkle.leaf_hash(r.entry),
                    r.leaf_index,
                    cp.size,
                    list(r.inclusion_proof),
                    cp.root,
                )
            except VerificationError:
                raise Refused(
                    f"entry {r.leaf_index} is not proven to be in the signed log"
                ) from None
        with self._lock:
            if evidence.witness_size != self._size:
                raise WitnessMoved(self._size)
            proof = list(evidence.consistency_proof)
            try:
                if 0 < self._size <= cp.size:
                    merkle.verify_consistency(self._size, cp.size, proof, self._root, cp.root)
                elif cp.size < self._size:
                    merkle.verify_consistency(cp.size, self._size, proof, cp.root, self._root)
            except VerificationError:
                raise Refused(
                    f"the log at size {cp.size} is not consistent with the log the custodian "
                    f"witnessed at size {self._size}: a fork or a rollback"
                ) from None
            if cp.size > self._size:
                self._size, self._root = cp.size, cp.root
                self._save()
        return cp

    def _save(self) -> None:
        if self._state is None:
            return
        tmp = self._state.with_suffix(".tmp")
        tmp.write_text(json.dumps({"size": self._size, "root": self._root.hex()}), encoding="utf-8")
        os.replace(tmp, self._state)


class DecryptionJournal:
    """The custodian's own append-only record of every decryption and refusal (JSON lines)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self.records: list[dict[str, Any]] = []  # in memory when there is no file

    def decrypted(self) -> list[str]:
        """The query ids decrypted so far, from the journal (a restart forgets nothing)."""
        records = (
            read_journal(self._path)
            if self._path is not None and self._path.exists()
            else self.records
        )
        return [str(r.get("query_id", "")) for r in records if r.get("event") == "decrypted"]

    def record(self, **fields: Any) -> None:
        line = json.dumps(fields, sort_keys=True, ensure_ascii=False)
        with self._lock:
            if self._path is None:
                self.records.append(fields)
                return
            with self._path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
