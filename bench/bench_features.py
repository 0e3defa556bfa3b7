"""Feature benchmarks (issue 2): CLI ingestion, single-request reads, offline build, Redis memory.

    make bench-features
    .venv/bin/python bench/bench_features.py [--accounts 2600] [--offline-accounts 4100]
                                             [--reads 5000] [--redis-url redis://127.0.0.1:6379/12]

Uses (and FLUSHES) its own Redis database, 12 by default. Prints a table and writes it into
docs/BENCHMARKS.md between the `bench-features` markers, with the date and the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import redis
from benchdoc import publish

from features.log import frame_records, read_log, write_parquet
from features.offline import build_features
from features.online import OnlineStore
from features.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
DOC = ROOT / "docs" / "BENCHMARKS.md"
START, END = "<!-- bench-features:start -->", "<!-- bench-features:end -->"


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    server = redis.Redis().info("server").get("redis_version", "?")
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()}, Redis {server}"


def world(accounts: int, days: int) -> Path:
    out = ROOT / "var" / "bench" / f"world-{accounts}x{days}"
    if not (out / "events.parquet").exists():
        cmd = [str(BIN / "arbiter"), "simulate", "--accounts", str(accounts), "--days", str(days)]
        subprocess.run([*cmd, "--out", str(out), "--no-jsonl"], check=True, capture_output=True)
    return out / "events.parquet"


def ingest_cli(log: Path, url: str, flush: bool = True,
               env: dict[str, str] | None = None) -> tuple[int, float, float]:  # fmt: skip
    """(events, wall seconds of the whole command, the command's own events/s)."""
    if flush:
        redis.Redis.from_url(url).flushdb()
    env = {**os.environ, "ARBITER_REDIS_URL": url, **(env or {})}
    began = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "arbiter"), "ingest", str(log)], env=env, check=True, capture_output=True,
        text=True, cwd=ROOT,
    )  # fmt: skip
    wall = time.perf_counter() - began
    text = " ".join(done.stdout.split())
    match = re.search(r"([\d,]+) events applied.*\(([\d,]+) events/s", text)
    if not match:
        raise SystemExit(f"unexpected ingest output: {text}")
    return int(match.group(1).replace(",", "")), wall, float(match.group(2).replace(",", ""))


def split_log(log: pd.DataFrame, log_path: Path, share: float) -> tuple[Path, Path]:
    """The log's first `share` and the rest, as Parquet files beside it: the first bulk-loaded
    into a fresh store, the rest then streamed into the live one."""
    cut = int(len(log) * share)
    first, second = log_path.with_name("first-part.parquet"), log_path.with_name("rest.parquet")
    write_parquet(log.iloc[:cut], first)
    write_parquet(log.iloc[cut:], second)
    return first, second


def reads(log: pd.DataFrame, url: str, n: int) -> tuple[float, float, float]:
    """p50, p99, p99.9 (ms) of one request's feature read: a payment by a known account."""
    plan = load_spec(ROOT / "config" / "features.yaml")
    store = OnlineStore(redis.Redis.from_url(url), plan)
    payments = log[log["type"] == "payment"]
    rng = np.random.default_rng(5)
    sample = payments.iloc[rng.integers(0, len(payments), n)]
    now = int(log["ts"].iloc[-1]) + 60_000
    events = []
    for i, event in enumerate(frame_records(sample)):
        event.update(ts=now + i, event_id=f"bench{i}")
        events.append(event)
    for event in events[:200]:  # warm-up: connection, script, caches
        store.read(event)
    latencies = []
    for event in events:
        began = time.perf_counter_ns()
        store.read(event)
        latencies.append((time.perf_counter_ns() - began) / 1e6)
    p50, p99, p999 = np.percentile(latencies, [50, 99, 99.9])
    return float(p50), float(p99), float(p999)


