"""The plaintext baseline of issue #5, for benchmarks only (never a product mode): the same
deployment and code paths, with Paillier's arithmetic replaced by plain integer addition, so
the difference between the two runs is the cost of the cryptography."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hedui.core import paillier

SITE = Path(__file__).parent / "plaintext_site"  # its sitecustomize installs the patches


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


def environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a deployment whose every party process runs on plaintext integers:
    ``plaintext_site`` first on PYTHONPATH, whose ``sitecustomize`` calls :func:`install`."""
    env = dict(os.environ if base is None else base)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([str(SITE), root, env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    return env
