"""`features.wire.read_replies` against the real Redis: a round trip's replies in order, error
replies in place, RESP3 push messages (here a client-side-caching invalidation) kept out of
the replies, and a server that stops answering within the connection's timeout."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio

from features.wire import pack, read_replies
from tests.conftest import TEST_REDIS_URL


async def _round_trip(conn, commands):
    await conn.send_packed_command([pack(commands)], check_health=False)
    return await read_replies(conn, len(commands))


def test_replies_in_order_with_error_replies_in_place(redis_client):
    redis_client.hset("w:h", mapping={"a": 1})

    async def run():
        client = redis.asyncio.Redis.from_url(TEST_REDIS_URL, socket_timeout=5)
        conn = await client.connection_pool.get_connection()
        try:
            return await _round_trip(
                conn, [("HGETALL", "w:h"), ("EVALSHA", "0" * 40, "0"), ("INCR", "w:n")]
            )
        finally:
            await client.connection_pool.release(conn)
            await client.aclose()

    found, error, counted = asyncio.run(run())
    assert found in ({b"a": b"1"}, [b"a", b"1"])  # RESP3 map or RESP2 flat list
    assert isinstance(error, redis.exceptions.NoScriptError)
    assert counted == 1


def test_a_push_message_is_not_taken_for_a_reply(redis_client):
    redis_client.hset("w:h1", mapping={"a": 1})
    redis_client.hset("w:h2", mapping={"b": 2})
    redis_client.set("w:k", 0)

    async def run():
        client = redis.asyncio.Redis.from_url(TEST_REDIS_URL, socket_timeout=5, protocol=3)
        conn = await client.connection_pool.get_connection()
        try:
            await conn.send_command("CLIENT", "TRACKING", "ON")
            assert await conn.read_response() == b"OK"
            await conn.send_command("GET", "w:k")
            await conn.read_response()
            redis_client.set("w:k", 1)  # Redis now pushes an invalidation to `conn`
            await asyncio.sleep(0.05)
            replies = await _round_trip(conn, [("HGETALL", "w:h1"), ("HGETALL", "w:h2")])
            after = await _round_trip(conn, [("PING",)])
            return replies, after
        finally:
            await client.connection_pool.release(conn)
            await client.aclose()

    replies, after = asyncio.run(run())
    assert replies == [{b"a": b"1"}, {b"b": b"2"}]
    assert after == [b"PONG"]  # the stream is still in step


def test_a_server_that_does_not_answer_times_out(redis_client):
    async def run():
        client = redis.asyncio.Redis.from_url(TEST_REDIS_URL, socket_timeout=0.3)
        conn = await client.connection_pool.get_connection()
        try:
            with pytest.raises(TimeoutError):
                await _round_trip(conn, [("BLPOP", "w:empty", "5")])
        finally:
            await conn.disconnect()
            await client.connection_pool.release(conn)
            await client.aclose()

    asyncio.run(run())
