"""The floor under issue 4's latency target: what this stack costs for a durable, model-scored
answer with none of Arbiter's own work (bench/floor_app.py), stage by stage, against the
product's score endpoint in the same run.

    .venv/bin/python bench/bench_floor.py [--rates 250,500,1000] [--duration 10] [--rounds 2]

Uses bench_scoring's world and champion (var/bench/scoring/, made if missing; Redis database 11
is FLUSHED and the world ingested), starts the product (one uvicorn worker of `api.app`) and
the floor app (one uvicorn worker of `bench/floor_app.py`, the same uvicorn options), and drives
both from bench/loadgen.py with the same payment bodies, open loop, rate after rate, the stages
and the product alternating `--rounds` times. Prints a table (and writes it into
docs/BENCHMARKS.md between the `bench-floor` markers unless `--no-doc`): per stage and rate,
the latency, the errors and the server's CPU per request.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from bench_scoring import (
    BIN,
    DOC,
    ECHO,
    HOME,
    MODEL,
    ROOT,
    SCORE,
    Load,
    Mix,
    env_for,
    free_port,
    machine,
    prepare,
    setup,
    start_process,
    start_server,
    stop_server,
)
from benchdoc import publish
from loadgen import summarise

START, END = "<!-- bench-floor:start -->", "<!-- bench-floor:end -->"
STAGES = ("/echo", "/redis", "/model", "/floor")
LABEL = {"/echo": "floor: HTTP + JSON", "/redis": "+ one Redis round trip",
         "/model": "+ features row + LightGBM", "/floor": "+ durable record (the floor)",
         ECHO: "Arbiter: POST /v1/echo", SCORE: "Arbiter: POST /v1/payments/score"}  # fmt: skip


def export_champion(env: dict[str, str]) -> str:
    """The champion's model text, written for the floor app; its path."""
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    from models.registry import load_model

    loaded = load_model(env["ARBITER_MLFLOW_TRACKING_URI"], MODEL, HOME / "floor-cache")
    path = HOME / "floor-model.txt"
    path.write_text(loaded.scorer.booster.model_to_string())
    return str(path)


def floor_server(env: dict[str, str], redis_url: str, model: str, port: int,
                 db: Path) -> tuple[list[str], dict[str, str]]:  # fmt: skip
    """The floor app's uvicorn (after `python`) and environment, on a fresh SQLite file `db`."""
    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    floor_env = {**env, "FLOOR_REDIS_URL": redis_url, "FLOOR_DB": str(db), "FLOOR_MODEL": model}
    args = ["-m", "uvicorn", "floor_app:create", "--factory", "--app-dir", str(ROOT / "bench"),
            "--port", str(port), "--log-level", "warning", "--no-access-log"]  # fmt: skip
    return args, floor_env


def start_floor(env: dict[str, str], redis_url: str, model: str, port: int) -> Any:
    args, floor_env = floor_server(env, redis_url, model, port, HOME / "floor.db")
    return start_process([str(BIN / "python"), *args], floor_env,
                         f"http://127.0.0.1:{port}/ready", HOME / "floor.log")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="250,500,1000")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=2, help="times each phase is run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()

    env = env_for(args.redis_url)
    world = setup(args, env)
    model = export_champion(env)
    mix = Mix(world, args.seed)
    run = dt.datetime.now().strftime("%Y%m%d%H%M%S")
    rates = [int(r) for r in args.rates.split(",") if r]
    product_port, floor_port = free_port(), free_port()
    product = start_server(env, product_port)
    results: list[dict[str, Any]] = []
    try:
        floor = start_floor(env, args.redis_url, model, floor_port)
        try:
            key = prepare(env, mix, f"bench-floor-{run}", roles=["scorer"])
            to_product = Load(product, product_port, key, args.connections, args.timeout)
            to_floor = Load(floor, floor_port, key, args.connections, args.timeout)
            print("warming up both servers", flush=True)
            to_product.drive([mix.phase(run, "warmup", SCORE, 200, 3)])
            to_floor.drive([mix.phase(run, "warmup", path, 200, 2) for path in STAGES])
            for round_ in range(args.rounds):
                for rate in rates:
                    print(f"round {round_ + 1}: {rate} req/s, the floor's stages, then the "
                          "product's echo and score", flush=True)  # fmt: skip
                    tag = f"{run}-{round_}"  # new payment_ids each round: no retries
                    phases = [mix.phase(tag, path, path, rate, args.duration) for path in STAGES]
                    results += to_floor.drive(phases)
                    results += to_product.drive(
                        [mix.phase(tag, path, path, rate, args.duration) for path in (ECHO, SCORE)]
                    )
        finally:
            stop_server(floor)
    finally:
        stop_server(product)

    text = report(args, results)
    print(text)
    if not args.no_doc:
        publish(DOC, START, END, "The floor under a decision (issue 4)", text)


def report(args: argparse.Namespace, results: list[dict[str, Any]]) -> str:
    rows = [summarise(r) for r in results]
    argv = [a for a in sys.argv if a != "--no-doc"]  # the rerun writes its own figures
    command = "make bench-floor  # or: " + " ".join(shlex.quote(a) for a in argv)
    lines = [
        f"Measured {dt.date.today().isoformat()} on {machine()}. One uvicorn worker each for "
        "the floor app (bench/floor_app.py) and the product, the load generator (asyncio, "
        f"{args.connections} keep-alive connections, open loop) on the same machine over "
        f"loopback; {args.duration:g} s per phase, {args.rounds} rounds, the same payment "
        "bodies; CPU is the server process's, per answered request.",
        "",
        "| stage | rate (req/s) | round | achieved | p50 ms | p99 ms | p99.9 ms "
        "| errors (non-2xx / timeouts / conn) | server CPU | CPU ms per request |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    seen: dict[tuple[str, int], int] = {}
    for r in sorted(rows, key=lambda r: (r["rate"], _order(r["name"]))):
        n = seen[(r["name"], r["rate"])] = seen.get((r["name"], r["rate"]), 0) + 1
        per = r["server_cpu"] / r["achieved"] * 1000 if r["achieved"] else float("nan")
        lines.append(
            f"| {LABEL[r['name']]} | {r['rate']:,} | {n} | {r['achieved']:,.0f} "
            f"| {r['p50']:.2f} | {r['p99']:.2f} | {r['p999']:.2f} "
            f"| {r['non2xx']} / {r['timeouts']} / {r['conn_errors']} "
            f"| {r['server_cpu']:.0%} | {per:.3f} |"
        )
    lines += ["", f"Rerun: `{command}`"]
    return "\n".join(lines)


def _order(name: str) -> int:
    return [*STAGES, ECHO, SCORE].index(name)


if __name__ == "__main__":
    main()
