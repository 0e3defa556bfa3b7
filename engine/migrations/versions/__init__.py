"""Alembic revisions, oldest first: a revision is never edited once released."""
