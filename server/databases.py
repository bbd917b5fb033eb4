"""``hedui db upgrade|status --config FILE``: the service's two databases, the audit log and its
state, brought to this release's schema by migration (see ``hedui.core.migrations``)."""

from __future__ import annotations

from hedui.audit.schema import AUDIT_SCHEMA
from hedui.core.migrations import Schema, Upgraded, current, upgrade
from hedui.server.config import ServiceConfig
from hedui.server.schema import SERVICE_SCHEMA


def _databases(config: ServiceConfig) -> tuple[tuple[str, Schema], ...]:
    return ((config.audit_database, AUDIT_SCHEMA), (config.service_database, SERVICE_SCHEMA))


def upgrade_databases(config: ServiceConfig) -> list[Upgraded]:
    """Bring the audit log's and the state's databases to this release's schema."""
    return [upgrade(url, schema) for url, schema in _databases(config)]


def database_status(config: ServiceConfig) -> list[tuple[Schema, str, str]]:
    """Each database's schema, its revision and this release's."""
    return [(schema, *current(url, schema)) for url, schema in _databases(config)]
