"""Scoring service benchmark (issue 4): open-loop load on `POST /v1/payments/score` and, in the
same run against the same server, on the bare `POST /v1/echo` (the floor).

    .venv/bin/python bench/bench_scoring.py [--rates 250,500,1000] [--duration 15]
                                            [--ramp 100,150,200,300,...,3000] [--connections 32]

Sets up its own world in var/bench/scoring/ with the CLI (simulate ~1,000 accounts x 45 days,
ingest into Redis database 11, which it FLUSHES, train and promote a champion into
var/bench/scoring/mlflow; the world and the champion are reused when present), starts one real
uvicorn process and drives it from a separate load-generator process: raw keep-alive HTTP/1.1
connections, requests sent on a fixed schedule whatever the responses, latency measured from
the scheduled send time (a late server is not hidden by a client that waits for it). Prints a
table and writes it into docs/BENCHMARKS.md between the `bench-scoring` markers.

The mix: honest repeat top-ups (an account's last payment again: its card, IP, countries,
amount), plus adverse traffic: a deny-listed IP (199.10.0.0/16), suspended accounts, and
replays of the world's fraudulent payments (truth). The realised action mix is reported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchdoc import write_block
from loadgen import summarise

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
DOC = ROOT / "docs" / "BENCHMARKS.md"
START, END = "<!-- bench-scoring:start -->", "<!-- bench-scoring:end -->"
HOME = ROOT / "var" / "bench" / "scoring"
MODEL = "arbiter-fraud"
SHARE = {"deny_ip": 0.02, "suspended": 0.01, "fraud_replay": 0.02}  # the rest: honest
SUSPENDED_ACCOUNTS = 20
SAMPLE_DECISIONS = 300  # decisions read back for their `timings`
SCORE, ECHO = "/v1/payments/score", "/v1/echo"


# --- the world, the server, the payloads ------------------------------------------------------


def env_for(redis_url: str, database_url: str | None = None, home: Path = HOME) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    env.update(
        ARBITER_REDIS_URL=redis_url,
        ARBITER_DATABASE_URL=database_url or f"sqlite:///{home}/arbiter.db",
        ARBITER_MLFLOW_TRACKING_URI=f"sqlite:///{home}/mlflow/mlflow.db",
        ARBITER_MLFLOW_ARTIFACTS=str(home / "mlflow" / "artifacts"),
        ARBITER_MODEL_NAME=MODEL,
        ARBITER_DATA_DIR=str(home / "data"),
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        OMP_WAIT_POLICY="PASSIVE",
    )
    return env


def arbiter(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(BIN / "arbiter"), *args], env=env, cwd=ROOT, capture_output=True,
                          text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"arbiter {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def setup(args: argparse.Namespace, env: dict[str, str]) -> Path:
    """The world simulated (once), flushed into Redis and ingested, a champion (once), an
    empty decision store."""
    import redis

    world = make_world(args, env)
    print(f"flushing {args.redis_url} and ingesting the world ...", flush=True)
    redis.Redis.from_url(args.redis_url).flushdb()
    arbiter(env, "ingest", str(world / "events.parquet"))
    ensure_champion(env, world)
    empty_store(env)
    return world


def make_world(args: argparse.Namespace, env: dict[str, str], home: Path = HOME) -> Path:
    world = home / "world"
    if not (world / "events.parquet").exists():
        print(f"simulating {args.accounts:,} accounts x {args.days} days ...", flush=True)
        # Ending two hours ago: the benches' payments come after the world's last event, 10 ms
        # apart and in rounds 100 s apart, and the door refuses a `ts` more than 5 minutes
        # ahead of its clock (a world ending now put bench_instructions' later rounds there).
        end = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(hours=2)
        arbiter(env, "simulate", "--accounts", str(args.accounts), "--days", str(args.days),
                "--end", end.isoformat(), "--out", str(world), "--no-jsonl")  # fmt: skip
    return world


def ensure_champion(env: dict[str, str], world: Path, home: Path = HOME) -> None:
    if not (home / "mlflow" / "mlflow.db").exists() or not _has_champion(env):
        (home / "mlflow").mkdir(parents=True, exist_ok=True)
        print("training and promoting a champion ...", flush=True)
        arbiter(env, "train", "--events", str(world / "events.parquet"))
        arbiter(env, "promote")


def empty_store(env: dict[str, str], home: Path = HOME) -> None:
    """A fresh decision store each run: the benchmark's decisions only."""
    for suffix in ("", "-wal", "-shm"):
        (home / f"arbiter.db{suffix}").unlink(missing_ok=True)
    if not env["ARBITER_DATABASE_URL"].startswith("sqlite"):
        _empty_database(env["ARBITER_DATABASE_URL"])


