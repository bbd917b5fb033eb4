"""Secret files: written 0600 in one step, refused when others may read them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hedui.core.errors import KeyFileError


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (never briefly world-readable) and write ``data``."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def replace_public(path: Path, data: bytes) -> None:
    """Write a public file in one step (a reader never sees half of it): beside it, then moved."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def read_secret(path: Path) -> bytes:
    """Read a secret file, refusing one that its group or other users may read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(
            f"{path} does not exist: a key this party makes at enrolment (`hedui up`, or `hedui "
            "keys request` on its own host) or receives from another party's operator; restore "
            "it from the party's backup, never make a new one others have not pinned"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path} may be read by other users; run `chmod 600 {path}`")
    return path.read_bytes()


def read_public(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(
            f"{path} does not exist: a key this party makes at enrolment (`hedui up`, or `hedui "
            "keys request` on its own host) or receives from another party's operator; restore "
            "it from the party's backup, never make a new one others have not pinned"
        ) from None
