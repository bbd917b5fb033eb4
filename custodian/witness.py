"""The key custodian as a witness of the audit log, and its journal of decryptions.

The custodian decrypts only for a query id whose request entries are in the audit log: the
service proves each entry's inclusion in a checkpoint signed by the log key, and that the
checkpoint is on the one chain of checkpoints the custodian has witnessed (it keeps the latest
in its own directory and refuses a fork or a rollback). A checkpoint is on that chain when

- it is one the custodian witnessed (same size, same root) and still remembers (the last
  :data:`HISTORY` of them; after a restart, the persisted latest): no proof is needed, and
  many requests proven in the same witnessed checkpoint do not race each other;
- it is larger than the latest: a consistency proof from the latest to it (only from the
  latest: a proof from an older witnessed checkpoint would not exclude a fork after it), and
  it becomes the latest;
- it is smaller and not remembered: a consistency proof from it to the latest.

Every remembered checkpoint was proven to be a prefix of the latest, so accepting one never
accepts a fork; a checkpoint of a remembered size with another root is one, and is refused.

Before any of this, the checkpoint must carry the cosignatures of the log's witnesses
(:class:`~hedui.audit.cosignature.WitnessPolicy`, c2sp.org/tlog-cosignature; issue #23): a
witness that is not the service cosigns only checkpoints that extend every one it cosigned
before, so a history forked for the custodian alone (signed with the service's own log key)
is refused here, with no further check and nothing decrypted. A custodian enrolled into a
running log starts from the checkpoint pinned in its config (``first``), not from the first
one it is shown.

Every decryption, and every refusal, is appended to the custodian's own journal, which
``hedui audit verify`` checks against the log: an auditor counts decryptions against verdicts,
and sees a decryption without a verdict, or a checkpoint the log never had. A journal or witness
state that cannot be written stops the request before anything is released
(:class:`~hedui.custodian.errors.Unavailable`).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hedui.audit import merkle
from hedui.audit.auditor import read_journal
from hedui.audit.checkpoint import Checkpoint, parse_and_verify, split_note
from hedui.audit.cosignature import WitnessPolicy
from hedui.audit.errors import Unwitnessed, VerificationError
from hedui.audit.log import key_name
from hedui.core.custody import LogEvidence
from hedui.custodian.errors import Refused, Unavailable
from hedui.proto.v1 import audit_pb2

HISTORY = 4096  # witnessed checkpoints remembered (size -> root): minutes of a busy log


class WitnessMoved(Refused):
    """The evidence needs a consistency proof (its checkpoint is not one the custodian
    remembers) from a size the custodian is not at: prove from ``size`` (the latest it
    witnessed), or in the checkpoint of that size."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the custodian has witnessed the log at size {size}; prove from there")
        self.size = size


