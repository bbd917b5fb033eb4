"""Alembic migration scripts of this package's tables (see ``hedui.core.migrations``)."""
