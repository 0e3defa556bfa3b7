"""Redis clients (features/connect.py) on the real Redis: the connections a pool opens, as it
grows in a burst or after a Redis restart, share one driver description (what `CLIENT SETINFO`
sends) instead of each looking redis-py's version up in the installed packages again (about
a millisecond of the event loop per connection)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio.connection
import redis.utils

from features.connect import driver_info, redis_clients, warm
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


def test_warm_opens_the_pool_before_the_first_burst(redis_server):
    sync, async_client = redis_clients(TEST_REDIS_URL, 5)
    pool = async_client.connection_pool

    def total() -> int:
        return sum(n for n, _ in pool.get_connection_count())

    async def run() -> tuple[int, ...]:
        opened = await warm(async_client, 6)
        idle = pool.get_connection_count()[0][0]
        ids = {int(c["id"]) for c in await async_client.client_list()}
        # A burst as wide as the warm pool: served by the connections opened, none new.
        await asyncio.gather(*(async_client.ping() for _ in range(6)))
        after_burst = total()
        await asyncio.gather(*(async_client.ping() for _ in range(9)))  # wider: the pool grows
        grown = total()
        await async_client.aclose()
        return opened, idle, len(ids), after_burst, grown

    try:
        opened, idle, clients, after_burst, grown = asyncio.run(run())
    finally:
        sync.close()
    assert (opened, idle) == (6, 6)
    assert clients >= 6  # they are open on the server
    assert (after_burst, grown) == (6, 9)


def test_warm_with_no_redis_answering_opens_none_and_does_not_raise(redis_server):
    # A port nothing listens on (the service then starts degraded; /readyz says why).
    _, async_client = redis_clients("redis://127.0.0.1:1/0", 0.5)

    async def run() -> int:
        try:
            return await warm(async_client, 4)
        finally:
            await async_client.aclose()

    assert asyncio.run(run()) == 0
