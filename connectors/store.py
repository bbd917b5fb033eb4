"""Connector databases through SQLAlchemy (SQLite by default; the URL decides).

An answering connector stores, per token, the total of each declared field: never a plaintext
ID. The household registry is the population register itself and stores ID numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Engine,
    LargeBinary,
    String,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


class Base(DeclarativeBase):
    pass


class Holding(Base):
    """One field's total for one token at this connector."""

    __tablename__ = "holding"
    token: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    field: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class Meta(Base):
    """Facts about the data set, e.g. the check value of the token key it was imported under."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)


class Person(Base):
    """One resident in the household register (registry connector only)."""

    __tablename__ = "person"
    id_number: Mapped[str] = mapped_column(String(18), primary_key=True)
    household_id: Mapped[str] = mapped_column(String(64), index=True)
    relation: Mapped[str] = mapped_column(String(16))
    birth_date: Mapped[str] = mapped_column(String(10))


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def open_engine(url: str) -> Engine:
    engine = create_engine(url, hide_parameters=True)  # never an ID in an error message
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: object, _record: object) -> None:
            cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    Base.metadata.create_all(engine)
    return engine


class HoldingStore:
    """The totals one answering connector holds, by token."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def replace_all(self, totals: Mapping[bytes, Mapping[str, int]], token_key_check: bytes) -> int:
        """Replace the whole data set in one transaction (an import is a full snapshot)."""
        rows = [
            {"token": token, "field": field, "value": value}
            for token, fields in totals.items()
            for field, value in fields.items()
            if value
        ]
        with Session(self._engine) as s, s.begin():
            s.execute(delete(Holding))
            s.execute(delete(Meta).where(Meta.key.in_(["token_key_check", "population"])))
            s.add(Meta(key="token_key_check", value=token_key_check))
            s.add(Meta(key="population", value=str(len(totals)).encode()))
            if rows:
                s.execute(insert(Holding), rows)
        return len(totals)

    def population(self) -> int:
        """How many people the last import held (rows of zeros included)."""
        with Session(self._engine) as s:
            v = s.scalar(select(Meta.value).where(Meta.key == "population"))
            if v is not None:
                return int(bytes(v))
            return int(s.scalar(select(func.count(func.distinct(Holding.token)))) or 0)

    def token_key_check(self) -> bytes | None:
        """The check value of the token key the data was imported under (None: never imported)."""
        with Session(self._engine) as s:
            v = s.scalar(select(Meta.value).where(Meta.key == "token_key_check"))
        return None if v is None else bytes(v)

    def sums(self, tokens: Sequence[bytes], fields: Iterable[str]) -> dict[str, int]:
        """The total of every field over ``tokens`` (0 for a token or field not held)."""
        out = dict.fromkeys(fields, 0)
        if not tokens:
            return out
        stmt = (
            select(Holding.field, func.sum(Holding.value))
            .where(Holding.token.in_(list(tokens)))
            .group_by(Holding.field)
        )
        with self._engine.connect() as conn:  # Core, not an ORM session: this is the hot path
            for field, total in conn.execute(stmt):
                if field in out:
                    out[field] = int(total)
        return out

    def sums_many(
        self, households: Sequence[Sequence[bytes]], fields: Iterable[str]
    ) -> list[dict[str, int]]:
        """:meth:`sums` for many households, with one query."""
        names = list(fields)
        out = [dict.fromkeys(names, 0) for _ in households]
        owner: dict[bytes, list[int]] = {}
        for i, tokens in enumerate(households):
            for t in tokens:
                owner.setdefault(t, []).append(i)
        if not owner:
            return out
        stmt = select(Holding.token, Holding.field, Holding.value).where(
            Holding.token.in_(list(owner))
        )
        with self._engine.connect() as conn:
            for token, field, value in conn.execute(stmt):
                if field in out[0]:
                    for i in owner[bytes(token)]:
                        out[i][field] += int(value)
        return out


class RegisterStore:
    """The household register (公安户籍)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def replace_all(self, people: Sequence[Person]) -> int:
        with Session(self._engine) as s, s.begin():
            s.execute(delete(Person))
            s.add_all(people)
        return len(people)

    def population(self) -> int:
        with Session(self._engine) as s:
            return int(s.scalar(select(func.count()).select_from(Person)) or 0)

    def household_of(self, id_number: str) -> list[Person]:
        """Every member of the household of ``id_number``, head first; empty when unknown."""
        with Session(self._engine) as s:
            household = s.scalar(select(Person.household_id).where(Person.id_number == id_number))
            if household is None:
                return []
            members = list(s.scalars(select(Person).where(Person.household_id == household)))
            s.expunge_all()
        members.sort(key=lambda p: (p.relation != "head", p.birth_date, p.id_number))
        return members

    def households_of(self, id_numbers: Sequence[str]) -> list[list[Person]]:
        """:meth:`household_of` for many ID numbers, with two queries."""
        with Session(self._engine) as s:
            rows = s.execute(
                select(Person.id_number, Person.household_id).where(
                    Person.id_number.in_(list(id_numbers))
                )
            ).all()
            household_of = {i: h for i, h in rows}
            members: dict[str, list[Person]] = {}
            if household_of:
                stmt = select(Person).where(Person.household_id.in_(set(household_of.values())))
                for p in s.scalars(stmt):
                    members.setdefault(p.household_id, []).append(p)
            s.expunge_all()
        out = []
        for i in id_numbers:
            found = sorted(
                members.get(household_of.get(i, ""), []),
                key=lambda p: (p.relation != "head", p.birth_date, p.id_number),
            )
            out.append(found)
        return out
