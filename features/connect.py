"""Redis clients from the one URL setting (`ARBITER_REDIS_URL`): a single Redis or a Redis
Cluster.

    redis://host:port/db, rediss://..., unix://...     one Redis (redis-py's own URL forms)
    redis+cluster://[user:password@]host:port[,host:port...]    a Redis Cluster
    rediss+cluster://...                                        the same over TLS

A cluster URL lists one or more of its masters: any one that answers is enough to discover the
others (`CLUSTER SLOTS`), listing several lets a client start while one of them is down. A
cluster has no databases, so a path other than `/` or `/0` is refused. `features.online` picks
the cluster layout when it is handed a cluster client (`features.cluster`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import unquote

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.driver_info import DriverInfo

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
log = logging.getLogger("arbiter.features")

SyncClient = redis.Redis | redis.cluster.RedisCluster
AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def cluster_nodes(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The (host, port) pairs of a cluster URL and its client options (credentials, TLS).
    Raises ValueError saying what is wrong with the URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in CLUSTER_SCHEMES:
        raise ValueError(f"a cluster URL starts with {' or '.join(CLUSTER_SCHEMES)}://")
    netloc, _, path = rest.partition("/")
    if path.partition("?")[0] not in ("", "0") or "?" in rest:
        raise ValueError("a Redis Cluster has only database 0 and takes no URL options")
    options: dict[str, Any] = {"ssl": scheme.lower() == "rediss+cluster"}
    credentials, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, password = credentials.partition(":")
        options["username"] = unquote(user) or None
        options["password"] = unquote(password) if colon else None
    nodes = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"cluster node {item.strip()!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    return nodes, options


_driver: DriverInfo | None = None


def driver_info() -> DriverInfo:
    """What each connection tells Redis about its client (`CLIENT SETINFO`), made once.
    Without it redis-py makes one per new connection, and looks its own version up in the
    installed packages' metadata each time: about a millisecond of the event loop per connection,
    paid during a burst (the pool grows) and after a Redis restart (every connection again)."""
    global _driver
    if _driver is None:
        _driver = DriverInfo()
    return _driver


def _options(timeout_s: float) -> dict[str, Any]:
    return {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s,
            "driver_info": driver_info()}  # fmt: skip


def redis_client(url: str, timeout_s: float) -> SyncClient:
    """A blocking client for `url`, with `timeout_s` for connecting and for each reply. A
    cluster's client asks the cluster for its slot map now (redis-py's cluster client does, at
    construction), so it raises `redis.RedisClusterException` when no listed node answers."""
    settings = _options(timeout_s)
    if not is_cluster_url(url):
        return redis.Redis.from_url(url, **settings)
    nodes, options = cluster_nodes(url)
    startup = [
        redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]
        for host, port in nodes
    ]
    return redis.cluster.RedisCluster(startup_nodes=startup, **options, **settings)


def redis_clients(url: str, timeout_s: float) -> tuple[SyncClient, AsyncClient]:
    """The blocking client and an asyncio one (the payment route awaits Redis on the event
    loop; the asyncio cluster client discovers the slot map at its first command)."""
    settings = _options(timeout_s)
    if not is_cluster_url(url):
        return redis_client(url, timeout_s), redis.asyncio.Redis.from_url(url, **settings)
    nodes, options = cluster_nodes(url)
    startup = [redis.asyncio.cluster.ClusterNode(host, port) for host, port in nodes]
    async_client = redis.asyncio.cluster.RedisCluster(startup_nodes=startup, **options, **settings)
    return redis_client(url, timeout_s), async_client


async def warm(client: AsyncClient, count: int) -> int:
    """Open `count` connections of `client`'s pool now and leave them idle in it; how many
    were opened. A new connection costs the event loop about a millisecond (the
    connect, `CLIENT SETINFO`, the reader): made at start, not during the first burst of
    payments. A Redis that does not answer is not an error here (the service starts degraded,
    `/readyz` says why); a cluster client's pools are per node, made as it learns the slot
    map, and are left alone."""
    if count <= 0 or not isinstance(client, redis.asyncio.Redis):
        return 0
    pool = client.connection_pool
    held = await asyncio.gather(
        *(pool.get_connection() for _ in range(count)),  # type: ignore[no-untyped-call]
        return_exceptions=True,
    )
    for connection in held:
        if not isinstance(connection, BaseException):
            await pool.release(connection)
    failed = [c for c in held if isinstance(c, BaseException)]
    if failed:
        log.warning("Redis: %d of %d connections not opened at start: %s", len(failed), count,
                    failed[0])  # fmt: skip
    return count - len(failed)
