"""A connector's data read straight from its source system's database (`hedui connector sync`).

A bank does not export CSV files: its connector config names a SQLAlchemy URL and, per declared
field, one read-only SQL query returning ``(id_number, value)`` rows::

    [source]
    url = "postgresql+psycopg://hedui_reader@corebank.example/core"

    [source.queries]
    deposits = "SELECT c.id_number, a.balance_fen FROM accounts a JOIN customers c USING (customer_no) WHERE a.kind = 'deposit'"
    wealth_products = "SELECT ..."

The queries run in one read-only transaction (PostgreSQL: ``SET TRANSACTION READ ONLY``, so a
query that would write is refused by the source itself), streamed in chunks; several rows of one
person are added up. Every row is checked as a CSV row is (a valid ID number, a whole number of
fen within the field's declared maximum); a source with any bad row imports nothing.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from hedui.connectors.errors import ConnectorError, ImportRejected, RowProblem
from hedui.core.config import ENV_PREFIX, read_toml
from hedui.core.deployment import ConnectorKind
from hedui.core.errors import InvalidResidentId
from hedui.core.resident_id import parse as parse_id

MAX_PROBLEMS = 50
CHUNK = 5000


@dataclass(frozen=True)
class SourceConfig:
    url: str
    queries: Mapping[str, str]  # declared field -> SQL returning (id_number, value) rows


def load_source(path: Path, env: Mapping[str, str]) -> SourceConfig:
    """The ``[source]`` table of a connector's config; ``HEDUI_SOURCE_URL`` overrides its URL
    (so that a password need not be in the file)."""
    table = read_toml(path, "write the connector's config").get("source")
    if not isinstance(table, dict):
        raise ConnectorError(f"{path} has no [source] table: the source database and queries")
    url = env.get(ENV_PREFIX + "SOURCE_URL", table.get("url"))
    queries = table.get("queries")
    if not isinstance(url, str) or not url:
        raise ConnectorError(f"{path} [source]: url (a SQLAlchemy URL) is required")
    if not isinstance(queries, dict) or not all(isinstance(q, str) for q in queries.values()):
        raise ConnectorError(f"{path} [source.queries]: one SQL query per declared field")
    return SourceConfig(url, dict(queries))


def read_source(
    source: SourceConfig,
    kind: ConnectorKind,
    *,
    today: dt.date,
    progress: Callable[[str, int], None] = lambda _f, _n: None,
) -> dict[str, dict[str, int]]:
    """The totals per ID number, from the source's queries (raises ImportRejected, naming the
    query and row of every problem, or ConnectorError when the source cannot be read)."""
    declared = set(kind.field_names)
    unknown, missing = set(source.queries) - declared, declared - set(source.queries)
    if unknown or missing:
        raise ConnectorError(
            f"[source.queries] must name each declared field of {kind.kind} once "
            f"({', '.join(kind.field_names)})"
            + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else "")
            + (f"; missing: {', '.join(sorted(missing))}" if missing else "")
        )
    limits = {f.name: f.max_value for f in kind.fields}
    totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(kind.field_names, 0))
    problems: list[RowProblem] = []
    engine = create_engine(source.url, hide_parameters=True)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SET TRANSACTION READ ONLY"))
            for field in kind.field_names:
                where = f"query {field}"
                result = conn.execution_options(stream_results=True, yield_per=CHUNK).execute(
                    text(source.queries[field])
                )
                n = 0
                for n, row in enumerate(result, start=1):
                    if len(problems) >= MAX_PROBLEMS:
                        break
                    if len(row) != 2:
                        problems.append(RowProblem(where, n, f"{len(row)} columns, not 2"))
                        break
                    try:
                        id_number = parse_id(str(row[0]), today=today).value
                    except InvalidResidentId as e:
                        problems.append(RowProblem(where, n, f"id_number: {e}"))
                        continue
                    value = row[1]
                    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                        problems.append(
                            RowProblem(
                                where,
                                n,
                                f"{field}: {value!r} is not a non-negative whole number "
                                "(money is in fen; cast it to an integer in the query)",
                            )
                        )
                        continue
                    person = totals[id_number]
                    person[field] += value
                    if person[field] > limits[field]:
                        problems.append(
                            RowProblem(
                                where,
                                n,
                                f"{field}: the person's total exceeds the "
                                f"declared maximum {limits[field]}",
                            )
                        )
                    if n % CHUNK == 0:
                        progress(field, n)
                progress(field, n)
            conn.rollback()
    except SQLAlchemyError as e:
        raise ConnectorError(
            f"the source database could not be read ({type(e).__name__}: "
            f"{str(e.orig if hasattr(e, 'orig') else e).splitlines()[0]}); nothing was imported"
        ) from None
    finally:
        engine.dispose()
    if problems:
        raise ImportRejected(problems)
    return dict(totals)
