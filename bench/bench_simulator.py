"""How fast `arbiter simulate` makes and writes a world.

    .venv/bin/python bench/bench_simulator.py                    # ~1M events (2,600 accounts)
    .venv/bin/python bench/bench_simulator.py --accounts 4100    # ~1.75M events
    .venv/bin/python bench/bench_simulator.py --no-jsonl

Reports events, seconds per phase and events/s. Event counts depend on the seed as well as on
the size: customers' volumes are heavy-tailed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from features.log import write_jsonl
from training.simulator import SimConfig, simulate, write_world


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark the simulator.")
    parser.add_argument("--accounts", type=int, default=2600)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("var/bench/world"))
    parser.add_argument("--jsonl", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()

    began = time.perf_counter()
    world = simulate(SimConfig(accounts=args.accounts, days=args.days, seed=args.seed))
    simulated = time.perf_counter()
    write_world(world, args.out, jsonl=False)
    parquet = time.perf_counter()
    if args.jsonl:
        write_jsonl(world.events, args.out / "events.jsonl")
    done = time.perf_counter()

    n = len(world.events)
    size = f"{args.accounts:,} accounts x {args.days} days, seed {args.seed}"
    print(f"events            {n:>11,}   ({size}, {os.cpu_count()} cpus)")
    speed = n / (simulated - began)
    print(f"simulate          {simulated - began:>10.2f}s   {speed:>11,.0f} events/s")
    print(f"parquet files     {parquet - simulated:>10.2f}s")
    if args.jsonl:
        print(f"events.jsonl      {done - parquet:>10.2f}s")
    print(f"total             {done - began:>10.2f}s   {n / (done - began):>11,.0f} events/s")
    print("rerun: " + " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv]))
    print(
        f"   or: arbiter simulate --accounts {args.accounts} --days {args.days} --seed {args.seed}"
        f" --out {args.out}" + ("" if args.jsonl else " --no-jsonl")
    )


if __name__ == "__main__":
    main()
