"""Decision store benchmark: `DecisionStore.append_many`, the decision writer's transaction, at
fixed batch sizes on SQLite (WAL, synchronous=FULL, a temporary file) and, with
`--postgres-url`, on PostgreSQL (in a schema of its own, dropped afterwards).

    .venv/bin/python bench/bench_store.py [--decisions 2000] [--batches 1,8,32]
                                          [--postgres-url postgresql+psycopg://...] [--no-doc]

The records are like the service's: 46 feature values, 4% adverse (with their contributions,
a notification in the outbox), unique payment ids. Each batch size gets a fresh store, a
warm-up of 200 decisions, then `--decisions` appended one batch after the other from one
thread. Wall time is per decision (and per transaction); CPU is the process's (the commit's
fsync counts partly as system time). Writes the table into docs/BENCHMARKS.md between the
`bench-store` markers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import shlex
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchdoc import publish  # noqa: E402
from sqlalchemy import event as sa_event  # noqa: E402

from engine.notices import notification_of  # noqa: E402
from engine.records import DecisionRecord, Reason  # noqa: E402
from engine.store import Append, DecisionStore  # noqa: E402

DOC = ROOT / "docs" / "BENCHMARKS.md"
START, END = "<!-- bench-store:start -->", "<!-- bench-store:end -->"
FEATURES = [f"feature_{i:02d}" for i in range(46)]


def records(n: int, rng: random.Random) -> list[Append]:
    out = []
    for i in range(n):
        payment = uuid.UUID(int=rng.getrandbits(128), version=4).hex
        adverse = rng.random() < 0.04
        features: dict[str, Any] = {name: rng.random() * 100 for name in FEATURES}
        features["account_country"] = "GB"
        record = DecisionRecord(
            decision_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            created_at=1_790_000_000_000 + i, subject_type="payment", subject_id=payment,
            payment_id=payment, account_id=f"acct-{rng.randrange(1000)}",
            action="decline" if adverse else "allow", feature_spec_version="spec-1",
            policy_version="p" * 16, score=rng.random(), raw_margin=rng.uniform(-8, 4),
            model_name="arbiter-fraud", model_version="3", model_run_id="r" * 32,
            rules_fired=("deny:ip",) if adverse else (),
            reasons=(Reason("DENY_IP", "the IP address is on the deny list"),) if adverse else (),
            features=features,
            contributions={n: rng.uniform(-1, 1) for n in FEATURES} if adverse else None,
            base_value=-4.0 if adverse else None,
            timings={"features_ms": 0.7, "model_ms": 0.08, "total_ms": 0.9},
        )  # fmt: skip
        out.append(Append(record, False, notification_of(record) if adverse else None))
    return out


def measure(url: str, batch: int, n: int, seed: int) -> dict[str, float]:
    store = DecisionStore(url)
    try:
        store.migrate()
        rng = random.Random(seed)
        warm = records(200, rng)
        for i in range(0, len(warm), batch):
            store.append_many(warm[i : i + batch])
        items = records(n, rng)
        each: list[float] = []
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(0, len(items), batch):
            began = time.perf_counter()
            store.append_many(items[i : i + batch])
            each.append(time.perf_counter() - began)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        store.close()
    transactions = -(-n // batch)
    each.sort()
    return {"per_decision_ms": wall / n * 1000, "per_txn_ms": wall / transactions * 1000,
            "p99_txn_ms": each[int(0.99 * (len(each) - 1))] * 1000, "max_txn_ms": each[-1] * 1000,
            "cpu_ms": cpu / n * 1000, "per_s": n / wall}  # fmt: skip


def checkpoint_probe(folder: str, n: int, seed: int, every: int = 1000) -> dict[str, float]:
    """SQLite's WAL: frames written per decision at one decision per transaction, and what a
    checkpoint of `every` decisions' frames costs, run from a second connection (the writer's
    own automatic checkpoints switched off for the probe)."""
    path = f"{folder}/checkpoint.db"
    store = DecisionStore(f"sqlite:///{path}")
    costs: list[float] = []
    frames = 0
    try:
        store.migrate()

        @sa_event.listens_for(store.database, "connect")
        def _no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")

        store.database.dispose()
        side = sqlite3.connect(path, isolation_level=None)
        side.execute("PRAGMA synchronous=FULL")
        side.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        items = records(n, random.Random(seed))
        for start in range(0, n, every):
            for i in range(start, min(start + every, n)):
                store.append_many(items[i : i + 1])
            began = time.perf_counter()
            _busy, log, _done = side.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            costs.append(time.perf_counter() - began)
            frames += log
        side.close()
    finally:
        store.close()
    return {"frames_per_decision": frames / n, "checkpoint_ms": 1000 * sum(costs) / len(costs),
            "checkpoint_max_ms": 1000 * max(costs), "every": every}  # fmt: skip


def postgres_schema(url: str) -> tuple[str, str]:
    import sqlalchemy as sa

    name = f"bench_store_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {name}")
    engine.dispose()
    sep = "&" if "?" in url else "?"
    return name, f"{url}{sep}options=-csearch_path%3D{name}"


def drop_schema(url: str, name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--postgres-url", help="also measure this PostgreSQL server")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",") if b]
    rows = []
    with tempfile.TemporaryDirectory(dir=ROOT / "var" if (ROOT / "var").is_dir() else None) as tmp:
        for batch in batches:
            url = f"sqlite:///{tmp}/store-{batch}.db"
            rows.append(("SQLite (WAL, synchronous=FULL)", batch,
                         measure(url, batch, args.decisions, args.seed)))  # fmt: skip
        probe = checkpoint_probe(tmp, args.decisions, args.seed)
    if args.postgres_url:
        for batch in batches:
            name, url = postgres_schema(args.postgres_url)
            try:
                rows.append(("PostgreSQL", batch, measure(url, batch, args.decisions, args.seed)))
            finally:
                drop_schema(args.postgres_url, name)
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               "unknown cpu")  # fmt: skip
    command = "make bench-store  # or: " + " ".join(shlex.quote(a) for a in sys.argv)
    lines = [
        f"Measured {dt.date.today().isoformat()} on {os.cpu_count()} cores ({cpu}), "
        f"{platform.system()}, Python {platform.python_version()}; one thread appending "
        f"{args.decisions:,} decisions (4% adverse, 46 features) per batch size, a fresh "
        "store each.",
        "",
        "| store | decisions per transaction | ms per decision | ms per transaction "
        "| p99 / max ms per transaction | CPU ms per decision | decisions/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for store, batch, r in rows:
        lines.append(f"| {store} | {batch} | {r['per_decision_ms']:.3f} | {r['per_txn_ms']:.3f} "
                     f"| {r['p99_txn_ms']:.2f} / {r['max_txn_ms']:.1f} "
                     f"| {r['cpu_ms']:.3f} | {r['per_s']:,.0f} |")  # fmt: skip
    lines += [
        "",
        f"SQLite's WAL at one decision per transaction: {probe['frames_per_decision']:.1f} pages "
        f"(4 KiB) written per decision; a checkpoint of {probe['every']:,} decisions' pages "
        f"took {probe['checkpoint_ms']:.1f} ms on average, {probe['checkpoint_max_ms']:.1f} ms "
        "at most (SQLite checkpoints on its own every 1,000 pages, about every "
        f"{1000 / max(probe['frames_per_decision'], 0.1):.0f} such decisions, in the committing "
        "thread).",
        "",
        f"Rerun: `{command}`",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_doc:
        publish(DOC, START, END, "Decision store appends", text)


if __name__ == "__main__":
    main()