def _empty_database(url: str) -> None:
    """Drop the decision store's tables (and Alembic's) from a server database: the service
    migrates it afresh at start."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        meta.drop_all(engine)
    finally:
        engine.dispose()


def _has_champion(env: dict[str, str]) -> bool:
    from models.registry import alias_version

    try:
        alias_version(env["ARBITER_MLFLOW_TRACKING_URI"], MODEL)
    except Exception:  # any failure of the registry means: train one
        return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_args(port: int, workers: int = 1) -> list[str]:
    """The product's uvicorn, after `python`: the benchmarks' one way to serve it."""
    return ["-m", "uvicorn", "api.app:create_app", "--factory", "--port", str(port),
            "--log-level", "warning", "--no-access-log", "--workers", str(workers)]  # fmt: skip


def start_server(env: dict[str, str], port: int, workers: int = 1,
                 home: Path = HOME) -> subprocess.Popen[bytes]:  # fmt: skip
    command = [str(BIN / "python"), *server_args(port, workers)]
    return start_process(command, env, f"http://127.0.0.1:{port}/readyz", home / "server.log")


def start_process(command: list[str], env: dict[str, str], ready_url: str, log_path: Path,
                  limit_s: float = 60.0) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start a server in a session of its own (stopped with everything it forks, see
    `stop_server`) and wait until `ready_url` answers 200; stopped again if it does not."""
    import httpx

    with log_path.open("wb") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"{command[0]} exited:\n{log_path.read_text()}")
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"not ready in {limit_s:g} s: {command}\n{log_path.read_text()}")
    except BaseException:
        stop_server(server)
        raise


