"""The floor under a decision: the least a durable, model-scored answer costs on this stack
(uvicorn with httptools and uvloop, redis-py with hiredis, LightGBM's single-row fast path,
SQLite in WAL with `synchronous=FULL`), with none of Arbiter's own work. Served by
bench/bench_floor.py, never by the product.

    FLOOR_REDIS_URL=redis://127.0.0.1:6379/11 FLOOR_DB=/tmp/floor.db FLOOR_MODEL=model.txt \\
        .venv/bin/python -m uvicorn floor_app:create --factory --app-dir bench

A raw ASGI app; every stage answers `POST` with a payment body (bench_scoring's `Mix`) and
adds one mandatory part to the stage before it:

* `/echo`: read the body, parse it (orjson), answer it back (the app's own echo, leaner);
* `/redis`: plus one Redis round trip: a script that counts the payment on its account, card
  and IP hashes (a field for the count, one per minute) and returns the three hashes;
* `/model`: plus a row of the champion's features in its order (the replies' numbers) and
  one prediction (`models.scorer.Scorer`, LightGBM's single-row fast path, one thread);
* `/floor`: plus a record of about 2 KB appended durably before the answer, with the
  previous record's hash, by one writer thread in group commits (the product's shape:
  `engine/group_commit.py`).

What it leaves out, and the product does: validation against a schema, the card-number
screen, authentication, idempotency, 46 features computed from time buckets, the policy and
its lists, suspension, the outbox, SHAP for adverse decisions, metrics, Server-Timing. So a
stage's figures are a lower bound for the product's at the same rate.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from models.scorer import Scorer

_JSON = (b"content-type", b"application/json")
# Counts the payment on each of KEYS (its account, card and IP): a total and a field per
# minute (ARGV[1]), then the three hashes.
_SCRIPT = """
for i = 1, 3 do
  redis.call('HINCRBY', KEYS[i], 'n', 1)
  redis.call('HINCRBY', KEYS[i], 'm' .. ARGV[1], 1)
end
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]),
        redis.call('HGETALL', KEYS[3])}
"""


class Writer(threading.Thread):
    """One thread appends what is queued in one transaction, then wakes the loop once for the
    batch: each answer waits for its record to be durable."""

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(name="floor-writer", daemon=True)
        self.loop, self.queue = loop, queue.SimpleQueue()
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, payment_id TEXT UNIQUE,"
            " body TEXT NOT NULL, prev_hash TEXT, hash TEXT NOT NULL)"
        )
        self.head = ""

    def append(self, payment_id: str, body: bytes) -> asyncio.Future[str]:
        future = self.loop.create_future()
        self.queue.put((payment_id, body, future))
        return future

    def run(self) -> None:
        while True:
            batch = [self.queue.get()]
            while True:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            rows, done = [], []
            for payment_id, body, future in batch:
                record_id = uuid.uuid4().hex
                digest = hashlib.sha256(self.head.encode() + body).hexdigest()
                rows.append((record_id, payment_id, body.decode(), self.head, digest))
                done.append((future, record_id))
                self.head = digest
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?)", rows)
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:  # a repeated payment_id: the batch fails, the run goes on
                self.conn.execute("ROLLBACK")
                self.head = rows[0][3]
                self.loop.call_soon_threadsafe(_resolve, done, exc)
            else:
                self.loop.call_soon_threadsafe(_resolve, done, None)


def _resolve(done: list[tuple[asyncio.Future[str], str]], exc: Exception | None) -> None:
    for future, record_id in done:
        if not future.done():
            if exc is None:
                future.set_result(record_id)
            else:
                future.set_exception(exc)


class Floor:
    def __init__(self) -> None:
        self.redis = aioredis.Redis.from_url(os.environ["FLOOR_REDIS_URL"])
        self.scorer = Scorer.from_model_string(Path(os.environ["FLOOR_MODEL"]).read_text())
        self.db = Path(os.environ["FLOOR_DB"])
        self.writer: Writer | None = None
        self.sha = ""

    async def startup(self) -> None:
        self.sha = await self.redis.script_load(_SCRIPT)
        self.writer = Writer(self.db, asyncio.get_running_loop())
        self.writer.start()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    await self.startup()
                    await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]
        if scope["method"] == "GET":
            await _answer(send, 200, b'{"ready":true}')
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        payment = orjson.loads(body)
        if path == "/echo":
            await _answer(send, 200, orjson.dumps({"echo": payment}))
            return
        minute = payment["ts"] // 60_000
        hashes = await self.redis.evalsha(
            self.sha, 3, f"floor:a:{payment['account_id']}", f"floor:c:{payment['card_fp']}",
            f"floor:i:{payment['ip']}", minute,
        )  # fmt: skip
        numbers = [float(v) for h in hashes for v in h[1::2]]
        answer: dict[str, Any] = {"payment_id": payment["payment_id"], "action": "allow"}
        if path != "/redis":
            names = self.scorer.features
            values = {name: numbers[i % len(numbers)] for i, name in enumerate(names)}
            row = self.scorer.vector(values)
            answer["score"] = self.scorer.score(row).probability
            if path == "/floor":
                assert self.writer is not None
                record = orjson.dumps({"payment": payment, "features": values, **answer})
                try:
                    answer["decision_id"] = await self.writer.append(payment["payment_id"], record)
                except sqlite3.Error as exc:
                    await _answer(send, 500, orjson.dumps({"error": str(exc)}))
                    return
        await _answer(send, 200, orjson.dumps(answer))


async def _answer(send: Any, status: int, body: bytes) -> None:
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create() -> Floor:
    return Floor()
