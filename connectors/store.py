"""Connector databases through SQLAlchemy (SQLite by default; the URL decides).

An answering connector stores, per token, the total of each declared field: never a plaintext
ID. The household registry is the population register itself and stores ID numbers.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from sqlalchemy import (
    BigInteger,
    Engine,
    Integer,
    LargeBinary,
    Select,
    String,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from hedui.connectors.errors import ConnectorError
from hedui.connectors.integrity import DataIntegrityError, RowSeal, describe
from hedui.core.config import unusable_url


class Base(DeclarativeBase):
    pass


class Holding(Base):
    """One field's total for one token at this connector, sealed by the connector's key."""

    __tablename__ = "holding"
    token: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    field: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
    mac: Mapped[bytes] = mapped_column(LargeBinary(32))


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


class HouseholdPlace(Base):
    """Where a household is registered (registry connector only): its county-level district
    (GB/T 2260), to which 主动发现 alerts about it are assigned."""

    __tablename__ = "household_place"
    household_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    district: Mapped[str] = mapped_column(String(6))


class CampaignRow(Base):
    """A campaign (standing authorisation) the civil-affairs bureau registered (registry only)."""

    __tablename__ = "campaign"
    number: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[int] = mapped_column(Integer)
    program: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(128))
    issued_on: Mapped[str] = mapped_column(String(10))
    valid_until: Mapped[str] = mapped_column(String(10))
    document_sha256: Mapped[bytes] = mapped_column(LargeBinary)
    households: Mapped[int] = mapped_column(Integer)
    registered_by: Mapped[str] = mapped_column(String(128))
    registered_unix_ms: Mapped[int] = mapped_column(BigInteger)


class CampaignHousehold(Base):
    """A household on a registered campaign's roster (registry only)."""

    __tablename__ = "campaign_household"
    number: Mapped[str] = mapped_column(String(64), primary_key=True)
    household_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class MonitoringHandle(Base):
    """A monitoring handle the registry issued (registry only): whom it names, under which
    campaign and programme, until when, and how often it was used. The handle itself is not
    stored, only its SHA-256: the service holds the handle, the registry the record, and
    neither alone re-checks a household."""

    __tablename__ = "monitoring_handle"
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    id_number: Mapped[str] = mapped_column(String(18))
    campaign: Mapped[str] = mapped_column(String(64), index=True)
    program: Mapped[str] = mapped_column(String(32))
    until: Mapped[str] = mapped_column(String(10))
    issued_unix_ms: Mapped[int] = mapped_column(BigInteger)
    uses: Mapped[int] = mapped_column(BigInteger, default=0)
    last_used_unix_ms: Mapped[int] = mapped_column(BigInteger, default=0)


class DecoyGroup(Base):
    """Which group of households each household is asked about with (registry only; issue #26,
    :mod:`hedui.connectors.decoys`): every query of any household of a group names the members
    of all of them. Kept so that a group stays the same when the register changes: a new
    household joins a group, a household that left drops out of it. ``epoch`` is 0: one
    partition serves every token epoch."""

    __tablename__ = "decoy_group"
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    k: Mapped[int] = mapped_column(Integer, primary_key=True)
    household_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    group_no: Mapped[int] = mapped_column(Integer)


class AnsweredQuery(Base):
    """Query ids a connector has answered: a grant is good for one answer only."""

    __tablename__ = "answered_query"
    query_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    time_ms: Mapped[int] = mapped_column(BigInteger, index=True)


class OprfUsage(Base):
    """Elements the token authority evaluated for one connector on one day (UTC+8 date)."""

    __tablename__ = "oprf_usage"
    connector_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class OprfAlert(Base):
    """A connector that asked for more evaluations than its allowance."""

    __tablename__ = "oprf_alert"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    connector_id: Mapped[str] = mapped_column(String(64))
    time_ms: Mapped[int] = mapped_column(BigInteger)
    used: Mapped[int] = mapped_column(BigInteger)
    requested: Mapped[int] = mapped_column(BigInteger)
    allowance: Mapped[int] = mapped_column(BigInteger)


