"""The service's state under migration (scripts in ``hedui.server:migrations``): the metadata
its tables' models share, and the schema's migration settings."""

from sqlalchemy.orm import DeclarativeBase

from hedui.core.migrations import Schema


class Base(DeclarativeBase):
    """The service state's tables (requests, consent cases, monitoring and alerts)."""


# release 0.1.0's verdict_record; the builds after it added the claim's owner at start, before
# migrations existed
_VERDICT_0_1_0 = frozenset(
    {"request_key", "application", "verdict", "claimed_at", "query_id", "from_size", "pending"}
)

SERVICE_SCHEMA = Schema(
    name="the service's state",
    location="hedui.server:migrations",
    version_table="hedui_service_version",
    baseline="service_0001",
    baseline_columns={
        "verdict_record": _VERDICT_0_1_0,
        "consent_case": frozenset({"case_key", "household"}),
    },
    unversioned={"service_0002": {"verdict_record": _VERDICT_0_1_0 | {"owner"}}},
)
