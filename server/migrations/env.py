"""Alembic's environment: migrate on the connection hedui.core.migrations passes in."""

from hedui.core.migrations import run_env

run_env()
