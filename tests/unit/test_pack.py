"""`features.wire.pack` writes what redis-py's own packer writes, for every kind of argument
the online store sends (str, unicode, bytes, int, float)."""

from __future__ import annotations

import redis.asyncio

from features.wire import pack


def test_pack_matches_redis_py_byte_for_byte():
    commands = [
        ("HGETALL", "arb:{account:acct-000123}"),
        ("GET", "arb:{account:Zoë-ß-账户}:suspended"),
        ("EVALSHA", "a" * 40, "2", "arb:seen:1", b"raw\x00bytes", 0, -17, 12345678901234,
         0.1, 1e-300, 2.5, ""),
        ("PING",),
    ]  # fmt: skip
    connection = redis.asyncio.Connection()
    assert pack(commands) == b"".join(connection.pack_commands(commands))
    assert pack([]) == b""
