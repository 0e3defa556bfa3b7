"""Chaos run (issue 6): open-loop payments at a fixed rate while Redis is killed and restarted
and the decision store (PostgreSQL) is stopped and started again; then every answer is checked
against the store.

    .venv/bin/python bench/bench_chaos.py [--rates 200,1000] [--duration 60]
        [--redis-kill-at 10] [--redis-down 5] [--store-stop-at 30] [--store-down 10]

Runs a Redis server and a PostgreSQL cluster of its own (tests/own_servers.py: Debian's
redis-server and postgresql binaries, free loopback ports; the machine's servers are not
touched), the world and champion of bench/bench_scoring.py (var/bench/scoring, made there when
missing), one real uvicorn process, and the load generator (bench/loadgen.py) in its own process.
Reported: answers by status (5xx, other non-2xx, client timeouts, connection errors), degraded
decisions, lost decisions (answered 200 but not in the store once the journal is replayed),
duplicates (a payment stored twice), the chain, latency per period (before, Redis down, after
Redis, store down, after the store). Writes its table into docs/BENCHMARKS.md between the
`bench-chaos` markers (unless --no-doc).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import bench_scoring as scoring
import numpy as np
from benchdoc import publish

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.own_servers import OwnPostgres, OwnRedis  # noqa: E402

DOC = ROOT / "docs" / "BENCHMARKS.md"
START, END = "<!-- bench-chaos:start -->", "<!-- bench-chaos:end -->"


class Chaos(threading.Thread):
    """The failure schedule, in seconds from `t0` (wall clock); what happened when, kept."""

    def __init__(self, args: argparse.Namespace, redis: OwnRedis, store: OwnPostgres) -> None:
        super().__init__(daemon=True)
        self.args, self.redis, self.store = args, redis, store
        self.t0 = time.time()
        self.log: list[tuple[float, str]] = []

    def _at(self, offset: float, what: str, act: Any) -> None:
        delay = self.t0 + offset - time.time()
        if delay > 0:
            time.sleep(delay)
        act()
        self.log.append((time.time(), what))
        print(f"  t={time.time() - self.t0:5.1f} s  {what}", flush=True)

    def run(self) -> None:
        a = self.args
        steps = sorted([
            (a.redis_kill_at, "Redis killed", self.redis.kill),
            (a.redis_kill_at + a.redis_down, "Redis started (empty)", self.redis.start),
            (a.store_stop_at, "PostgreSQL stopped", self.store.stop),
            (a.store_stop_at + a.store_down, "PostgreSQL started", self.store.start),
        ], key=lambda step: step[0])  # fmt: skip
        for offset, what, act in steps:
            self._at(offset, what, act)


def periods(chaos: Chaos) -> list[tuple[str, float, float]]:
    """(name, start, end) in wall-clock seconds, from what the chaos thread did."""
    when = {what: at for at, what in chaos.log}
    marks = sorted(when.items(), key=lambda item: item[1])
    names = {
        "Redis killed": "Redis down",
        "Redis started (empty)": "after Redis's restart",
        "PostgreSQL stopped": "store down",
        "PostgreSQL started": "after the store's return",
    }
    out, start, name = [], 0.0, "before"
    for what, at in marks:
        out.append((name, start, at))
        start, name = at, names[what]
    out.append((name, start, float("inf")))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="200,1000", help="payments per second, one run each")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--redis-kill-at", type=float, default=10.0)
    parser.add_argument("--redis-down", type=float, default=5.0)
    parser.add_argument("--store-stop-at", type=float, default=30.0)
    parser.add_argument("--store-down", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds from schedule")
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--no-doc", action="store_true", help="do not touch docs/BENCHMARKS.md")
    args = parser.parse_args()

    scoring.HOME.mkdir(parents=True, exist_ok=True)
    sections = []
    for rate in [int(r) for r in args.rates.split(",") if r]:
        args.rate = rate
        redis = OwnRedis(scoring.HOME)
        redis.start()
        store = OwnPostgres()
        store.start()
        try:
            result, chaos, checks = run(args, redis, store)
        finally:
            if redis.process is not None and redis.process.poll() is None:
                redis.kill()
            store.remove()
        sections.append(report(args, result, chaos, checks))
        print(sections[-1], flush=True)
    command = [".venv/bin/python", *sys.argv]
    text = (
        f"Measured {dt.date.today().isoformat()} on {scoring.machine()}; one uvicorn worker, "
        "PostgreSQL 15 (a cluster of the run's own, fsync off) and Redis (its own) local, the load "
        f"generator ({args.connections} connections, open loop, timeout {args.timeout:g} s from "
        "the scheduled send) on the same 2 cores.\n\n"
        + "\n\n".join(sections)
        + "\n\nRerun: `make bench-chaos  # or: "
        + " ".join(shlex.quote(a) for a in command)
        + "`"
    )
    if not args.no_doc:
        publish(DOC, START, END, "Chaos run (issue 6)", text)


def run(args: argparse.Namespace, redis: OwnRedis, store: OwnPostgres):
    setup_args = argparse.Namespace(accounts=args.accounts, days=args.days, redis_url=redis.url)
    env = scoring.env_for(redis.url, store.url)
    world = scoring.setup(setup_args, env)
    # A journal of this run only: a leftover from an earlier one would be replayed into it.
    journal = scoring.HOME / "data" / "journal"
    for old in journal.glob("*.jsonl"):
        old.unlink()
    mix = scoring.Mix(world, args.seed)
    tag = dt.datetime.now().strftime("%Y%m%d%H%M%S")
    from engine.keys import create_key
    from engine.store import DecisionStore, now_ms

    # Suspended before the service starts: its first flag sync knows them (what it declines
    # them by while Redis is down).
    decisions = DecisionStore(store.url)
    decisions.migrate()
    for account in mix.suspended:
        decisions.set_account_status(account["account_id"], "suspended", actor="bench",
                                     reason="bench: suspended before the run")  # fmt: skip
    _, key = create_key(decisions.database, name=f"chaos-{tag}",
                        roles=["scorer", "ops", "support"], actor="bench", at=now_ms())  # fmt: skip
    port = scoring.free_port()
    server = scoring.start_server(env, port)
    try:
        warm, _ = mix.bodies(400, f"chaos-{tag}-warm")
        bodies, kinds = mix.bodies(int(args.rate * args.duration), f"chaos-{tag}-main")
        phases = [
            {"name": "warmup", "path": "/v1/payments/score", "rate": 200, "bodies": warm},
            {"name": "score", "path": "/v1/payments/score", "rate": args.rate, "bodies": bodies,
             "keep_bodies": True},
        ]  # fmt: skip
        spec = {"port": port, "pid": server.pid, "connections": args.connections, "key": key,
                "timeout": args.timeout, "pause": 0.5, "phases": phases}  # fmt: skip
        spec_path, out_path = scoring.HOME / "chaos-spec.json", scoring.HOME / "chaos-out.json"
        spec_path.write_text(json.dumps(spec))
        command = [str(scoring.BIN / "python"), str(ROOT / "bench" / "loadgen.py"),
                   str(spec_path), str(out_path)]  # fmt: skip
        print(f"{args.rate:,} payments/s for {args.duration:g} s; failures:", flush=True)
        loadgen = subprocess.Popen(command, cwd=ROOT)
        # The warm-up takes 2 s plus its drain; the schedule counts from the load's start,
        # corrected below from the load generator's own record of it.
        time.sleep(2.5)
        chaos = Chaos(args, redis, store)
        chaos.start()
        if loadgen.wait() != 0:
            raise SystemExit("the load generator failed")
        chaos.join()
        result = json.loads(out_path.read_text())[1]
        checks = verify(port, key, decisions, result, f"bench-chaos-{tag}-main-%")
        decisions.close()
        checks["kinds"] = kinds
        # Every answered payment of a suspended account must have been declined.
        suspended = {a["account_id"] for a in mix.suspended}
        theirs = [r for r in result["responses"]
                  if json.loads(bodies[r["i"]])["account_id"] in suspended]  # fmt: skip
        checks["suspended"] = (len(theirs), sum(r["action"] != "decline" for r in theirs))
    finally:
        scoring.stop_server(server)
    return result, chaos, checks


def verify(
    port: int, key: str, decisions: Any, result: dict[str, Any], pattern: str
) -> dict[str, Any]:
    """Once the journal is replayed: answers against the store."""
    import httpx
    import sqlalchemy as sa

    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 120
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as api:
        while True:
            store = api.get("/readyz").json()["checks"]["store"]
            if store.get("ok") and store.get("journal_pending") == 0:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the journal was not replayed in 120 s: {store}")
            time.sleep(0.5)
        metrics = api.get("/metrics").text
        # What the service itself timed, for a sample of the degraded decisions.
        degraded = [r["decision_id"] for r in result["responses"] if r["degraded"]]
        sums: dict[str, float] = {}
        sample = degraded[:: max(1, len(degraded) // 100)]
        for decision_id in sample:
            for name, value in api.get(f"/v1/decisions/{decision_id}").json()["timings"].items():
                sums[name] = sums.get(name, 0.0) + value
    journal = {line.split('"')[1]: float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith("arbiter_journal_decisions{")}  # fmt: skip
    with decisions.database.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT decision_id, payment_id FROM decisions WHERE payment_id LIKE :p"),
            {"p": pattern},
        ).all()
    stored = {r.decision_id for r in rows}
    answered = [r["decision_id"] for r in result["responses"]]
    return {
        "lost": len(set(answered) - stored),
        "duplicates": len(rows) - len({r.payment_id for r in rows}),
        "stored": len(rows),
        "chain": decisions.verify_chain(),
        "journal": journal,
        "degraded_timings": {k: v / len(sample) for k, v in sums.items()} if sample else {},
    }


def report(args: argparse.Namespace, result: dict[str, Any], chaos: Chaos,
           checks: dict[str, Any]) -> str:  # fmt: skip
    status = np.array(result["status"])
    latency = np.array(result["latency_ms"])
    n = len(status)
    scheduled = result["t0_epoch"] + np.arange(n) / result["rate"]
    degraded = np.zeros(n, dtype=bool)
    for response in result["responses"]:
        degraded[response["i"]] = bool(response["degraded"])
    ok = (status >= 200) & (status < 300)
    lines = [
        f"**{args.rate:,} payments/s** for {args.duration:g} s ({n:,} sent). "
        + "; ".join(f"t={at - result['t0_epoch']:.1f} s {what}" for at, what in chaos.log)
        + " (t from the load's start).",
        "",
        "| period | sent | 2xx | 5xx | other 4xx | timeouts | conn errors | degraded | p50 ms "
        "| p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, start, end in [*periods(chaos), ("all", 0.0, float("inf"))]:
        part = (scheduled >= start) & (scheduled < end)
        if not part.any():
            continue
        s, lat = status[part], latency[part]
        p50, p99 = np.percentile(lat, [50, 99])
        lines.append(
            f"| {name} | {part.sum():,} | {((s >= 200) & (s < 300)).sum():,} "
            f"| {(s >= 500).sum():,} | {((s >= 400) & (s < 500)).sum():,} | {(s == 0).sum():,} "
            f"| {(s == -1).sum():,} | {degraded[part].sum():,} | {p50:.1f} | {p99:.1f} |"
        )
    journal = checks["journal"]
    chain = checks["chain"]
    lines += [
        "",
        f"Answered 200: {ok.sum():,}. **Lost** (answered, not in the store after the replay): "
        f"{checks['lost']}. **Duplicates** (a payment stored twice): {checks['duplicates']}. "
        f"**5xx**: {(status >= 500).sum()}. Stored: {checks['stored']:,} (requests the client "
        "gave up on may still have been decided and stored). Journal: "
        f"{journal.get('journaled', 0):,.0f} decisions journaled, "
        f"{journal.get('replayed', 0):,.0f} replayed. Chain: "
        + ("verifies" if chain is None else f"**broken** at {chain}")
        + ".",
    ]
    answered, wrong = checks["suspended"]
    lines.append(
        f"Suspended accounts' payments answered: {answered:,}, of which not declined: "
        + (f"**{wrong}**" if wrong else "0")
        + "."
    )
    if checks["degraded_timings"]:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in checks["degraded_timings"].items())
        lines.append(f"Degraded decisions, inside the service (mean of a sample, ms): {parts}.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
