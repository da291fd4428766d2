"""Alembic environment and versions: the only way the fleet schema changes."""