def memory(url: str, events: int) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    sizes: dict[str, list[int]] = {}
    for key in client.scan_iter(count=1000):
        name = key.decode()
        kind = "seen" if ":seen:" in name else name.split("{", 1)[1].split(":", 1)[0]
        sizes.setdefault(kind, []).append(client.memory_usage(key, samples=0) or 0)
    accounts = np.array(sizes.get("account", [0]))
    shared = sum(sum(v) for k, v in sizes.items() if k not in ("account", "seen"))
    return {
        "accounts": len(accounts),
        "account_mean": float(accounts.mean()),
        "account_p50": float(np.percentile(accounts, 50)),
        "account_p99": float(np.percentile(accounts, 99)),
        "shared_per_account": shared / len(accounts),
        "seen_per_event": sum(sizes.get("seen", [0])) / max(events, 1),
        "used_memory_mb": client.info("memory")["used_memory"] / 2**20,
    }


def offline(log_path: Path) -> tuple[int, float, float]:
    plan = load_spec(ROOT / "config" / "features.yaml")
    began = time.perf_counter()
    log = read_log(log_path)
    loaded = time.perf_counter()
    build_features(plan, log)
    return len(log), loaded - began, time.perf_counter() - loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=2600, help="world for ingest (~1M)")
    parser.add_argument("--offline-accounts", type=int, default=4100, help="~1.75M events")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--no-doc", action="store_true", help="do not touch docs/BENCHMARKS.md")
    args = parser.parse_args()

    log_path = world(args.accounts, args.days)
    # A fresh store: `arbiter ingest` bulk-loads.
    n, wall, rate = ingest_cli(log_path, args.redis_url)
    # A store that already holds the first half: the second half is streamed event by event.
    log = read_log(log_path)
    first, second = split_log(log, log_path, 0.5)
    ingest_cli(first, args.redis_url)
    n_stream, wall_stream, rate_stream = ingest_cli(second, args.redis_url, flush=False)
    p50, p99, p999 = reads(log, args.redis_url, args.reads)
    mem = memory(args.redis_url, n)
    big_path = world(args.offline_accounts, args.days)
    big_n, big_read, big_build = offline(big_path)

    rows = [
        ("CLI ingestion into a fresh store (bulk load), whole command",
         f"{n / wall:,.0f} events/s", ">= 50,000 events/s", n / wall >= 50_000),
        ("  of which loading Redis (as the command reports)", f"{rate:,.0f} events/s", "",
         None),
        (f"CLI ingestion streamed into a live store ({n_stream:,} events), whole command",
         f"{n_stream / wall_stream:,.0f} events/s", ">= 50,000 events/s",
         n_stream / wall_stream >= 50_000),
        ("  of which applying (as the command reports)", f"{rate_stream:,.0f} events/s", "",
         None),
        ("Feature read, one request (p50 / p99 / p99.9)", f"{p50:.3f} / {p99:.3f} / {p999:.3f} ms",
         "p99 <= 0.5 ms", p99 <= 0.5),
        (f"Offline build, {big_n:,} events", f"{big_build:.1f} s (+ {big_read:.1f} s reading)",
         "<= 30 s for 1.75 M", big_build <= 30),
        ("Redis memory per active account (mean / p50 / p99)",
         f"{mem['account_mean']:,.0f} / {mem['account_p50']:,.0f} / {mem['account_p99']:,.0f} B",
         "<= 2 KB", mem["account_mean"] <= 2048),
        ("  plus IP, card and prefix keys, per account", f"{mem['shared_per_account']:,.0f} B", "",
         None),
        ("  plus dedupe markers, per event (kept 48 h)", f"{mem['seen_per_event']:,.0f} B", "",
         None),
    ]  # fmt: skip
    today = dt.date.today().isoformat()
    command = "make bench-features  # or: " + " ".join(shlex.quote(a) for a in sys.argv)
    lines = [
        f"Measured {today} on {machine()}.",
        f"Ingest world: {n:,} events ({args.accounts:,} accounts x {args.days} days); "
        f"{mem['accounts']:,} active accounts in Redis, {mem['used_memory_mb']:,.0f} MiB used.",
        "",
        "| measure | result | target | met |",
        "| --- | --- | --- | --- |",
    ]
    for name, result, target, met in rows:
        mark = "" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {name} | {result} | {target} | {mark} |")
    lines += ["", f"Rerun: `{command}`"]
    text = "\n".join(lines)
    print(text)
    if not args.no_doc:
        publish(DOC, START, END, "Features (issue 2)", text)


if __name__ == "__main__":
    main()
