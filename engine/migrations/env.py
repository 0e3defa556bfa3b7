"""Alembic environment of the decision store.

`engine.database.migrate` passes an open connection (inside its transaction) through
`config.attributes["connection"]`; without one, the URL comes from the `sqlalchemy.url` option
of the Config (see `engine.database.alembic_config`), online or, for reviewing the SQL, offline.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from engine.database import connect
from engine.schema import metadata


def _configure(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite rebuilds tables to alter
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url given to the migrations")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = connect(url)
    try:
        with engine.begin() as conn:
            _configure(conn)
    finally:
        engine.dispose()


_run()