_Row = TypeVar("_Row", bound=Base)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def open_engine(url: str) -> Engine:
    try:
        engine = create_engine(url, hide_parameters=True)  # never an ID in an error message
    except (SQLAlchemyError, ImportError) as e:
        raise ConnectorError(
            f"the connector's database_url cannot be used ({unusable_url(e)}): give a SQLAlchemy URL such as "
            "sqlite:///path or postgresql+psycopg://user@host/db"
        ) from None
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: object, _record: object) -> None:
            cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    try:
        Base.metadata.create_all(engine)
    except SQLAlchemyError as e:
        where = engine.url.render_as_string(hide_password=True)
        raise ConnectorError(
            f"the connector's database {where} cannot be opened ({type(e).__name__}): check "
            "database_url in its config and that the database is running"
        ) from None
    return engine


class HoldingStore:
    """The totals one answering connector holds, by token; every row sealed with ``seal``
    and checked when it is read (see :mod:`hedui.connectors.integrity`)."""

    def __init__(self, engine: Engine, seal: RowSeal | None = None) -> None:
        self._engine = engine
        self._seal = seal

    def _sealer(self) -> RowSeal:
        if self._seal is None:
            raise ConnectorError("this store was opened without the connector's integrity key")
        return self._seal

    def replace_all(
        self, totals: Mapping[bytes, Mapping[str, int]], token_key_check: bytes, epoch: int = 1
    ) -> int:
        """Replace the whole data set in one transaction (an import is a full snapshot)."""
        seal = self._sealer()
        rows = [
            {"token": token, "field": field, "value": value, "mac": seal.row(token, field, value)}
            for token, fields in totals.items()
            for field, value in fields.items()
            if value
        ]
        data_set = seal.data_set(len(rows), len(totals), epoch, token_key_check)
        keys = ["token_key_check", "population", "token_epoch", "data_set"]
        with Session(self._engine) as s, s.begin():
            s.execute(delete(Holding))
            s.execute(delete(Meta).where(Meta.key.in_(keys)))
            s.add(Meta(key="token_key_check", value=token_key_check))
            s.add(Meta(key="token_epoch", value=str(epoch).encode()))
            s.add(Meta(key="population", value=str(len(totals)).encode()))
            s.add(Meta(key="data_set", value=data_set))
            if rows:
                s.execute(insert(Holding), rows)
        return len(totals)

    def verify_all(self) -> list[str]:
        """Check every row and the data set's seal (at start); the problems found, by row."""
        seal = self._sealer()
        problems: list[str] = []
        rows = 0
        with self._engine.connect() as conn:
            for token, field, value, mac in conn.execute(
                select(Holding.token, Holding.field, Holding.value, Holding.mac)
            ):
                rows += 1
                if not hmac.compare_digest(seal.row(bytes(token), field, int(value)), bytes(mac)):
                    problems.append(describe(bytes(token), field))
        meta = self._meta()
        expected = seal.data_set(
            rows,
            int(meta.get("population", b"0")),
            int(meta.get("token_epoch", b"0")),
            meta.get("token_key_check", b""),
        )
        if not hmac.compare_digest(expected, meta.get("data_set", b"")):
            problems.insert(0, "the data set: rows were added or removed, or its facts changed")
        return problems

    def _meta(self) -> dict[str, bytes]:
        with Session(self._engine) as s:
            return {k: bytes(v) for k, v in s.execute(select(Meta.key, Meta.value))}

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

    def token_epoch(self) -> int | None:
        """The token epoch the data was imported under (None: never imported)."""
        with Session(self._engine) as s:
            v = s.scalar(select(Meta.value).where(Meta.key == "token_epoch"))
        return None if v is None else int(bytes(v))

    def first_answer(self, query_id: str, time_ms: int, keep_ms: int) -> bool:
        """Record that ``query_id`` is being answered; False if it was answered before.
        Records older than ``keep_ms`` are dropped (their grants have long expired)."""
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(AnsweredQuery).values(query_id=query_id, time_ms=time_ms))
                if time_ms % 97 == 0:  # now and then, not on every answer
                    conn.execute(
                        delete(AnsweredQuery).where(AnsweredQuery.time_ms < time_ms - keep_ms)
                    )
        except IntegrityError:
            return False
        return True

    def sums_many(
        self, households: Sequence[Sequence[bytes]], fields: Iterable[str]
    ) -> list[dict[str, int]]:
        """Every household's total of every field over its tokens (0 for a token or field not
        held), with one query; raises :class:`DataIntegrityError` when a row it would add fails
        its seal, naming the households those rows belong to and carrying every household's
        sums without them."""
        seal = self._sealer()
        names = list(fields)
        out = [dict.fromkeys(names, 0) for _ in households]
        owner: dict[bytes, list[int]] = {}
        for i, tokens in enumerate(households):
            for t in tokens:
                owner.setdefault(t, []).append(i)
        if not owner:
            return out
        stmt = select(Holding.token, Holding.field, Holding.value, Holding.mac).where(
            Holding.token.in_(list(owner))
        )
        damaged: list[str] = []
        touched: set[int] = set()  # the households a damaged row belongs to
        with self._engine.connect() as conn:  # Core, not an ORM session: this is the hot path
            for token, field, value, mac in conn.execute(stmt):
                token = bytes(token)
                if not hmac.compare_digest(seal.row(token, field, int(value)), bytes(mac)):
                    damaged.append(describe(token, field))
                    touched.update(owner[token])
                    continue
                if field in out[0]:
                    for i in owner[token]:
                        out[i][field] += int(value)
        if damaged:
            raise DataIntegrityError(
                f"{len(damaged)} stored row(s) fail their integrity check",
                damaged,
                tuple(sorted(touched)),
                out,
            )
        return out


