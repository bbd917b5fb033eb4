"""The plaintext baseline of issue #5, for benchmarks only (never a product mode): the same
deployment and code paths, with Paillier's arithmetic replaced by plain integer addition, so
the difference between the two runs is the cost of the cryptography."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

from hedui.clients.deploy import _serve_group
from hedui.core import paillier


def _encrypt(self: paillier.PublicKey, value: int, *, r: int | None = None) -> paillier.Ciphertext:
    return paillier.Ciphertext(value + 1, self.fingerprint)


def _add(
    self: paillier.PublicKey, ciphertexts: Iterable[paillier.Ciphertext]
) -> paillier.Ciphertext:
    return paillier.Ciphertext(1 + sum(c.value - 1 for c in ciphertexts), self.fingerprint)


def _decrypt(self: paillier.PrivateKey, c: paillier.Ciphertext) -> int:
    return c.value - 1


def _start_pool(self: paillier.PublicKey, capacity: int = 0) -> Any:
    return None


PATCHES: list[tuple[Any, str, Any]] = [
    (paillier.PublicKey, "encrypt", _encrypt),
    (paillier.PublicKey, "add", _add),
    (paillier.PublicKey, "start_pool", _start_pool),
    (paillier.PrivateKey, "decrypt", _decrypt),
]


def install() -> list[tuple[Any, str, Any]]:
    """Patch the adapter in this process; returns what to restore."""
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in PATCHES]
    for owner, name, fn in PATCHES:
        setattr(owner, name, fn)
    return saved


def restore(saved: list[tuple[Any, str, Any]]) -> None:
    for owner, name, fn in saved:
        setattr(owner, name, fn)


def serve_group(
    root: str, ids: Sequence[str], insecure: bool, conn: Connection, fixed: Mapping[str, int]
) -> None:
    """A connector worker process running on plaintext integers."""
    install()
    _serve_group(root, ids, insecure, conn, fixed)
