"""``hedui serve witness --workdir DIR``: the witness alone in its process, on its host."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from hedui.audit.witness_client import ssl_context
from hedui.core.keystore import KeyDir
from hedui.core.serving import Started, run_until_signalled
from hedui.core.tls import Revocations
from hedui.witness.config import WitnessConfig, load_witness_config, prepare
from hedui.witness.server import WitnessServer

log = logging.getLogger("hedui.witness")

PARTY = "witness"


def start_witness(config: WitnessConfig) -> WitnessServer:
    """Serve the witness of ``config`` over mutual TLS with its certificate (``tls_name`` in
    its key directory) and the deployment's CA and revocation list."""
    witness = prepare(config)
    tls = KeyDir(config.tls_keys).tls(config.tls_name)
    revocations = Revocations(tls.ca_pem, tls.crl_path) if tls.crl_path is not None else None
    server = WitnessServer(
        witness,
        config.address,
        ssl_context(tls, server=True),
        submitters=config.submitters,
        revocations=revocations,
    )
    log.info(
        "witness %s witnessing %s; its verifier key: %s",
        config.name,
        ", ".join(witness.origins),
        witness.vkey,
    )
    return server


def serve(directory: Path, env: Mapping[str, str]) -> None:
    config = load_witness_config(directory, env)
    running = start_witness(config)
    run_until_signalled(
        [Started(PARTY, config.address, running, config.config_path, config.metrics_address)]
    )
