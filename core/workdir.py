"""The layout of a deployment's working directory (``hedui up --workdir W``)."""

from __future__ import annotations

from pathlib import Path

from hedui.core.keystore import KeyDir


class Workdir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys = KeyDir(root / "keys")

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
    def service_config(self) -> Path:
        return self.root / "hedui.toml"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    def prepare(self) -> None:
        for d in (self.root, self.root / "db", self.log_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