class LogWitness:
    """The chain of log checkpoints the custodian has witnessed: the latest (persisted in
    ``state``) and the last ``history`` of them in memory, every one a prefix of the latest."""

    def __init__(
        self,
        log_key: Ed25519PublicKey,
        origin: str,
        state: Path | None,
        *,
        history: int = HISTORY,
        witnesses: WitnessPolicy | None = None,
        first: tuple[int, bytes] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``witnesses``: whose cosignatures every checkpoint must carry (None: none, for
        tests of the chain alone; `hedui serve custodian` always names them). ``first``: the
        (size, root) pinned at enrolment, the start of the chain while ``state`` does not
        exist yet."""
        self._key = log_key
        self._origin = origin
        self._state = state
        self._witnesses = witnesses
        self._clock = clock
        self._lock = threading.Lock()
        self._size, self._root = 0, merkle.EMPTY_ROOT
        self._limit = max(1, history)
        self._seen: dict[int, bytes] = {}  # size -> root of witnessed checkpoints
        if state is not None and state.exists():
            try:
                doc = json.loads(state.read_text(encoding="utf-8"))
                self._size, self._root = int(doc["size"]), bytes.fromhex(doc["root"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise Refused(f"{state}: the witness state is unreadable ({e})") from None
        elif first is not None:
            self._size, self._root = first
        if self._size:
            self._seen[self._size] = self._root

    @property
    def size(self) -> int:
        """The size of the latest checkpoint witnessed."""
        return self._size

    def witnessed(self, size: int) -> bool:
        """Whether the checkpoint of this size is one the custodian remembers witnessing."""
        with self._lock:
            return size in self._seen

    def _remember(self, size: int, root: bytes) -> None:
        self._seen[size] = root
        if len(self._seen) > self._limit:  # forget the oldest; never the latest
            del self._seen[min(self._seen)]

    def admit(self, query_id: str, evidence: LogEvidence, households: int) -> Checkpoint:
        """Check that ``households`` request entries of ``query_id`` are in a checkpoint on the
        chain witnessed so far (see the module's docstring); then witness that checkpoint.
        WitnessMoved when a consistency proof is needed from another size than the evidence's;
        Unavailable (nothing witnessed) when the new latest cannot be saved. A checkpoint
        without the witnesses' cosignatures is refused first, before anything else is read."""
        self.check_cosigned(evidence.checkpoint)
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
            seen = self._seen.get(cp.size)
            if seen is not None:  # on the witnessed chain, or a fork of it: no proof needed
                if seen != cp.root:
                    raise Refused(
                        f"the log at size {cp.size} has another root than the log the custodian "
                        f"witnessed at that size: a fork"
                    )
                return cp
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
                self._save(cp.size, cp.root)  # first on disk: a failure leaves nothing changed
                self._size, self._root = cp.size, cp.root
            if cp.size:
                self._remember(cp.size, cp.root)
        return cp

    def check_cosigned(self, note: bytes) -> None:
        """Refused unless ``note`` carries valid cosignatures of the witnesses' quorum."""
        if self._witnesses is None:
            return
        try:
            split_note(note)
        except VerificationError as e:
            raise Refused(f"the log checkpoint does not verify: {e}") from None
        try:
            self._witnesses.check(note, now=self._clock())
        except Unwitnessed as e:
            raise Refused(
                f"the log checkpoint is not cosigned by the log's witness: {e}; the custodian "
                "decrypts only under a checkpoint a witness that is not the service cosigned"
            ) from None
        except VerificationError as e:
            raise Refused(
                f"a witness cosignature of the log checkpoint does not verify: {e}"
            ) from None

    def _save(self, size: int, root: bytes) -> None:
        if self._state is None:
            return
        tmp = self._state.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"size": size, "root": root.hex()}), encoding="utf-8")
            os.replace(tmp, self._state)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise Unavailable("witness state", "WITNESS_STATE_UNWRITABLE", e) from None


class DecryptionJournal:
    """The custodian's own append-only record of every decryption and refusal (JSON lines)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self.records: list[dict[str, Any]] = []  # in memory when there is no file

    @property
    def path(self) -> Path | None:
        return self._path

    def last_witnessed(self) -> tuple[int, str] | None:
        """The log's size and root (hex) of the last decryption journalled, if any."""
        records = (
            read_journal(self._path)
            if self._path is not None and self._path.exists()
            else self.records
        )
        for r in reversed(records):
            if r.get("event") == "decrypted" and "tree_size" in r and "root" in r:
                return int(r["tree_size"]), str(r["root"])
        return None

    def decrypted(self) -> list[str]:
        """The query ids decrypted so far, from the journal (a restart forgets nothing)."""
        records = (
            read_journal(self._path)
            if self._path is not None and self._path.exists()
            else self.records
        )
        return [str(r.get("query_id", "")) for r in records if r.get("event") == "decrypted"]

    def writable(self) -> None:
        """Unavailable unless the journal can be opened for appending (checked before a
        decryption, so that an unwritable journal stops it before anything is decrypted)."""
        if self._path is None:
            return
        try:
            with self._path.open("ab"):
                pass
        except OSError as e:
            raise Unavailable("journal", "JOURNAL_UNWRITABLE", e) from None

    def record(self, **fields: Any) -> None:
        """Append one record, on disk (fsync) before this returns; Unavailable when it cannot
        be written, and then the journal is left as it was (a partial line is cut off, so that
        the next record is not glued to it)."""
        line = (json.dumps(fields, sort_keys=True, ensure_ascii=False) + "\n").encode()
        with self._lock:
            if self._path is None:
                self.records.append(fields)
                return
            try:
                fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            except OSError as e:
                raise Unavailable("journal", "JOURNAL_UNWRITABLE", e) from None
            end = -1
            try:
                end = os.lseek(fd, 0, os.SEEK_END)
                # a line cut off by a crash: start on a line of our own
                if end and os.pread(fd, 1, end - 1) != b"\n":
                    line = b"\n" + line
                rest = memoryview(line)
                while rest:  # unbuffered: nothing is left to be written after a failure
                    rest = rest[os.write(fd, rest) :]
                os.fsync(fd)
            except OSError as e:
                if end >= 0:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, end)
                raise Unavailable("journal", "JOURNAL_UNWRITABLE", e) from None
            finally:
                os.close(fd)
