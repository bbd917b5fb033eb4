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

from hedui.core.ca import CertificateAuthority
from hedui.core.errors import WorkdirError
from hedui.core.keystore import KeyDir
from hedui.core.tls import TlsMaterial


class Workdir:
    """``W/ca`` is the deployment's offline CA; ``W/parties/<party>`` is one party's own
    directory (0700): its keys (``keys/``, a :class:`KeyDir` holding that party's secrets and
    the public files of others it trusts), its databases (``db/``), its state and its config
    file. On a real deployment each party directory is on that party's own host."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.ca = CertificateAuthority(self.root / "ca")
        self._lock: IO[str] | None = None

    def party_dir(self, party: str) -> Path:
        return self.root / "parties" / party

    def keys(self, party: str) -> KeyDir:
        """The key directory of one party: its own secrets and the public files it trusts."""
        return KeyDir(self.party_dir(party) / "keys")

    def tls(self, party: str) -> TlsMaterial:
        return self.keys(party).tls(party)

    def config_file(self, party: str) -> Path:
        """The TOML file ``hedui serve`` reads for this party."""
        return self.party_dir(party) / f"{party}.toml"

    def listening_file(self, party: str) -> Path:
        """Written by ``hedui serve`` once the party listens: its address."""
        return self.party_dir(party) / "run" / f"{party}.listening"

    def connector_db(self, connector_id: str) -> Path:
        return self.party_dir(connector_id) / "db" / f"{connector_id}.sqlite"

    def connector_db_url(self, connector_id: str) -> str:
        return f"sqlite:///{self.connector_db(connector_id)}"

    @property
    def audit_db_url(self) -> str:
        return f"sqlite:///{self.party_dir('service') / 'db' / 'audit.sqlite'}"

    @property
    def service_db_url(self) -> str:
        return f"sqlite:///{self.party_dir('service') / 'db' / 'service.sqlite'}"

    @property
    def intake_profile(self) -> Path:
        return self.root / "intake.toml"

    @property
    def auditor_profile(self) -> Path:
        return self.root / "auditor.toml"

    @property
    def custodian_config(self) -> Path:
        return self.config_file("custodian")

    @property
    def authority_config(self) -> Path:
        """The token authority's settings (the registry): connectors and their allowances."""
        return self.party_dir("registry") / "authority.toml"

    @property
    def custodian_dir(self) -> Path:
        """The key custodian's own state: its witness of the log and its decryption journal."""
        return self.party_dir("custodian") / "state"

    @property
    def service_config(self) -> Path:
        return self.config_file("service")

    @property
    def witness_dir(self) -> Path:
        """The log's witness (``hedui serve witness --workdir``): its config ``witness.toml``,
        its cosigning key and state, ``keys/`` (its TLS key, and ``witness/witness.vkey``, its
        verifier key as it gives it to the parties that check cosignatures), ``run/``."""
        return self.party_dir("witness")

    @property
    def witness_config(self) -> Path:
        return self.config_file("witness")

    @property
    def log_vkey(self) -> Path:
        """The audit log's verifier key as a C2SP note vkey string, for generic verifiers."""
        return self.root / "log.vkey"

    @property
    def log_dir(self) -> Path:
        """Each party's log (``<party>.log``), as `hedui up` collects them."""
        return self.root / "log"

    def pid_file(self, party: str) -> Path:
        """The process id of the process serving ``party`` (written by `hedui up`, for operators)."""
        return self.root / "run" / f"{party}.pid"

    @property
    def lock_path(self) -> Path:
        return self.root / "up.lock"

    def prepare_party(self, party: str) -> Path:
        """Create a party's directory (0700: only its operator may read it)."""
        d = self.party_dir(party)
        for sub in (d, d / "keys", d / "db", d / "run"):
            sub.mkdir(parents=True, exist_ok=True, mode=0o700)
        d.chmod(0o700)
        return d

    def prepare(self) -> None:
        try:
            for d in (self.root, self.root / "parties", self.log_dir, self.root / "run"):
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
