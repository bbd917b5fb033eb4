"""A witness for the log's tests: the real ``hedui.witness`` server over mutual TLS on a free
port, in this process, witnessing one log; and the service's ``Witnessing`` of it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.audit.checkpoint import vkey
from hedui.audit.log import WitnessEndpoint, Witnessing
from hedui.audit.witness_client import ssl_context
from hedui.core.tls import TlsMaterial, create_ca, issue
from hedui.witness.core import Witness, WitnessedLog, state_bytes, write_atomically
from hedui.witness.server import WitnessServer

NOW = dt.datetime.now(dt.UTC)
WITNESS_NAME = "hedui.test/w1-witness"
_CA = create_ca("witnessing test CA", NOW)


def material(name: str, role: str) -> TlsMaterial:
    made = issue(_CA, name=name, role=role, now=NOW)
    return TlsMaterial(_CA.cert_pem, made.cert_pem, made.key_pem)


SERVICE_TLS = material("service", "service")
WITNESS_TLS = material("witness", "witness")


@dataclass
class LocalWitness:
    """A witness of the log ``origin`` signed by ``log_key``, its state in ``directory``."""

    directory: Path
    origin: str
    log_key: Ed25519PrivateKey
    key: Ed25519PrivateKey
    server: WitnessServer | None = None
    port: int = 0

    @classmethod
    def start(cls, directory: Path, origin: str, log_key: Ed25519PrivateKey) -> LocalWitness:
        directory.mkdir(parents=True, exist_ok=True)
        write_atomically(directory / "state.json", state_bytes({}))
        w = cls(directory, origin, log_key, Ed25519PrivateKey.generate())
        w.serve()
        return w

    def witness(self) -> Witness:
        log = WitnessedLog.from_vkeys(self.origin, [vkey(self.origin, self.log_key.public_key())])
        return Witness(
            WITNESS_NAME,
            self.key,
            [log],
            self.directory / "state.json",
            evidence=self.directory / "evidence.jsonl",
        )

    def serve(self) -> None:
        """(Again) on the port it had: a restart that forgets nothing (its state file)."""
        self.server = WitnessServer(
            self.witness(), f"127.0.0.1:{self.port}", ssl_context(WITNESS_TLS, server=True)
        )
        self.port = self.server.port

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(1.0)
            self.server = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def vkey(self) -> str:
        return self.witness().vkey

    def witnessing(self, *, pause: float = 2.0, timeout: float = 5.0) -> Witnessing:
        """The service's side: this witness, reached with the service's certificate."""
        endpoint = WitnessEndpoint.parse(self.url, self.vkey)
        return Witnessing([endpoint], SERVICE_TLS, pause=pause, timeout=timeout)
