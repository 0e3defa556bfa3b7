"""Redis's wire format (RESP) for the commands the online store sends, and the replies read
back: its hot path packs the commands and reads the replies itself.

`pack` writes the commands in a third of redis-py's time (tests/unit/test_pack.py checks the
bytes against redis-py's own packer). `read_replies` reads a round trip's replies straight from
the connection's hiredis reader: redis-py's `read_response`, called once per reply, opens a
timeout context and checks the connection each time (about 15 us per reply, six replies per
decision); here one timeout covers the round trip. `send` and `send_async` make one round
trip on a pooled connection (`round_trip_async` on a connection acquired elsewhere: a cluster
node's); `script_lost` and `checked` judge its replies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser

from features.errors import FeatureStoreUnavailable


def pack(commands: Sequence[Sequence[Any]]) -> bytes:
    """Commands in Redis's wire format (RESP), as redis-py's `pack_commands` writes them for
    the str, bytes and int arguments used here, in a third of its time (its encoder's checks
    and buffer splitting cost about 60 us on a decision's five commands). Sent as a list of one
    buffer: the blocking client iterates what it is given."""
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def read_replies(conn: Any, count: int) -> list[Any]:
    """The next `count` replies on `conn` (a redis.asyncio connection), error replies as
    their `redis.ResponseError` in place (the stream stays in step), within the connection's
    `socket_timeout` for all of them (asyncio's `TimeoutError` past it). Raises
    `redis.ConnectionError` when the server closes the connection."""
    parser = getattr(conn, "_parser", None)
    reader = getattr(parser, "_reader", None)
    if type(parser) is not _AsyncHiredisParser or reader is None or not conn.is_connected:
        return await _one_by_one(conn, count)  # another parser: redis-py's own reads
    push = getattr(parser, "_hiredis_PushNotificationType", None)
    replies: list[Any] = []
    async with asyncio.timeout(conn.socket_timeout):
        while len(replies) < count:
            reply = reader.gets()
            if reply is NOT_ENOUGH_DATA:
                await parser.read_from_socket()  # type: ignore[no-untyped-call]
                continue
            if push is not None and isinstance(reply, push):
                # RESP3's out-of-band messages (invalidations, maintenance notices) are no
                # command's reply: redis-py's push handler takes them, as its own reads do.
                await parser.handle_push_response(reply)  # type: ignore[no-untyped-call]
                continue
            if isinstance(reply, redis.ConnectionError):
                raise reply
            if isinstance(reply, list) and reply and isinstance(reply[0], redis.ConnectionError):
                raise reply[0]
            replies.append(reply)
    return replies


async def _one_by_one(conn: Any, count: int) -> list[Any]:
    replies: list[Any] = []
    for _ in range(count):
        try:
            replies.append(await conn.read_response())
        except redis.ResponseError as exc:
            replies.append(exc)
    return replies


async def send_async(
    pool: redis.asyncio.ConnectionPool, commands: Sequence[Sequence[Any]]
) -> list[Any]:
    """`commands` pipelined on one connection of `pool` (a redis.asyncio pool) and their
    replies, error replies in place; `FeatureStoreUnavailable` when Redis cannot be reached
    or does not answer in time."""
    try:
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    except (redis.RedisError, OSError) as exc:
        raise FeatureStoreUnavailable(f"Redis: {exc}") from exc
    try:
        return await round_trip_async(conn, commands)
    finally:
        await pool.release(conn)


async def round_trip_async(
    conn: Any,
    commands: Sequence[Sequence[Any]],
    errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError),
) -> list[Any]:
    """`commands` pipelined on `conn` (a redis.asyncio connection the caller acquired and
    releases) and their replies, error replies in place; `FeatureStoreUnavailable` for a
    timeout or one of `errors`."""
    complete = False
    try:
        await conn.send_packed_command([pack(commands)], check_health=False)
        replies = await read_replies(conn, len(commands))
        complete = True
        return replies
    except TimeoutError as exc:  # asyncio's, around `read_replies`
        raise FeatureStoreUnavailable(f"Redis: no reply within {conn.socket_timeout} s") from exc
    except errors as exc:
        raise FeatureStoreUnavailable(f"Redis: {exc}") from exc
    finally:
        # A round trip cut short (an error, or the request cancelled) may leave replies
        # unread on the connection: it is closed, never handed to the next request. A
        # cancelled request's EVALSHA may still have counted its event: the retry is safe
        # (the dedupe marker), its features then include the event itself.
        if not complete:
            await conn.disconnect()


def send(pool: redis.ConnectionPool, commands: Sequence[Sequence[Any]]) -> list[Any]:
    """`send_async` for a blocking client's `pool`."""
    try:
        conn = pool.get_connection()
    except redis.RedisError as exc:
        raise FeatureStoreUnavailable(f"Redis: {exc}") from exc
    try:
        conn.send_packed_command([pack(commands)])  # type: ignore[no-untyped-call]
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except redis.ResponseError as exc:  # an error reply; the stream stays in step
                replies.append(exc)
        return replies
    except redis.RedisError as exc:
        conn.disconnect()  # type: ignore[no-untyped-call]
        raise FeatureStoreUnavailable(f"Redis: {exc}") from exc
    finally:
        pool.release(conn)


def script_lost(replies: Sequence[Any]) -> bool:
    """Every error reply says the apply script is missing (Redis restarted): load it, resend."""
    errors = [r for r in replies if isinstance(r, redis.ResponseError)]
    return bool(errors) and all(isinstance(e, redis.exceptions.NoScriptError) for e in errors)


def checked(replies: list[Any]) -> list[Any]:
    """The replies, or `FeatureStoreUnavailable` for the first error reply among them."""
    error = next((r for r in replies if isinstance(r, redis.ResponseError)), None)
    if error is not None:
        raise FeatureStoreUnavailable(f"Redis: {error}")
    return replies
