"""Redis clients (features/connect.py) on the real Redis: the connections a pool opens, as it
grows in a burst or after a Redis restart, share one driver description (what `CLIENT SETINFO`
sends) instead of each looking redis-py's version up in the installed packages again (about
a millisecond of the event loop per connection)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio.connection
import redis.utils

from features.connect import driver_info, redis_clients
from tests.conftest import TEST_REDIS_URL

pytestmark = pytest.mark.integration


def test_new_connections_share_one_driver_description_made_once(redis_server, monkeypatch):
    made = driver_info()
    looked_up: list[str] = []

    def lookup() -> str:
        looked_up.append("version")
        return "0.0.0"

    monkeypatch.setattr(redis.utils, "get_lib_version", lookup)
    # What the patch catches: a connection made without the shared description looks it up.
    redis.asyncio.connection.Connection(host="127.0.0.1")
    assert looked_up == ["version"]
    looked_up.clear()

    sync, async_client = redis_clients(TEST_REDIS_URL, 5)

    async def grow_the_pool() -> list[bool]:
        pool = async_client.connection_pool
        held = [await pool.get_connection() for _ in range(6)]  # six new connections
        shared = [c.driver_info is made for c in held]
        for connection in held:
            await pool.release(connection)
        await asyncio.gather(*(async_client.ping() for _ in range(6)))
        await async_client.aclose()
        return shared

    try:
        assert asyncio.run(grow_the_pool()) == [True] * 6
        assert sync.ping() and sync.connection_pool.get_connection().driver_info is made
    finally:
        sync.close()
    assert looked_up == []  # none of those connections looked the version up
    assert made.lib_version == redis.__version__ and made.name == "redis-py"