def stop_server(server: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM to the server's process group (the server and what it forked), SIGKILL to what
    is left after `timeout`."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server.poll()
            os.killpg(server.pid, 0)  # ProcessLookupError once the whole group is gone
            time.sleep(0.1)
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait()


class Mix:
    """Payment bodies drawn from the world: honest repeats and the adverse kinds of `SHARE`."""

    def __init__(self, world: Path, seed: int) -> None:
        import numpy as np
        import pandas as pd

        events = pd.read_parquet(world / "events.parquet")
        accounts = pd.read_parquet(world / "accounts.parquet")
        truth = set(pd.read_parquet(world / "truth.parquet")["event_id"])
        payments = events[events["type"] == "payment"]
        cols = ["account_id", "amount", "currency", "card_fp", "bin_country",
                "billing_country", "ip"]  # fmt: skip
        honest_ids = set(
            accounts.loc[accounts["scenario"].isna() & accounts["closed_at"].isna(), "account_id"]
        )
        honest = payments[payments["account_id"].isin(honest_ids)]
        last = honest.groupby("account_id").tail(1)[cols].to_dict("records")
        self.rng = np.random.default_rng(seed)
        self.rng.shuffle(last)
        self.suspended = last[:SUSPENDED_ACCOUNTS]
        self.honest = last[SUSPENDED_ACCOUNTS:]
        self.fraud = payments[payments["event_id"].isin(truth)][cols].to_dict("records")
        self.end_ms = int(events["ts"].max().value // 1_000_000)
        self.sent = 0

    def bodies(self, n: int, tag: str) -> tuple[list[str], dict[str, int]]:
        kinds = {"honest": 0, **dict.fromkeys(SHARE, 0)}
        out = []
        draws = self.rng.random(n)
        edges = []
        edge = 0.0
        for kind, share in SHARE.items():
            edge += share
            edges.append((edge, kind))
        for i, u in enumerate(draws):
            kind = next((k for e, k in edges if u < e), "honest")
            kinds[kind] += 1
            pool = {"suspended": self.suspended, "fraud_replay": self.fraud}.get(kind, self.honest)
            body = dict(pool[int(self.rng.integers(len(pool)))])
            if kind == "deny_ip":
                body["ip"] = f"199.10.{self.rng.integers(256)}.{self.rng.integers(1, 255)}"
            body["amount"] = float(body["amount"])
            self.sent += 1
            # After the world's last event, one payment every 10 ms, whenever the bench is rerun.
            body.update(payment_id=f"bench-{tag}-{i}", ts=self.end_ms + 60_000 + self.sent * 10)
            out.append(json.dumps(body))
        return out, kinds

    def phase(self, run: str, name: str, path: str, rate: int, duration: float) -> dict[str, Any]:
        """An open-loop phase of `rate` x `duration` payments (the load generator's spec)."""
        bodies, kinds = self.bodies(int(rate * duration), f"{run}-{name}-{rate}")
        return {"name": name, "path": path, "rate": rate, "bodies": bodies,
                "keep_bodies": name == "score", "kinds": kinds}  # fmt: skip


# --- the report -------------------------------------------------------------------------------


def scored_records(port: int, key: str, decision_ids: list[str]) -> list[dict[str, Any]]:
    """The records of those of `decision_ids` that the model scored (GET /v1/decisions/{id}; a
    suspended account's payment is declined unscored)."""
    import httpx

    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, headers=headers) as client:
        records = [client.get(f"/v1/decisions/{i}").json() for i in decision_ids]
    return [r for r in records if "model_ms" in (r.get("timings") or {})]


def timings(port: int, key: str, decision_ids: list[str]) -> dict[str, float]:
    """The mean of each of the records' `timings` (ms), and `n`, how many records."""
    records = scored_records(port, key, decision_ids)
    sums: dict[str, float] = {}
    for record in records:
        for name, value in record["timings"].items():
            sums[name] = sums.get(name, 0.0) + value
    return {name: value / len(records) for name, value in sums.items()} | {"n": len(records)}


def machine() -> str:
    import redis
    import uvicorn

    cpu = "unknown cpu"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    server = redis.Redis().info("server").get("redis_version", "?")
    extras = [m for m in ("httptools", "uvloop") if _installed(m)]
    http = "+".join(extras) if extras else "h11, asyncio loop"
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()}, Python "
        f"{platform.python_version()}, uvicorn {uvicorn.__version__} ({http}), Redis {server}"
    )


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def write_doc(text: str) -> None:
    write_block(DOC, START, END, "Scoring service (issue 4)", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="250,500,1000", help="req/s, echo then score at each")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per rate")
    parser.add_argument(
        "--ramp",
        default="100,150,200,300,350,400,450,1500,2000,3000",
        help="score-only rates tried between the last met and first missed p99 <= 10 ms",
    )
    parser.add_argument("--ramp-duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds from schedule")
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument(
        "--database-url", help="decision store (default: SQLite in var/bench/scoring); a "
        "PostgreSQL database given here is EMPTIED of its tables first",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--no-doc", action="store_true", help="do not touch docs/BENCHMARKS.md")
    args = parser.parse_args()  # fmt: skip

    env = env_for(args.redis_url, args.database_url)
    world = setup(args, env)
    mix = Mix(world, args.seed)
    run = dt.datetime.now().strftime("%Y%m%d%H%M%S")
    port = free_port()
    server = start_server(env, port, args.workers)
    try:
        key = prepare(env, mix, f"bench-{run}", roles=["scorer", "support"])
        load = Load(server, port, key, args.connections, args.timeout)
        rates = [int(r) for r in args.rates.split(",") if r]
        print(f"warming up, then echo and score at {rates} req/s for {args.duration:g} s each",
              flush=True)  # fmt: skip
        phases = [mix.phase(run, "warmup", SCORE, 200, 3)]
        for rate in rates:
            phases += [mix.phase(run, "echo", ECHO, rate, args.duration),
                       mix.phase(run, "score", SCORE, rate, args.duration)]  # fmt: skip
        results = load.drive(phases)[1:]
        ramp = ramp_up(load, mix, run, results, args.ramp, args.ramp_duration)
        top = max(rates[-1], *[r["rate"] for r in ramp]) if ramp else rates[-1]
        # The score phase with the most answers: its decisions are read back for `timings`.
        scored_at_top = max(
            (r for r in results if r["name"] == "score"), key=lambda r: len(r["responses"])
        )
        ids = [r["decision_id"] for r in scored_at_top["responses"] if r["decision_id"]]
        breakdown = timings(port, key, ids[:: max(1, len(ids) // SAMPLE_DECISIONS)])
    finally:
        stop_server(server)

    text = report(args, results, ramp, breakdown, scored_at_top, top)
    print(text)
    if not args.no_doc:
        write_doc(text)
        print(f"\nwritten to {DOC.relative_to(ROOT)}")


def prepare(env: dict[str, str], mix: Mix, name: str, roles: list[str]) -> str:
    """Suspend the mix's suspended accounts in the decision store and create the run's API key
    (api/auth.py: the scorer's role for the load, the support role to read decisions back)."""
    from engine.keys import create_key
    from engine.store import DecisionStore, now_ms

    store = DecisionStore(env["ARBITER_DATABASE_URL"])
    try:
        for account in mix.suspended:
            store.set_account_status(account["account_id"], "suspended", actor="bench",
                                     reason="bench: suspended before the run")  # fmt: skip
        _, key = create_key(store.database, name=name, roles=roles, actor="bench", at=now_ms())
    finally:
        store.close()
    return key


class Load:
    """The load generator (bench/loadgen.py, a process of its own) pointed at one server."""

    def __init__(self, server: subprocess.Popen[bytes], port: int, key: str, connections: int,
                 timeout: float, home: Path = HOME) -> None:  # fmt: skip
        self.server, self.port, self.key = server, port, key
        self.connections, self.timeout, self.home = connections, timeout, home

    def drive(self, phases: list[dict[str, Any]], pause: float = 1.0) -> list[dict[str, Any]]:
        """Run `phases` one after the other; their results, with each phase's `kinds`."""
        spec = {"port": self.port, "pid": self.server.pid, "connections": self.connections,
                "key": self.key, "timeout": self.timeout, "pause": pause,
                "phases": phases}  # fmt: skip
        spec_path, out_path = self.home / "loadgen-spec.json", self.home / "loadgen-out.json"
        spec_path.write_text(json.dumps(spec))
        command = [str(BIN / "python"), str(ROOT / "bench" / "loadgen.py"), str(spec_path),
                   str(out_path)]  # fmt: skip
        subprocess.run(command, cwd=ROOT, check=True)
        results: list[dict[str, Any]] = json.loads(out_path.read_text())
        for result, phase in zip(results, phases, strict=True):
            result["kinds"] = phase.get("kinds", {})
        return results


def ramp_up(load: Load, mix: Mix, run: str, results: list[dict[str, Any]], ramp: str,
            duration: float) -> list[dict[str, Any]]:  # fmt: skip
    """Score at the rates of `ramp` above the highest of `results` that met p99 <= 10 ms and
    below the lowest that did not, up to the first that misses."""
    scored = [summarise(r) for r in results if r["name"] == "score"]
    passed = max([r["rate"] for r in scored if r["p99"] <= 10], default=0)
    failed = min([r["rate"] for r in scored if r["p99"] > 10], default=float("inf"))
    tried: list[dict[str, Any]] = []
    for rate in sorted(int(r) for r in ramp.split(",") if r and passed < int(r) < failed):
        print(f"ramp: score at {rate} req/s for {duration:g} s", flush=True)
        (result,) = load.drive([mix.phase(run, "score", SCORE, rate, duration)])
        tried.append(result)
        if summarise(result)["p99"] > 10:
            break
    return tried


def _count(item: tuple[str, int]) -> int:
    return -item[1]


def env_store(args: argparse.Namespace) -> str:
    return "sqlite" if not args.database_url or args.database_url.startswith("sqlite") else "pg"


def count_mix(results: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, int]]:
    """Over the score phases of `results`: the actions answered, and the traffic kinds sent."""
    actions: dict[str, int] = {}
    kinds: dict[str, int] = {}
    for result in results:
        if result["name"] != "score":
            continue
        for response in result["responses"]:
            actions[str(response["action"])] = actions.get(str(response["action"]), 0) + 1
        for kind, count in result["kinds"].items():
            kinds[kind] = kinds.get(kind, 0) + count
    return actions, kinds


def report(args: argparse.Namespace, results: list[dict[str, Any]], ramp: list[dict[str, Any]],
           breakdown: dict[str, float], top_score: dict[str, Any], top: int) -> str:  # fmt: skip
    rows = [summarise(r) for r in results]
    ramp_rows = [summarise(r) for r in ramp]
    actions, kinds = count_mix([*results, *ramp])
    total = sum(actions.values())
    sent = sum(kinds.values())
    today = dt.date.today().isoformat()
    command = "make bench-scoring  # or: " + " ".join(shlex.quote(a) for a in sys.argv)
    target = next((r for r in rows if r["name"] == "score" and r["rate"] == 1000), None)
    ok_rates = [r["rate"] for r in rows + ramp_rows if r["name"] == "score" and r["p99"] <= 10]
    lines = [
        f"Measured {today} on {machine()}. uvicorn with {args.workers} worker process"
        f"{'es' if args.workers > 1 else ''} and the load "
        f"generator (asyncio, {args.connections} keep-alive connections, open loop, latency from "
        "the scheduled send) share the machine over loopback; Redis and "
        f"{'SQLite (WAL)' if env_store(args) == 'sqlite' else 'PostgreSQL'} local.",
        f"World: {args.accounts:,} accounts x {args.days} days, ingested into Redis; "
        f"{args.duration:g} s per rate, unique payment_ids, timeout {args.timeout:g} s.",
        "",
        "| endpoint | rate (req/s) | achieved | p50 ms | p99 ms | p99.9 ms | max ms "
        "| errors (non-2xx / timeouts / conn) | server CPU | loadgen CPU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows + ramp_rows:
        lines.append(
            f"| {'POST /v1/payments/score' if r['name'] == 'score' else 'POST /v1/echo'} "
            f"| {r['rate']:,.0f} | {r['achieved']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} "
            f"| {r['p999']:.2f} | {r['max']:.1f} "
            f"| {r['non2xx']} / {r['timeouts']} / {r['conn_errors']} "
            f"| {r['server_cpu']:.0%} | {r['client_cpu']:.0%} |"
        )
    met = target is not None and target["p99"] <= 5
    lines += [
        "",
        "Target: p99 <= 5 ms for score at 1,000 req/s: "
        + ("n/a" if target is None else f"{target['p99']:.2f} ms, " + ("met" if met else
           f"**missed** by {target['p99'] - 5:.2f} ms")) + ". "
        + "Highest rate with score p99 <= 10 ms: "
        + (f"{max(ok_rates):,.0f} req/s" if ok_rates else "none") + f" (tried up to {top:,}).",
        "",
        "Traffic sent to score (all rates): "
        + ", ".join(f"{k} {v / sent:.1%}" for k, v in kinds.items())
        + f". Realised actions ({total:,} decisions): "
        + ", ".join(f"{k} {v / total:.1%}" for k, v in sorted(actions.items(), key=_count))
        + ".",
    ]  # fmt: skip
    if breakdown.get("n"):
        parts = ", ".join(f"{k} {v:.3f}" for k, v in breakdown.items() if k != "n")
        lines += [
            "",
            f"Inside the service, mean of {breakdown['n']:.0f} scored decisions at "
            f"{top_score['rate']:,.0f} req/s (the record's `timings`, ms; `total_ms` stops before "
            f"the decision is stored): {parts}.",
        ]
    lines += ["", f"Rerun: `{command}`"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
