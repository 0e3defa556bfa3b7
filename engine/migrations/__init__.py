"""Alembic migrations of the decision store; applied by `engine.database.migrate`."""
