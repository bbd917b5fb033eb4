"""Import of connector data from CSV (DESIGN §10).

UTF-8, a header row, the first column ``id_number`` then one column per declared field, integer
values; several rows of one person are added up. Each ID number becomes the connector's token
by blinded evaluation at the token authority; the plaintext is not kept. The registry's file is
``household_id,id_number,relation,birth_date``. A file with any error imports nothing: every
problem is reported with the file, line and reason.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from hedui.connectors.errors import ImportRejected, ImportWouldShrink, RowProblem
from hedui.connectors.integrity import RowSeal
from hedui.connectors.store import HoldingStore, Person, RegisterStore, open_engine
from hedui.connectors.tokenizer import Tokenizer
from hedui.core.deployment import ConnectorKind, kind_of
from hedui.core.errors import InvalidResidentId
from hedui.core.keystore import REGISTRY_ID
from hedui.core.resident_id import parse as parse_id

RELATIONS = ("head", "spouse", "child", "parent", "grandchild", "sibling", "other")
REGISTRY_HEADER = ["household_id", "id_number", "relation", "birth_date"]
# an optional fifth column: the household's county-level district (GB/T 2260, 6 digits)
DISTRICT = "district"


@dataclass(frozen=True)
class Register:
    """The household register as read from its CSV file."""

    people: list[Person]
    districts: dict[str, str]  # household id -> district, for the households that name one


def _read(path: Path) -> tuple[list[list[str]], list[RowProblem]]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            return list(csv.reader(f)), []
    except FileNotFoundError:
        return [], [RowProblem(path.name, 0, f"{path} does not exist")]
    except IsADirectoryError:
        return [], [RowProblem(path.name, 0, f"{path} is a folder, not a CSV file")]
    except OSError as e:
        return [], [RowProblem(path.name, 0, f"cannot read {path}: {e.strerror}")]
    except UnicodeDecodeError as e:
        return [], [RowProblem(path.name, 0, f"not UTF-8 text ({e.reason})")]
    except csv.Error as e:
        return [], [RowProblem(path.name, 0, f"not a CSV file ({e})")]


def _check_id(
    text: str, file: str, line: int, problems: list[RowProblem], today: dt.date
) -> str | None:
    try:
        return parse_id(text, today=today).value
    except InvalidResidentId as e:
        problems.append(RowProblem(file, line, f"id_number: {e}"))
        return None


def parse_holdings(path: Path, kind: ConnectorKind, *, today: dt.date) -> dict[str, dict[str, int]]:
    """Validate a connector's CSV and return the totals per ID number, in memory only
    (raises ImportRejected)."""
    rows, problems = _read(path)
    name = path.name
    totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(kind.field_names, 0))
    if not rows and not problems:
        problems.append(RowProblem(name, 1, "the file is empty; it needs at least the header row"))
    if problems:
        raise ImportRejected(problems)
    header = [h.strip() for h in rows[0]]
    expected = ["id_number", *kind.field_names]
    if header[:1] != ["id_number"] or sorted(header[1:]) != sorted(kind.field_names):
        raise ImportRejected(
            [RowProblem(name, 1, f"header must be {','.join(expected)}; got {','.join(header)}")]
        )
    limits = {f.name: f.max_value for f in kind.fields}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problems.append(
                RowProblem(name, line, f"{len(row)} columns, the header has {len(header)}")
            )
            continue
        id_number = _check_id(row[0], name, line, problems, today)
        values: dict[str, int] = {}
        for field, cell in zip(header[1:], row[1:], strict=True):
            text = cell.strip()
            if not text.isascii() or not text.isdigit():
                problems.append(
                    RowProblem(
                        name,
                        line,
                        f"{field}: {text!r} is not a non-negative whole number "
                        "(money is in fen, without a decimal point)",
                    )
                )
                continue
            value = int(text)
            if value > limits[field]:
                problems.append(
                    RowProblem(
                        name, line, f"{field}: {value} exceeds the declared maximum {limits[field]}"
                    )
                )
                continue
            values[field] = value
        if id_number is None or len(values) != len(kind.fields):
            continue
        token_totals = totals[id_number]
        for field, value in values.items():
            token_totals[field] += value
            if token_totals[field] > limits[field]:
                problems.append(
                    RowProblem(
                        name,
                        line,
                        f"{field}: the person's total exceeds the declared maximum {limits[field]}",
                    )
                )
    if problems:
        raise ImportRejected(problems)
    return dict(totals)


def read_holdings(
    path: Path, kind: ConnectorKind, tokenizer: Tokenizer, *, today: dt.date
) -> dict[bytes, dict[str, int]]:
    """Validate a connector's CSV and return its totals per token: the ID numbers go to the
    token authority blinded, and are not kept."""
    return by_token(parse_holdings(path, kind, today=today), tokenizer)


def by_token(
    per_id: dict[str, dict[str, int]], tokenizer: Tokenizer
) -> dict[bytes, dict[str, int]]:
    """Totals per ID number as totals per token (the IDs go to the token authority blinded)."""
    ids = list(per_id)
    tokens = tokenizer.tokens(ids) if ids else []
    return {t: per_id[i] for i, t in zip(ids, tokens, strict=True)}


def read_register(path: Path, *, today: dt.date) -> Register:
    """Validate the household register's CSV (raises ImportRejected)."""
    rows, problems = _read(path)
    name = path.name
    if not rows and not problems:
        problems.append(RowProblem(name, 1, "the file is empty; it needs at least the header row"))
    if problems:
        raise ImportRejected(problems)
    header = [h.strip() for h in rows[0]]
    if header not in (REGISTRY_HEADER, [*REGISTRY_HEADER, DISTRICT]):
        raise ImportRejected(
            [
                RowProblem(
                    name,
                    1,
                    f"header must be {','.join(REGISTRY_HEADER)}[,{DISTRICT}]; got {','.join(header)}",
                )
            ]
        )
    people: dict[str, Person] = {}
    districts: dict[str, str] = {}
    heads: dict[str, int] = defaultdict(int)
    first_line: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problems.append(
                RowProblem(name, line, f"{len(row)} columns, the header has {len(header)}")
            )
            continue
        household, raw_id, relation, birth, *place = (c.strip() for c in row)
        if place and place[0]:
            if not (len(place[0]) == 6 and place[0].isascii() and place[0].isdigit()):
                problems.append(
                    RowProblem(name, line, f"district {place[0]!r} is not a 6-digit GB/T 2260 code")
                )
            elif districts.setdefault(household, place[0]) != place[0]:
                problems.append(
                    RowProblem(
                        name,
                        line,
                        f"household {household} is in district {districts[household]} on an "
                        "earlier line",
                    )
                )
        if not household or len(household) > 64:
            problems.append(RowProblem(name, line, "household_id must be 1 to 64 characters"))
        if relation not in RELATIONS:
            problems.append(
                RowProblem(
                    name, line, f"relation {relation!r} is not one of {', '.join(RELATIONS)}"
                )
            )
        try:
            birth_date = dt.date.fromisoformat(birth)
            if len(birth) != 10:
                raise ValueError
        except ValueError:
            problems.append(
                RowProblem(name, line, f"birth_date {birth!r} is not a date YYYY-MM-DD")
            )
            birth_date = None
        id_number = _check_id(raw_id, name, line, problems, today)
        if id_number is None:
            continue
        if birth_date is not None and id_number[6:14] != birth_date.strftime("%Y%m%d"):
            problems.append(
                RowProblem(name, line, "birth_date differs from the birth date in the ID number")
            )
        if id_number in people:
            problems.append(
                RowProblem(
                    name, line, f"this ID number is already listed on line {first_line[id_number]}"
                )
            )
            continue
        first_line[id_number] = line
        people[id_number] = Person(
            id_number=id_number, household_id=household, relation=relation, birth_date=birth
        )
        if relation == "head":
            heads[household] += 1
    for household in {p.household_id for p in people.values()}:
        if heads[household] != 1:
            problems.append(
                RowProblem(
                    name,
                    0,
                    f"household {household} has {heads[household]} heads, it needs exactly 1",
                )
            )
    if problems:
        raise ImportRejected(problems)
    return Register(list(people.values()), districts)


