"""The witness: cosigns a log's checkpoints only along one append-only history.

For every log it witnesses (an origin and the log's verifier key or keys) the witness keeps
the latest checkpoint it cosigned: its size, root, time and the cosigned note, in one state
file replaced atomically (written beside it, fsync'd, renamed, the folder fsync'd) before a
cosignature leaves the witness. An ``add-checkpoint`` request (c2sp.org/tlog-witness) is
checked in the order the specification gives:

1. the body is ``old <size>``, at most 63 base64 proof lines, a blank line and a signed
   checkpoint note, else 400;
2. the origin is one the witness witnesses, else 404;
3. a signature by a trusted key of that origin verifies, and no line of a trusted key fails,
   else 403;
4. the old size is at most the checkpoint's, else 400;
5. the old size is the size the witness last cosigned (0 before the first), else 409 with that
   size;
6. a size-0 checkpoint has the empty tree's root; from old size 0 no proof is given; from the
   witnessed size the proof shows the new tree extends the witnessed one (at the same size:
   the same root, no proof), else 422;

then it cosigns (``cosignature/v1``, timestamp now) and records the checkpoint. A rollback
(a smaller tree) fails at 4 or 5, a fork at 6. The check and the update are one step under a
lock per origin, so two requests never both pass from the same size. A request that fails at 6
with a valid log signature is evidence of a misbehaving log: it is appended to the evidence
file (JSON lines) and logged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hedui.audit import merkle
from hedui.audit.checkpoint import Checkpoint, key_id, parse_vkey
from hedui.audit.cosignature import cosign, cosigner_vkey, signature_line, split_note
from hedui.audit.errors import VerificationError
from hedui.witness.errors import (
    ConfigError,
    Conflict,
    Inconsistent,
    Malformed,
    NotSigned,
    Unavailable,
    UnknownLog,
)

log = logging.getLogger("hedui.witness")

MAX_PROOF_LINES = 63
MAX_TREE_SIZE = 2**64 - 1
_OLD = re.compile(rb"old (0|[1-9][0-9]{0,19})")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}")
STATE_VERSION = 1


@dataclass(frozen=True)
class LogKey:
    """One verifier key of a witnessed log: its key name, key ID and Ed25519 public key."""

    name: str
    key_id: bytes
    public_key: Ed25519PublicKey

    @classmethod
    def from_vkey(cls, vkey: str) -> LogKey:
        name, public_key = parse_vkey(vkey.strip())
        return cls(name, key_id(name, public_key), public_key)


@dataclass(frozen=True)
class WitnessedLog:
    """A log the witness witnesses: its origin line and the keys that may sign its checkpoints
    (more than one while a log key is rotated)."""

    origin: str
    keys: tuple[LogKey, ...]

    @classmethod
    def from_vkeys(cls, origin: str, vkeys: Sequence[str]) -> WitnessedLog:
        if not origin or any(c < " " for c in origin):
            raise ValueError(f"invalid origin {origin!r}")
        if not vkeys:
            raise ValueError(f"the log {origin} has no verifier key")
        return cls(origin, tuple(LogKey.from_vkey(v) for v in vkeys))


@dataclass(frozen=True)
class LogState:
    """The latest checkpoint the witness cosigned for one log."""

    size: int
    root: bytes
    timestamp: int
    note: bytes  # the checkpoint with the log's verified signature(s) and the cosignature

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "root": base64.b64encode(self.root).decode(),
            "timestamp": self.timestamp,
            "note": self.note.decode(),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> LogState:
        size, timestamp = doc["size"], doc["timestamp"]
        if not isinstance(size, int) or not isinstance(timestamp, int) or size < 0:
            raise ValueError("size and timestamp must be integers")
        root = base64.b64decode(doc["root"], validate=True)
        if len(root) != merkle.HASH_SIZE:
            raise ValueError("root is not 32 bytes")
        return cls(size, root, timestamp, str(doc["note"]).encode())


EMPTY = LogState(0, merkle.EMPTY_ROOT, 0, b"")


def origin_hash(origin: str) -> str:
    """The log's name in the monitoring URL: SHA-256 of its origin, lowercase hex."""
    return hashlib.sha256(origin.encode()).hexdigest()


