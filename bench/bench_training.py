"""How long `arbiter train` takes, end to end: read the log, build the point-in-time features,
labels and split, LightGBM, baseline, evaluation, SHAP, plots, MLflow run and registration.

    .venv/bin/python bench/bench_training.py                       # default world + ~1.75M events
    .venv/bin/python bench/bench_training.py --worlds 2000          # only the default world
    .venv/bin/python bench/bench_training.py --worlds 4100 --days 30

Each world (`arbiter simulate --accounts N --days D`, seed 7) is simulated once into
var/bench/world-N-D/ and reused. Per world it reports the phases of one in-process training
(`training.pipeline`) and the wall time of the real command (`arbiter train` in a fresh process,
imports included) against a scratch MLflow store under var/bench/ (created beforehand: the
one-time database creation is reported apart). Target: <= 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from training import tracking
from training.config import load_training_config
from training.pipeline import Registry, load_source, train
from training.simulator import SimConfig, simulate, write_world

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "var" / "bench"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def world(accounts: int, days: int) -> Path:
    folder = BENCH / f"world-{accounts}-{days}"
    if not (folder / "events.parquet").exists():
        began = time.perf_counter()
        write_world(simulate(SimConfig(accounts=accounts, days=days)), folder, jsonl=False)
        print(f"  simulated into {folder} in {time.perf_counter() - began:.1f} s")
    return folder / "events.parquet"


def scratch_store(name: str) -> Registry:
    folder = BENCH / f"mlflow-{name}"
    uri = f"sqlite:///{folder}/mlflow.db"
    began = time.perf_counter()
    client = tracking.configure(uri)
    tracking.experiment_id(client, "bench", folder / "artifacts", uri)
    print(f"  MLflow store {folder} ready in {time.perf_counter() - began:.1f} s (one-time)")
    return Registry(uri, folder / "artifacts", "arbiter-fraud-bench", "bench")


def bench_world(accounts: int, days: int, spec: Path, config_path: Path) -> None:
    log = world(accounts, days)
    print(f"\n== {accounts:,} accounts x {days} days: {log}")
    store = scratch_store(f"{accounts}-{days}")
    config = load_training_config(config_path)
    began = time.perf_counter()
    source = load_source(log, spec)
    result = train(source, config, store, config_path=config_path)
    total = time.perf_counter() - began
    events, scored = len(source.log), sum(len(p.y) for p in result.dataset.parts)
    print(f"  events {events:,}; scored and mature {scored:,}; features {len(source.plan.output)}")
    for phase, seconds in result.timings.items():
        print(f"  {phase:<32} {seconds:7.2f} s")
    print(f"  {'in-process total':<32} {total:7.2f} s   ({events / total:,.0f} events/s)")
    env = {
        **os.environ,
        "ARBITER_MLFLOW_TRACKING_URI": store.tracking_uri,
        "ARBITER_MLFLOW_ARTIFACTS": str(store.artifacts),
        "ARBITER_MODEL_NAME": store.model_name,
    }
    command = [str(ROOT / ".venv" / "bin" / "arbiter"), "train", "--events", str(log)]
    command += ["--spec", str(spec), "--config", str(config_path)]
    began = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - began
    status = "ok" if done.returncode == 0 else f"FAILED ({done.returncode}): {done.stdout[-400:]}"
    print(f"  {'`arbiter train` wall time':<32} {wall:7.2f} s   {status}")
    model = result.evaluation["model"]
    print(
        f"  test AP {model['average_precision']:.3f}, ROC AUC {model['roc_auc']:.3f}, "
        f"recall@1%FPR {model['recall_at_1pct_fpr']:.3f}, "
        f"baseline AP {result.evaluation.get('baseline', {}).get('average_precision', 0):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark end-to-end training.")
    parser.add_argument("--worlds", type=int, nargs="+", default=[2000, 4100], help="accounts")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--spec", type=Path, default=ROOT / "config" / "features.yaml")
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "training.yaml")
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    print(f"machine: {os.cpu_count()} cpus, {cpu_model()}, Python {platform.python_version()}")
    for accounts in args.worlds:
        bench_world(accounts, args.days, args.spec, args.config)
    print("\nrerun: " + " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv]))


if __name__ == "__main__":
    main()
