"""``hedui serve custodian --config FILE``: the key custodian alone in its process, on its host."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hedui.core.custody import CUSTODIAN_ID
from hedui.core.serving import Started, run_until_signalled
from hedui.custodian.service import load_custodian_config, start_custodian


def serve(config_path: Path, env: Mapping[str, str]) -> None:
    config = load_custodian_config(config_path, env)
    running = start_custodian(config)
    run_until_signalled(
        [Started(CUSTODIAN_ID, config.address, running, config_path, config.metrics_address)]
    )
