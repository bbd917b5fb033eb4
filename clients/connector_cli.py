"""A connector's data on its own host: import a CSV file (`hedui connector import --config`)
or read its source system's database (`hedui connector sync NAME --config FILE`).

The IDs of the file become the connector's tokens at the token authority (blinded evaluation
under the connector's own certificate); the database is written atomically and sealed with the
connector's own integrity key. Only the config file and its key directory are read.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from pathlib import Path

from hedui.clients.errors import ClientError
from hedui.connectors.events import (
    load_events_query,
    push_events,
    read_events_csv,
    read_events_source,
)
from hedui.connectors.importer import (
    by_token,
    check_shrink,
    current_population,
    holdings_dataset,
    read_dataset,
    validate_dataset,
    write_database,
)
from hedui.connectors.integrity import RowSeal
from hedui.connectors.serve import load_connector_config
from hedui.connectors.server import ConnectorSettings
from hedui.connectors.source import load_source, read_source
from hedui.connectors.tokenizer import AuthorityTokenizer
from hedui.core.deployment import kind_of
from hedui.core.keystore import REGISTRY_ID, KeyDir


def sqlite_path(settings: ConnectorSettings) -> Path:
    prefix = "sqlite:///"
    if not settings.database_url.startswith(prefix):
        raise ClientError(
            f"{settings.connector_id}: its token index is a SQLite file (database_url "
            f"sqlite:///PATH), not {settings.database_url.split(':', 1)[0]}"
        )
    return Path(settings.database_url[len(prefix) :])


def _tokenizer(
    settings: ConnectorSettings, keys: KeyDir, authority: str, epoch: int
) -> AuthorityTokenizer:
    """The connector's client of the token authority, under its own certificate."""
    cid = settings.connector_id
    return AuthorityTokenizer(authority, None if settings.insecure else keys.tls(cid), cid, epoch)


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
    tokenizer = _tokenizer(settings, keys, authority, epoch)
    try:
        data = read_dataset(file, cid, tokenizer, today=today)
    finally:
        tokenizer.close()
    write_database(db, data, RowSeal(keys.connector_integrity_key(cid), cid))
    print(f"imported {data.size} people into {cid} ({db}, stored by token, not by ID number)")
    return 0


def sync_on_host(
    name: str,
    config: Path,
    authority: str,
    epoch: int,
    today: dt.date,
    *,
    allow_shrink: bool = False,
    say: Callable[[str], None] = lambda _: None,
) -> int:
    """Build the connector's token index from its source database: read every declared field's
    query, turn the IDs into tokens at the token authority, write the sealed index atomically,
    and report the counts."""
    settings = load_connector_config(config, dict(os.environ))
    assert settings.keys_dir is not None
    cid = settings.connector_id
    if cid != name:
        raise ClientError(f"{config} configures {cid}, not {name}")
    if cid == REGISTRY_ID:
        raise ClientError("the household register is imported from its file (connector import)")
    source = load_source(config, dict(os.environ))
    keys, db = KeyDir(settings.keys_dir), sqlite_path(settings)
    started = time.monotonic()

    def progress(field: str, rows: int) -> None:
        say(f"{cid}: {field}: {rows} rows read")

    per_id = read_source(source, kind_of(cid), today=today, progress=progress)
    before = current_population(db, cid)
    if not allow_shrink:
        check_shrink(cid, before, len(per_id))
    tokenizer = _tokenizer(settings, keys, authority, epoch)
    try:
        say(f"{cid}: {len(per_id)} people; making their tokens at the token authority …")
        data = holdings_dataset(cid, by_token(per_id, tokenizer), tokenizer)
    finally:
        tokenizer.close()
    write_database(db, data, RowSeal(keys.connector_integrity_key(cid), cid))
    print(
        f"synced {cid} from its source: {data.size} people (before: "
        f"{before if before is not None else 'none'}), {len(source.queries)} fields, in "
        f"{time.monotonic() - started:.1f} s; restart `hedui serve connector {cid}` to serve it"
    )
    return 0


def events_on_host(
    name: str,
    config: Path,
    *,
    file: Path | None,
    since: dt.date | None,
    authority: str,
    service: str,
    epoch: int,
    today: dt.date,
) -> int:
    """Push a department's events to the service: from a CSV file, or from the source
    database's events query since a date."""
    settings = load_connector_config(config, dict(os.environ))
    assert settings.keys_dir is not None
    cid = settings.connector_id
    if cid != name:
        raise ClientError(f"{config} configures {cid}, not {name}")
    if (file is None) == (since is None):
        raise ClientError("give the events either as --file CSV or as --since DATE from [source]")
    if file is not None:
        if not file.is_file():
            raise ClientError(f"{file} is not a file")
        events = read_events_csv(file, today)
    else:
        assert since is not None
        url, query = load_events_query(config, dict(os.environ))
        events = read_events_source(url, query, since, today)
    keys = KeyDir(settings.keys_dir)
    tokenizer = _tokenizer(settings, keys, authority, epoch)
    try:
        received = push_events(
            events, tokenizer, service, None if settings.insecure else keys.tls(cid)
        )
    finally:
        tokenizer.close()
    print(f"{cid}: {received} event(s) sent to the verification service")
    return 0
