"""A deployment's CA and certificates for the witness tests, a log to feed the witness, and a
witness serving over mutual TLS on a free port."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.audit import merkle
from hedui.audit.checkpoint import Checkpoint, sign_checkpoint, vkey
from hedui.audit.witness_client import ssl_context
from hedui.core.tls import Issued, TlsMaterial, create_ca, issue
from hedui.witness.core import Witness, WitnessedLog, state_bytes, write_atomically
from hedui.witness.server import WitnessServer

NOW = dt.datetime.now(dt.UTC)
ORIGIN = "hedui.local/witness-test-log"
WITNESS_NAME = "witness.test/w1"


@dataclass(frozen=True)
class Pki:
    ca: Issued
    server: TlsMaterial  # the witness's certificate
    service: TlsMaterial  # a submitter
    auditor: TlsMaterial  # enrolled, not a submitter

    def client(self, who: TlsMaterial) -> ssl.SSLContext:
        return ssl_context(who, server=False)


def _material(ca: Issued, name: str, role: str) -> TlsMaterial:
    made = issue(ca, name=name, role=role, now=NOW)
    return TlsMaterial(ca.cert_pem, made.cert_pem, made.key_pem)


@pytest.fixture(scope="session")
def pki() -> Pki:
    ca = create_ca("witness test CA", NOW)
    return Pki(
        ca,
        _material(ca, "witness", "auditor"),
        _material(ca, "service", "service"),
        _material(ca, "auditor-1", "auditor"),
    )


@dataclass
class Log:
    """An append-only log that signs its checkpoints like the service's."""

    origin: str = ORIGIN
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    tree: merkle.MemoryTree = field(default_factory=merkle.MemoryTree)

    @property
    def vkey(self) -> str:
        return vkey(self.origin, self.key.public_key())

    def grow(self, n: int) -> None:
        for _ in range(n):
            self.tree.append(f"entry {self.tree.size}".encode())

    def checkpoint(self, size: int | None = None) -> Checkpoint:
        size = self.tree.size if size is None else size
        return Checkpoint(self.origin, size, self.tree.root(size))

    def note(self, size: int | None = None) -> bytes:
        return sign_checkpoint(self.checkpoint(size), self.origin, self.key)

    def proof(self, old: int, new: int | None = None) -> list[bytes]:
        new = self.tree.size if new is None else new
        return [] if old in (0, new) else self.tree.consistency_proof(old, new)


class Clock:
    def __init__(self, t: int = 1_700_000_000) -> None:
        self.t = t

    def __call__(self) -> float:
        return float(self.t)


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def witness_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def new_witness(
    directory: Path, key: Ed25519PrivateKey, logs: list[Log], clock: Clock | None = None
) -> Witness:
    state = directory / "state.json"
    if not state.exists():
        write_atomically(state, state_bytes({}))
    return Witness(
        WITNESS_NAME,
        key,
        [WitnessedLog.from_vkeys(entry.origin, [entry.vkey]) for entry in logs],
        state,
        evidence=directory / "evidence.jsonl",
        clock=clock or Clock(),
    )


@pytest.fixture
def witness(tmp_path: Path, witness_key: Ed25519PrivateKey, log: Log, clock: Clock) -> Witness:
    return new_witness(tmp_path, witness_key, [log], clock)


@pytest.fixture
def server(witness: Witness, pki: Pki) -> Iterator[WitnessServer]:
    running = WitnessServer(witness, "127.0.0.1:0", ssl_context(pki.server, server=True))
    yield running
    running.stop(1.0)