def import_holdings(
    path: Path, store: HoldingStore, kind: ConnectorKind, tokenizer: Tokenizer, *, today: dt.date
) -> int:
    return store.replace_all(
        read_holdings(path, kind, tokenizer, today=today),
        tokenizer.check_value(),
        tokenizer.epoch,
    )


def import_register(path: Path, store: RegisterStore, *, today: dt.date) -> int:
    register = read_register(path, today=today)
    return store.replace_all(register.people, register.districts)


@dataclass(frozen=True)
class Dataset:
    """A validated data file, ready to be written: the register's people or a connector's totals."""

    connector_id: str
    people: list[Person] | None = None
    districts: dict[str, str] = dataclasses.field(default_factory=dict)
    totals: dict[bytes, dict[str, int]] | None = None
    token_key_check: bytes = b""
    epoch: int = 0

    @property
    def size(self) -> int:
        return len(self.people if self.people is not None else self.totals or {})


def validate_dataset(path: Path, connector_id: str, *, today: dt.date) -> int:
    """Check a data file without importing it (no token is made); the number of people."""
    if connector_id == REGISTRY_ID:
        return len(read_register(path, today=today).people)
    if not path.exists():
        return 0
    return len(parse_holdings(path, kind_of(connector_id), today=today))


def read_dataset(
    path: Path, connector_id: str, tokenizer: Tokenizer | None, *, today: dt.date
) -> Dataset:
    """Validate ``path`` for ``connector_id`` and make its tokens (every connector but the
    register needs the token authority); a missing file is an empty data set."""
    if connector_id == REGISTRY_ID:
        register = read_register(path, today=today)
        return Dataset(connector_id, people=register.people, districts=register.districts)
    if tokenizer is None:
        raise ImportRejected([RowProblem(path.name, 0, "tokens need the token authority")])
    totals = (
        read_holdings(path, kind_of(connector_id), tokenizer, today=today) if path.exists() else {}
    )
    return holdings_dataset(connector_id, totals, tokenizer)


