"""A department's event feed for 主动发现 (`hedui connector events NAME --config FILE`).

Events come from a CSV file (``id_number,kind,occurred_on,amount_fen``; the amount only for
amount kinds, e.g. medical self-pay's 12-month running total in fen) or from the connector's
source database (``[source] events`` in its config: one read-only query returning the same four
columns, with ``:since`` bound to the first day to send)::

    [source]
    url = "postgresql+psycopg://hedui_reader@his.example/his"
    events = "SELECT id_number, 'medical_self_pay', day, total_fen FROM self_pay_12m WHERE day >= :since"

The ID numbers become the connector's tokens at the token authority (blinded evaluation, as an
import); the events go to the verification service's ``MonitoringService`` over mutual TLS
under the connector's own certificate. The service keeps only the events about monitored
households and tells nobody which those were.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from hedui.connectors.errors import ConnectorError, ImportRejected, RowProblem
from hedui.connectors.tokenizer import Tokenizer
from hedui.core.config import ENV_PREFIX, read_toml
from hedui.core.deployment import EVENT_AMOUNTS
from hedui.core.errors import InvalidResidentId
from hedui.core.resident_id import parse as parse_id
from hedui.core.rpc import open_channel
from hedui.core.tls import TlsMaterial
from hedui.proto.v1 import monitoring_pb2, monitoring_pb2_grpc

HEADER = ["id_number", "kind", "occurred_on", "amount_fen"]
MAX_PROBLEMS = 50


@dataclass(frozen=True)
class PersonEvent:
    id_number: str
    kind: str
    occurred_on: dt.date
    amount_fen: int


def _event(
    raw: Sequence[object], where: str, line: int, today: dt.date, problems: list[RowProblem]
) -> PersonEvent | None:
    if len(raw) != 4:
        problems.append(RowProblem(where, line, f"{len(raw)} columns, an event has 4"))
        return None
    id_text, kind, on_text, amount_text = (str(x if x is not None else "").strip() for x in raw)
    bad = len(problems)
    try:
        id_number = parse_id(id_text, today=today).value
    except InvalidResidentId as e:
        problems.append(RowProblem(where, line, f"id_number: {e}"))
    if kind not in EVENT_AMOUNTS:
        known = ", ".join(EVENT_AMOUNTS)
        problems.append(RowProblem(where, line, f"kind {kind!r} is not one of {known}"))
    try:
        on = dt.date.fromisoformat(on_text[:10])
        if on > today:
            problems.append(RowProblem(where, line, f"occurred_on {on} is in the future"))
    except ValueError:
        problems.append(RowProblem(where, line, f"occurred_on {on_text!r} is not YYYY-MM-DD"))
    amount = 0
    if EVENT_AMOUNTS.get(kind):
        if not (amount_text.isascii() and amount_text.isdigit()):
            problems.append(
                RowProblem(where, line, f"amount_fen {amount_text!r}: a whole number of fen")
            )
        else:
            amount = int(amount_text)
    elif amount_text not in ("", "0"):
        problems.append(RowProblem(where, line, f"a {kind} event carries no amount"))
    if len(problems) > bad:
        return None
    return PersonEvent(id_number, kind, on, amount)


def read_events_csv(path: Path, today: dt.date) -> list[PersonEvent]:
    """Validate an events file (raises ImportRejected; nothing is sent then)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise ConnectorError(f"cannot read {path}: {e.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise ConnectorError(f"{path} is not a UTF-8 CSV file ({e})") from None
    if not rows or [h.strip() for h in rows[0]] != HEADER:
        raise ImportRejected([RowProblem(path.name, 1, f"header must be {','.join(HEADER)}")])
    problems: list[RowProblem] = []
    out: list[PersonEvent] = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        event = _event(row, path.name, line, today, problems)
        if event is not None:
            out.append(event)
    if problems:
        raise ImportRejected(problems)
    return out


def load_events_query(path: Path, env: Mapping[str, str]) -> tuple[str, str]:
    """``[source] url`` (or ``HEDUI_SOURCE_URL``) and ``[source] events`` of a connector's config."""
    table = read_toml(path, "write the connector's config").get("source")
    if not isinstance(table, dict):
        raise ConnectorError(f"{path} has no [source] table: the source database and its queries")
    url = env.get(ENV_PREFIX + "SOURCE_URL", table.get("url"))
    query = table.get("events")
    if not isinstance(url, str) or not url:
        raise ConnectorError(f"{path} [source]: url (a SQLAlchemy URL) is required")
    if not isinstance(query, str) or ":since" not in query:
        raise ConnectorError(
            f"{path} [source]: events must be one SQL query returning id_number, kind, "
            "occurred_on, amount_fen, with :since for the first day to send"
        )
    return url, query


def read_events_source(url: str, query: str, since: dt.date, today: dt.date) -> list[PersonEvent]:
    """The events of the source database's query since ``since`` (read-only transaction)."""
    try:
        engine = create_engine(url, hide_parameters=True)
    except (SQLAlchemyError, ImportError) as e:
        raise ConnectorError(f"[source] url cannot be used: {type(e).__name__}") from None
    problems: list[RowProblem] = []
    out: list[PersonEvent] = []
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            rows = conn.execute(text(query), {"since": since.isoformat()})
            for n, row in enumerate(rows, start=1):
                event = _event(tuple(row), "[source] events", n, today, problems)
                if event is not None:
                    out.append(event)
                if len(problems) >= MAX_PROBLEMS:
                    break
    except SQLAlchemyError as e:
        raise ConnectorError(
            f"the source's events query failed ({type(e).__name__}); check [source] events"
        ) from None
    finally:
        engine.dispose()
    if problems:
        raise ImportRejected(problems)
    return out


def push_events(
    events: Sequence[PersonEvent],
    tokenizer: Tokenizer,
    service: str,
    tls: TlsMaterial | None,
    timeout: float = 300.0,
) -> int:
    """Tokenize the events' ID numbers and stream them to the service; the number received."""
    tokens = tokenizer.tokens([e.id_number for e in events]) if events else []

    def stream() -> Iterator[monitoring_pb2.Event]:
        for e, t in zip(events, tokens, strict=True):
            yield monitoring_pb2.Event(
                token=t, kind=e.kind, occurred_on=e.occurred_on.isoformat(), amount_fen=e.amount_fen
            )

    channel = open_channel(service, tls=tls, server_name="service")
    try:
        reply = monitoring_pb2_grpc.MonitoringServiceStub(channel).PushEvents(
            stream(), timeout=timeout
        )
    except grpc.RpcError as e:
        detail = e.details() if isinstance(e, grpc.Call) else str(e)
        code = e.code().name if isinstance(e, grpc.Call) else "error"
        raise ConnectorError(
            f"the verification service refused the events ({code}): {detail}"
        ) from None
    finally:
        channel.close()
    return int(reply.received)
