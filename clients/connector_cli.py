"""A connector's data on its own host: import a CSV file (`hedui connector import --config`).

The IDs of the file become the connector's tokens at the token authority (blinded evaluation
under the connector's own certificate); the database is written atomically and sealed with the
connector's own integrity key. Only the config file and its key directory are read.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from hedui.clients.errors import ClientError
from hedui.connectors.importer import (
    check_shrink,
    current_population,
    read_dataset,
    validate_dataset,
    write_database,
)
from hedui.connectors.integrity import RowSeal
from hedui.connectors.serve import load_connector_config
from hedui.connectors.server import ConnectorSettings
from hedui.connectors.tokenizer import AuthorityTokenizer
from hedui.core.keystore import REGISTRY_ID, KeyDir


def sqlite_path(settings: ConnectorSettings) -> Path:
    prefix = "sqlite:///"
    if not settings.database_url.startswith(prefix):
        raise ClientError(
            f"{settings.connector_id}: its token index is a SQLite file (database_url "
            f"sqlite:///PATH), not {settings.database_url.split(':', 1)[0]}"
        )
    return Path(settings.database_url[len(prefix) :])


def import_on_host(
    config: Path,
    file: Path,
    authority: str | None,
    epoch: int,
    today: dt.date,
    *,
    allow_shrink: bool = False,
) -> int:
    settings = load_connector_config(config, dict(os.environ))
    assert settings.keys_dir is not None
    keys, cid = KeyDir(settings.keys_dir), settings.connector_id
    if not file.is_file():
        raise ClientError(f"{file} is not a file")
    db = sqlite_path(settings)
    before = current_population(db, cid)
    if not allow_shrink:
        check_shrink(cid, before, validate_dataset(file, cid, today=today))
    if cid == REGISTRY_ID:
        write_database(db, read_dataset(file, cid, None, today=today))
        print(f"imported the household register into {db}")
        return 0
    if not authority:
        raise ClientError("--authority HOST:PORT is required: the token authority (the registry)")
    tokenizer = AuthorityTokenizer(
        authority, None if settings.insecure else keys.tls(cid), cid, epoch
    )
    try:
        data = read_dataset(file, cid, tokenizer, today=today)
    finally:
        tokenizer.close()
    write_database(db, data, RowSeal(keys.connector_integrity_key(cid), cid))
    print(f"imported {data.size} people into {cid} ({db}, stored by token, not by ID number)")
    return 0