def holdings_dataset(
    connector_id: str, totals: dict[bytes, dict[str, int]], tokenizer: Tokenizer
) -> Dataset:
    """A connector's data set: its totals per token, of the tokenizer's epoch and key."""
    return Dataset(
        connector_id,
        totals=totals,
        token_key_check=tokenizer.check_value(),
        epoch=tokenizer.epoch,
    )


MAX_SHRINK = 0.2  # an import may lose at most this share of a connector's people


def current_population(db_path: Path, connector_id: str) -> int | None:
    """How many people the connector's database holds now; None when it has none yet."""
    if not db_path.exists():
        return None
    engine = open_engine(f"sqlite:///{db_path}")
    try:
        store = RegisterStore(engine) if connector_id == REGISTRY_ID else HoldingStore(engine)
        return store.population()
    finally:
        engine.dispose()


def check_shrink(
    connector_id: str, before: int | None, after: int, *, max_share: float = MAX_SHRINK
) -> None:
    """Refuse an import that empties a connector or loses over ``max_share`` of its people.

    A connector that holds nothing answers 0 for everyone: the favourable direction. So a
    header-only file, or a truncated export, must not quietly replace real data.
    """
    if not before or after >= before * (1 - max_share):
        return
    what = (
        "the file holds nobody"
        if after == 0
        else f"it would drop {before - after} of {before} people ({(before - after) / before:.0%})"
    )
    raise ImportWouldShrink(
        f"{connector_id} holds {before} people now and {what}; nothing was imported. "
        f"If that is intended, run it again with --allow-shrink (the limit is a loss of "
        f"{max_share:.0%})"
    )


def write_database(db_path: Path, data: Dataset, seal: RowSeal | None = None) -> None:
    """Write a connector's database beside its place and move it there only once complete,
    so a failed or interrupted import never leaves a half-filled database behind."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = db_path.with_name(db_path.name + ".importing")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        p.unlink(missing_ok=True)
    engine = open_engine(f"sqlite:///{tmp}")
    try:
        if data.people is not None:
            RegisterStore(engine).replace_all(data.people, data.districts)
        else:
            HoldingStore(engine, seal).replace_all(
                data.totals or {}, data.token_key_check, data.epoch
            )
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        engine.dispose()
    for p in (
        Path(f"{tmp}-wal"),
        Path(f"{tmp}-shm"),
        Path(f"{db_path}-wal"),
        Path(f"{db_path}-shm"),
    ):
        p.unlink(missing_ok=True)
    os.replace(tmp, db_path)