# --- the state file ----------------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (0600) so that a crash leaves the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        rest = memoryview(data)
        while rest:
            rest = rest[os.write(fd, rest) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_state(path: Path) -> dict[str, LogState]:
    """The witnessed logs' states from the state file; ConfigError when it cannot be read."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") != STATE_VERSION or not isinstance(doc.get("logs"), dict):
            raise ValueError(f"not a version {STATE_VERSION} witness state")
        return {str(o): LogState.from_json(s) for o, s in doc["logs"].items()}
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"{path} is damaged ({e}); restore it from your backup") from None


def state_bytes(states: Mapping[str, LogState]) -> bytes:
    logs = {o: s.to_json() for o, s in sorted(states.items())}
    return (json.dumps({"version": STATE_VERSION, "logs": logs}, indent=1) + "\n").encode()


# --- requests ----------------------------------------------------------------------------------


def parse_request(body: bytes) -> tuple[int, list[bytes], bytes]:
    """(old size, consistency proof, signed note) of an add-checkpoint body; Malformed if not."""
    head, sep, rest = body.partition(b"\n")
    match = _OLD.fullmatch(head)
    if not sep or match is None or int(match[1]) > MAX_TREE_SIZE:
        raise Malformed("the body does not start with an `old <size>` line")
    proof: list[bytes] = []
    while True:
        line, sep, rest = rest.partition(b"\n")
        if not sep:
            raise Malformed("no blank line between the proof and the checkpoint")
        if not line:
            break
        if len(proof) == MAX_PROOF_LINES:
            raise Malformed(f"more than {MAX_PROOF_LINES} consistency proof lines")
        if not _BASE64.fullmatch(line) or len(line) % 4:
            raise Malformed(f"proof line {len(proof) + 1} is not base64")
        proof.append(base64.b64decode(line, validate=True))
    if not rest:
        raise Malformed("no checkpoint after the proof")
    return int(match[1]), proof, rest


class Witness:
    """Cosigns checkpoints of the ``logs`` with the key (``name``, ``private_key``); its state
    is the file ``state`` (which must exist: see :func:`hedui.witness.config.prepare`)."""

    def __init__(
        self,
        name: str,
        private_key: Ed25519PrivateKey,
        logs: Sequence[WitnessedLog],
        state: Path,
        *,
        evidence: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.vkey = cosigner_vkey(name, private_key.public_key())
        self._key = private_key
        self._logs = {entry.origin: entry for entry in logs}
        if len(self._logs) != len(logs):
            raise ConfigError("a log is listed twice in the witness's config")
        self._by_hash = {origin_hash(o): o for o in self._logs}
        self._state_path = state
        self._evidence = evidence
        self._clock = clock
        self._states = read_state(state)
        self._locks = {origin: threading.Lock() for origin in self._logs}
        self._save_lock = threading.Lock()

    @property
    def origins(self) -> list[str]:
        return sorted(self._logs)

    def state(self, origin: str) -> LogState:
        """The latest checkpoint cosigned for ``origin`` (size 0 before the first)."""
        return self._states.get(origin, EMPTY)

    def latest(self, origin_sha256: str) -> bytes | None:
        """The latest cosigned note of the log whose origin hashes to ``origin_sha256`` (hex),
        or None when the witness never cosigned one of it."""
        origin = self._by_hash.get(origin_sha256.lower())
        if origin is None or origin not in self._states:
            return None
        return self._states[origin].note

    def handle(self, body: bytes) -> bytes:
        """The cosignature line of an add-checkpoint request body (see the module's docstring);
        a :class:`~hedui.witness.errors.Rejected` subclass names the HTTP status otherwise."""
        old_size, proof, note = parse_request(body)
        return self.add_checkpoint(old_size, proof, note)

    def _verified(self, entry: WitnessedLog, text: bytes, lines: Sequence[str]) -> list[str]:
        """The lines of ``entry``'s keys, each verified (NotSigned for a bad one, or none)."""
        keys = {(k.name, k.key_id): k for k in entry.keys}
        verified = []
        for line in lines:
            name, id_, signature = signature_line(line)
            trusted = keys.get((name, id_))
            if trusted is None:
                continue  # another key's line (another witness's, say): ignored
            try:
                trusted.public_key.verify(signature, text)
            except InvalidSignature:
                raise NotSigned(f"invalid signature by the log key {name}+{id_.hex()}") from None
            verified.append(line)
        if not verified:
            raise NotSigned(f"no signature by a key of the log {entry.origin}")
        return verified

    def add_checkpoint(self, old_size: int, proof: Sequence[bytes], note: bytes) -> bytes:
        """Cosign ``note`` given a consistency proof from ``old_size``; see :meth:`handle`."""
        try:
            text, lines = split_note(note)
            cp = Checkpoint.from_body(text)
        except VerificationError as e:
            raise Malformed(f"not a signed checkpoint: {e}") from None
        entry = self._logs.get(cp.origin)
        if entry is None:
            raise UnknownLog(f"this witness does not witness the log {cp.origin}")
        signed = self._verified(entry, text, lines)
        if old_size > cp.size:
            raise Malformed(f"old size {old_size} is beyond the checkpoint's size {cp.size}")
        with self._locks[cp.origin]:
            known = self.state(cp.origin)
            if old_size != known.size:
                raise Conflict(
                    f"the witness last cosigned {cp.origin} at size {known.size}", known.size
                )
            try:
                if cp.size == 0 and cp.root != merkle.EMPTY_ROOT:
                    raise VerificationError("a checkpoint of size 0 must have the empty root")
                if old_size == 0:
                    if proof:
                        raise VerificationError("a proof from size 0 must be empty")
                else:
                    merkle.verify_consistency(old_size, cp.size, proof, known.root, cp.root)
            except VerificationError as e:
                self._record_evidence(cp, known, note, str(e))
                raise Inconsistent(
                    f"the checkpoint of {cp.origin} at size {cp.size} is not consistent with "
                    f"the one the witness cosigned at size {known.size}: {e}"
                ) from None
            timestamp = max(1, int(self._clock()))
            line = cosign(text, self.name, self._key, timestamp)
            cosigned = text + b"\n" + "".join(s + "\n" for s in signed).encode() + line
            self._save(cp.origin, LogState(cp.size, cp.root, timestamp, cosigned))
        log.info("cosigned %s at size %d (from size %d)", cp.origin, cp.size, old_size)
        return line

    def _save(self, origin: str, state: LogState) -> None:
        """Persist, then remember: a state that cannot be written cosigns nothing."""
        with self._save_lock:
            states = {**self._states, origin: state}
            try:
                write_atomically(self._state_path, state_bytes(states))
            except OSError as e:
                log.error("cannot write the witness state %s: %s", self._state_path, e)
                raise Unavailable(
                    f"cannot write the witness state: {e.strerror or e}; nothing cosigned"
                ) from None
            self._states = states

    def _record_evidence(self, cp: Checkpoint, known: LogState, note: bytes, why: str) -> None:
        """A log-signed checkpoint the witness refused as inconsistent: kept for the auditors."""
        log.warning(
            "refused an inconsistent checkpoint of %s at size %d (witnessed: size %d, root %s): %s",
            cp.origin,
            cp.size,
            known.size,
            known.root.hex(),
            why,
        )
        if self._evidence is None:
            return
        record = {
            "time": int(self._clock()),
            "origin": cp.origin,
            "reason": why,
            "witnessed_size": known.size,
            "witnessed_root": base64.b64encode(known.root).decode(),
            "witnessed_note": known.note.decode(),
            "refused_note": note.decode(),
        }
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        try:
            fd = os.open(self._evidence, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            log.error("cannot write the evidence file %s: %s", self._evidence, e)
