"""The peer of issue 7: `mlflow models serve` of the same champion, prediction only.

MLflow's own scoring server (FastAPI under uvicorn) loads the registered model through pyfunc and
answers `POST /invocations`. The champion is logged with `mlflow.lightgbm` as a `Booster`
(training/tracking.py), whose pyfunc `predict` is `Booster.predict`: for the binary objective,
the probability of fraud, one per row (`{"predictions": [0.0123]}`), the same number Arbiter's
scorer computes; nothing needs wrapping. The request carries one feature row in the model's
signature order (`dataframe_split`); the rows are the exact feature values of decisions Arbiter
made in the same run (their records), so both servers see the same inputs.

The peer runs with `OMP_NUM_THREADS=1`, as Arbiter's scorer does (`num_threads=1`): LightGBM's
OpenMP threads would otherwise spin on both cores against the load generator.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import bench_scoring as scoring

INT_TYPES = frozenset({"long", "integer"})


def columns(tracking_uri: str, model: str) -> list[tuple[str, str]]:
    """The champion's input columns, in order, with their signature types (`double`, `long`,
    ...)."""
    import mlflow
    from mlflow.models import get_model_info

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    signature = get_model_info(f"models:/{model}@champion").signature
    if signature is None:
        raise SystemExit(f"the champion of {model} has no signature: its inputs are unknown")
    return [(c["name"], c["type"]) for c in signature.inputs.to_dict()]


def bodies(records: list[dict[str, Any]], cols: list[tuple[str, str]]) -> list[str]:
    """One `/invocations` body per decision record: its features in the signature's order, an
    integer column as an int (pyfunc's schema check refuses a float there), a missing value as
    null."""
    out = []
    for record in records:
        features = record["features"]
        missing = [name for name, _ in cols if name not in features]
        if missing:
            raise SystemExit(f"decision {record['decision_id']} lacks features {missing[:5]}")
        row = [_typed(features[name], kind) for name, kind in cols]
        split = {"columns": [name for name, _ in cols], "data": [row]}
        out.append(json.dumps({"dataframe_split": split}))
    return out


def _typed(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind in INT_TYPES:
        return int(value)
    if kind == "boolean":
        return bool(value)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def start(env: dict[str, str], model: str, port: int, home: Path) -> subprocess.Popen[bytes]:
    """`mlflow models serve` of the champion, against the tracking store the bench trains into;
    ready once `/ping` answers."""
    peer_env = {
        **env,
        "MLFLOW_TRACKING_URI": env["ARBITER_MLFLOW_TRACKING_URI"],
        "OMP_NUM_THREADS": "1",
        # It runs `exec uvicorn ...` through bash: the venv's uvicorn must be on the PATH.
        "PATH": f"{scoring.BIN}{os.pathsep}{env.get('PATH', '')}",
    }
    command = [str(scoring.BIN / "mlflow"), "models", "serve", "-m", f"models:/{model}@champion",
               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]  # fmt: skip
    return scoring.start_process(
        command, peer_env, f"http://127.0.0.1:{port}/ping", home / "peer.log", limit_s=120
    )


def check(port: int, body: str, expected: float) -> float:
    """One prediction, checked to be the probability Arbiter gave the same row (`expected`):
    what makes the two servers' figures comparable."""
    import httpx

    answer = httpx.post(f"http://127.0.0.1:{port}/invocations", content=body, timeout=30,
                        headers={"Content-Type": "application/json"})  # fmt: skip
    if answer.status_code != 200:
        raise SystemExit(f"the peer refused a row ({answer.status_code}): {answer.text[:500]}")
    predictions = answer.json().get("predictions")
    if not (isinstance(predictions, list) and len(predictions) == 1):
        raise SystemExit(f"the peer did not answer one prediction: {answer.text[:500]}")
    value = predictions[0]
    if not isinstance(value, float) or abs(value - expected) > 1e-6 * max(1.0, expected):
        raise SystemExit(f"the peer predicts {value!r} where Arbiter scored {expected!r}")
    return value