class RegisterStore:
    """The household register (公安户籍)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def replace_all(self, people: Sequence[Person], districts: Mapping[str, str] = {}) -> int:
        with Session(self._engine) as s, s.begin():
            s.execute(delete(Person))
            s.execute(delete(HouseholdPlace))
            s.add_all(people)
            s.add_all(HouseholdPlace(household_id=h, district=d) for h, d in districts.items())
        return len(people)

    def districts_of(self, household_ids: Sequence[str]) -> dict[str, str]:
        """The districts of these households, in one query (a household without one is absent)."""
        with Session(self._engine) as s:
            rows = s.execute(
                select(HouseholdPlace.household_id, HouseholdPlace.district).where(
                    HouseholdPlace.household_id.in_(set(household_ids))
                )
            )
            return {h: d for h, d in rows if d}

    def population(self) -> int:
        with Session(self._engine) as s:
            return int(s.scalar(select(func.count()).select_from(Person)) or 0)

    def all_household_ids(self) -> list[str]:
        """Every household of the register."""
        with self._engine.connect() as conn:
            return list(conn.scalars(select(Person.household_id).distinct()))

    def decoy_groups(self, epoch: int, k: int) -> dict[str, int]:
        """household -> its group, for this partition and k (see :class:`DecoyGroup`)."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(DecoyGroup.household_id, DecoyGroup.group_no).where(
                    DecoyGroup.epoch == epoch, DecoyGroup.k == k
                )
            )
            return {h: int(g) for h, g in rows}

    def add_decoy_groups(self, epoch: int, k: int, groups: Mapping[str, int]) -> None:
        """Record the groups of households not grouped yet (a concurrent registry replica's
        rows win: the first to record a household's group decides it)."""
        if not groups:
            return
        rows = [
            {"epoch": epoch, "k": k, "household_id": h, "group_no": g} for h, g in groups.items()
        ]
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(DecoyGroup), rows)
        except IntegrityError:
            with self._engine.begin() as conn:
                for row in rows:
                    try:
                        with conn.begin_nested():
                            conn.execute(insert(DecoyGroup).values(**row))
                    except IntegrityError:
                        continue

    def move_decoy_groups(self, epoch: int, k: int, moves: Mapping[str, int]) -> None:
        """Record households' new groups (a group merged into another, or split), at once."""
        if not moves:
            return
        with Session(self._engine) as s, s.begin():
            for h, g in moves.items():
                row = s.get(DecoyGroup, (epoch, k, h))
                if row is not None:
                    row.group_no = g

    def members_of_households(self, household_ids: Sequence[str]) -> dict[str, list[str]]:
        """The ID numbers of each household's members, in one query."""
        out: dict[str, list[str]] = {h: [] for h in household_ids}
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(Person.household_id, Person.id_number).where(
                    Person.household_id.in_(list(household_ids))
                )
            )
            for h, i in rows:
                out[h].append(i)
        return {h: sorted(ids) for h, ids in out.items()}

    def use_evaluations(
        self,
        connector_id: str,
        day: str,
        window_days: Sequence[str],
        requested: int,
        allowance: int,
        time_ms: int,
    ) -> int | None:
        """Count ``requested`` evaluations for the connector unless its total over
        ``window_days`` would pass ``allowance``; then record an alert and return the total used."""
        with Session(self._engine) as s, s.begin():
            used = int(
                s.scalar(
                    select(func.coalesce(func.sum(OprfUsage.count), 0)).where(
                        OprfUsage.connector_id == connector_id, OprfUsage.day.in_(list(window_days))
                    )
                )
                or 0
            )
            if used + requested > allowance:
                s.add(
                    OprfAlert(
                        connector_id=connector_id,
                        time_ms=time_ms,
                        used=used,
                        requested=requested,
                        allowance=allowance,
                    )
                )
                return used
            row = s.get(OprfUsage, (connector_id, day))
            if row is None:
                s.add(OprfUsage(connector_id=connector_id, day=day, count=requested))
            else:
                row.count += requested
        return None

    def first_use(self, query_id: str, time_ms: int) -> bool:
        """Record a granted query id; False if it was granted before (kept for good)."""
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(AnsweredQuery).values(query_id=query_id, time_ms=time_ms))
        except IntegrityError:
            return False
        return True

    def alerts(self) -> list[OprfAlert]:
        with Session(self._engine) as s:
            out = list(s.scalars(select(OprfAlert).order_by(OprfAlert.id)))
            s.expunge_all()
        return out

    def household_ids(self, id_numbers: Sequence[str]) -> dict[str, str]:
        """ID number -> household id, for those in the register."""
        with Session(self._engine) as s:
            rows = s.execute(
                select(Person.id_number, Person.household_id).where(
                    Person.id_number.in_(list(id_numbers))
                )
            ).all()
        return {i: h for i, h in rows}

    def add_campaign(self, campaign: CampaignRow, household_ids: Iterable[str]) -> bool:
        """Register a campaign and its roster in one transaction; False when its number is
        registered already."""
        try:
            with Session(self._engine, expire_on_commit=False) as s, s.begin():
                s.add(campaign)
                s.flush()
                s.execute(
                    insert(CampaignHousehold),
                    [{"number": campaign.number, "household_id": h} for h in household_ids],
                )
        except IntegrityError:
            return False
        return True

    def _detached(self, stmt: Select[_Row]) -> list[_Row]:
        """The rows of ``stmt``, usable after the session closes."""
        with Session(self._engine) as s:
            out = list(s.scalars(stmt))
            s.expunge_all()
        return out

    def campaigns(self, number: str = "") -> list[CampaignRow]:
        stmt = select(CampaignRow).order_by(CampaignRow.registered_unix_ms)
        return self._detached(stmt.where(CampaignRow.number == number) if number else stmt)

    def on_roster(self, number: str, household_ids: Sequence[str]) -> set[str]:
        """Those of ``household_ids`` on the roster of campaign ``number``, in one query."""
        if not household_ids:
            return set()
        with Session(self._engine) as s:
            return set(
                s.scalars(
                    select(CampaignHousehold.household_id).where(
                        CampaignHousehold.number == number,
                        CampaignHousehold.household_id.in_(set(household_ids)),
                    )
                )
            )

    def add_handle(self, row: MonitoringHandle) -> None:
        with Session(self._engine) as s, s.begin():
            s.add(row)

    def use_handle(
        self, digest: bytes, time_ms: int, until: str | None = None
    ) -> MonitoringHandle | None:
        """The record of a handle with its use counted in the same transaction (or, given
        ``until``, its end moved there instead); None when the registry issued no such handle."""
        with Session(self._engine, expire_on_commit=False) as s, s.begin():
            row = s.get(MonitoringHandle, digest, with_for_update=True)
            if row is None:
                return None
            if until is None:
                row.uses += 1
                row.last_used_unix_ms = time_ms
            else:
                row.until = until
        return row

    def handles(self, campaign: str = "") -> list[MonitoringHandle]:
        stmt = select(MonitoringHandle).order_by(MonitoringHandle.issued_unix_ms)
        return self._detached(
            stmt.where(MonitoringHandle.campaign == campaign) if campaign else stmt
        )

    def households_of(self, id_numbers: Sequence[str]) -> list[list[Person]]:
        """Every member of the household of each ID number, head first (empty when unknown),
        with two queries."""
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
