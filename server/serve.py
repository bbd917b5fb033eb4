"""``hedui serve service --config FILE``: one verification service (one replica of it: several
may share one PostgreSQL database, see README "Operating hedui")."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hedui.core.serving import Started, run_until_signalled
from hedui.server.app import start_service
from hedui.server.config import load


def serve(config_path: Path, env: Mapping[str, str]) -> None:
    config = load(config_path, env)
    running = start_service(config)
    run_until_signalled(
        [Started("service", config.address, running, config_path, config.metrics_address)]
    )
