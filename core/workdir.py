"""The layout of a deployment's working directory (``hedui up --workdir W``).

Every path is absolute (the profiles written here are read from any directory), and a running
deployment holds ``W/up.lock`` so that a second ``hedui up`` on the same folder refuses instead
of overwriting the profiles of the first.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from hedui.core.errors import WorkdirError
from hedui.core.keystore import KeyDir


class Workdir:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.keys = KeyDir(self.root / "keys")
        self._lock: IO[str] | None = None

    def connector_db(self, connector_id: str) -> Path:
        return self.root / "db" / f"{connector_id}.sqlite"

    def connector_db_url(self, connector_id: str) -> str:
        return f"sqlite:///{self.connector_db(connector_id)}"

    @property
    def audit_db_url(self) -> str:
        return f"sqlite:///{self.root / 'db' / 'audit.sqlite'}"

    @property
    def service_db_url(self) -> str:
        return f"sqlite:///{self.root / 'db' / 'service.sqlite'}"

    @property
    def intake_profile(self) -> Path:
        return self.root / "intake.toml"

    @property
    def auditor_profile(self) -> Path:
        return self.root / "auditor.toml"

    @property
    def custodian_config(self) -> Path:
        return self.root / "custodian.toml"

    @property
    def authority_config(self) -> Path:
        """The token authority's settings (the registry): connectors and their allowances."""
        return self.root / "registry.toml"

    @property
    def custodian_dir(self) -> Path:
        """The key custodian's own state: its witness of the log and its decryption journal."""
        return self.root / "custodian"

    @property
    def service_config(self) -> Path:
        return self.root / "hedui.toml"

    @property
    def log_vkey(self) -> Path:
        """The audit log's verifier key as a C2SP note vkey string, for generic verifiers."""
        return self.root / "log.vkey"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    def pid_file(self, party: str) -> Path:
        """The process id of the worker serving ``party`` (written by `hedui up`, for operators)."""
        return self.root / "run" / f"{party}.pid"

    @property
    def lock_path(self) -> Path:
        return self.root / "up.lock"

    def prepare(self) -> None:
        try:
            for d in (self.root, self.root / "db", self.log_dir):
                d.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise WorkdirError(
                f"cannot create the working directory {self.root}: {e.strerror}; "
                "choose a folder you can write (--workdir)"
            ) from None

    def lock(self) -> None:
        """Take the workdir for this process, or refuse naming the process that has it."""
        self.prepare()
        try:
            f = open(self.lock_path, "a+", encoding="utf-8")
        except OSError as e:
            raise WorkdirError(f"cannot write {self.lock_path}: {e.strerror}") from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise WorkdirError(
                f"{self.root} is in use by a running deployment (pid {holder}); stop it first "
                "or choose another --workdir"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._lock = f

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None
