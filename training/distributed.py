"""Training on a Dask cluster: the model of `training.model.fit`, boosted by `lightgbm.dask`
(data-parallel LightGBM) over the workers of a `dask.distributed` cluster.

What runs where. The training and validation windows are written as Parquet partitions (row `i`
of a window goes to partition `i mod P`, so every partition spans the window's whole time) and
each worker reads its own partitions from disk: the rows, LightGBM's binned Dataset and the
boosting live in the worker processes, not here. The feature build, the labels and the split
before it (`training.pipeline.load_source`, `training.dataset.build_dataset`) still run in this
process, on the whole log; so do the evaluation, SHAP and MLflow after it.

Early stopping. `lightgbm.dask` has none: each worker would judge its own validation rows, stop
at its own round, and leave the others waiting on the network (LightGBM issues #3712, #6351).
So every round of `model.num_boost_round` is trained, the validation log loss of every round is
summed partition by partition on the workers, and the best round is picked afterwards by the
rule of `lightgbm.early_stopping` (the lowest loss, searched until `early_stopping_rounds`
rounds bring no improvement). Only log loss adds up over partitions: the config refuses AUC
and AP here.

Determinism. Each LightGBM machine bins its share of the features from its own rows and bags
its own rows, so the model depends on which rows each machine holds, in which order, and on the
machines' ranks. Partition `p` is pinned to worker `p mod n` (workers sorted by name), and
`OrderedClient` makes `lightgbm.dask` rank the machines and order each one's partitions by
partition number; then the same table on the same number of workers gives the same model string
from run to run (`tests/integration/test_dask_training.py`). Another number of workers gives
another, equally good, model.

The result is a plain `TrainedModel` holding a local `lgb.Booster`
(`DaskLGBMClassifier.to_local()`), truncated to the best round: MLflow stores and the scoring
service loads it exactly like the single-machine one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import operator
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pandas as pd
from dask import dataframe as dd
from distributed import Client, Future, LocalCluster

from training.config import ComputeConfig, ModelConfig
from training.dataset import Dataset, Part
from training.model import TrainedModel, parameters

F64 = npt.NDArray[np.float64]
LABEL = "_label"  # feature names start with a letter (the spec's rule): no collision
EPSILON = 1e-15  # LightGBM's clip of probabilities in binary_logloss


@dataclass(frozen=True)
class Table:
    """The Parquet partitions of the training and validation windows."""

    train: list[str]
    validation: list[str]


class OrderedClient(Client):
    """A client whose `who_has` lists the futures in the order asked for. `lightgbm.dask` ranks
    the machines, and concatenates each one's partitions, in the order of that mapping, which
    `distributed` builds from a set of keys: string-hash order, different in every process."""

    def who_has(self, futures: Any = None, **kwargs: Any) -> Any:
        found = super().who_has(futures, **kwargs)  # type: ignore[no-untyped-call]
        if not isinstance(futures, list | tuple):
            return found
        return {f.key: found[f.key] for f in futures if f.key in found}


@contextlib.contextmanager
def connect(compute: ComputeConfig) -> Iterator[Client]:
    """A client of the configured scheduler, or of a LocalCluster of `compute.workers`
    processes with one thread each, started here and closed on the way out."""
    if compute.scheduler is not None:
        with OrderedClient(compute.scheduler) as client:  # type: ignore[no-untyped-call]
            yield client
        return
    with (
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=compute.workers,
            threads_per_worker=1,
            processes=True,
            # A random port: `None` still binds 8787, and warns when another cluster has it.
            dashboard_address=":0",
            silence_logs=logging.WARNING,
        ) as local,
        OrderedClient(local) as client,  # type: ignore[no-untyped-call]
    ):
        client.run(_mute_stdout)
        yield client


def _mute_stdout() -> None:
    """In a worker process started here: LightGBM's C++ network log is printed to stdout
    whatever the verbosity (its log callback is per thread, the worker's is unset), over the
    CLI's progress display; the worker's own log goes to stderr and stays."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def fit_dask(dataset: Dataset, config: ModelConfig, compute: ComputeConfig) -> TrainedModel:
    """Train on the cluster `compute` names; the returned booster holds the best rounds only."""
    with _table_folder(compute) as folder, connect(compute) as client:
        workers = _workers(client)
        table = write_table(dataset, folder, compute.partition_rows, len(workers))
        train = _load(client, table.train, workers)
        validation = _load(client, table.validation, workers)
        features = list(dataset.features)
        params = _dask_params(config)
        model = lgb.DaskLGBMClassifier(client=client, n_estimators=config.num_boost_round, **params)
        X, y = (_frame(client, train, workers, columns) for columns in (features, LABEL))
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # lightgbm.dask prints its port search, and warns that the scikit-learn wrapper's
            # own n_jobs (None) is replaced by each worker's thread count, as intended.
            warnings.filterwarnings("ignore", "Parameter n_jobs will be ignored", UserWarning)
            model.fit(X, y)
        booster = model.to_local().booster_
        shared = client.scatter(booster.model_to_string(), broadcast=True)  # type: ignore[no-untyped-call]
        curves = {
            name: _loss_curve(client, shared, parts, features)
            for name, parts in (("train", train), ("validation", validation))
        }
    best = best_iteration(curves["validation"], config.early_stopping_rounds)
    final = lgb.Booster(model_str=_without_network(booster.model_to_string(num_iteration=best)))
    history = {name: [float(v) for v in curve[:best]] for name, curve in curves.items()}
    recorded = {**params, "num_threads": 1, "num_machines": len(workers)}
    return TrainedModel(final, tuple(features), best, recorded, history)


def _without_network(model: str) -> str:
    """The model file less the network parameters of this training (ports drawn per run), so
    that the same data gives the same model string and a served model names no machines."""
    drop = ("[machines:", "[local_listen_port:")
    return "\n".join(line for line in model.split("\n") if not line.startswith(drop))


def best_iteration(losses: F64, patience: int) -> int:
    """The round `lightgbm.early_stopping` would keep (1-based): the lowest loss, searched until
    `patience` rounds pass without a strictly lower one."""
    best, kept = np.inf, 0
    for i, loss in enumerate(losses):
        if loss < best:
            best, kept = loss, i
        elif i - kept >= patience:
            break
    return kept + 1


def write_table(dataset: Dataset, folder: Path, partition_rows: int, workers: int) -> Table:
    """The training and validation windows as Parquet files, a multiple of `workers` each."""
    return Table(
        train=_write_part(dataset.train, folder / "train", partition_rows, workers),
        validation=_write_part(dataset.validation, folder / "validation", partition_rows, workers),
    )


def _write_part(part: Part, folder: Path, partition_rows: int, workers: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    frame = part.X.reset_index(drop=True).assign(**{LABEL: part.y.astype(np.float64)})
    wanted = -(-len(frame) // partition_rows)
    count = max(workers, -(-wanted // workers) * workers)
    paths = []
    for p in range(count):
        path = folder / f"part-{p:05d}.parquet"
        frame.iloc[p::count].to_parquet(path, index=False)
        paths.append(str(path))
    return paths


@contextlib.contextmanager
def _table_folder(compute: ComputeConfig) -> Iterator[Path]:
    """`compute.table_dir` (kept: a cluster's workers must all see it) or a temporary folder."""
    if compute.table_dir is not None:
        folder = Path(compute.table_dir)
        for window in ("train", "validation"):  # the previous training's table
            shutil.rmtree(folder / window, ignore_errors=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="arbiter-table-") as tmp:
        yield Path(tmp)


def _workers(client: Client) -> list[str]:
    """Worker addresses in the order of their names (a LocalCluster names them 0..n-1)."""
    client.wait_for_workers(1)
    found = client.scheduler_info(n_workers=-1)["workers"]
    return sorted(found, key=lambda address: str(found[address].get("name", address)))


def _load(client: Client, paths: list[str], workers: list[str]) -> list[Future[pd.DataFrame]]:
    """Each partition read from its file by the worker it is pinned to (`p mod n`)."""
    return [
        client.submit(
            pd.read_parquet,
            path,
            key=f"arbiter-table-{Path(path).parent.name}-{p}",
            workers=[workers[p % len(workers)]],
            allow_other_workers=False,
        )
        for p, path in enumerate(paths)
    ]


def _frame(
    client: Client, parts: list[Future[pd.DataFrame]], workers: list[str], columns: Any
) -> Any:
    """A Dask DataFrame (or Series) of `columns`, each partition cut where it was read."""
    picked = [
        client.submit(
            operator.getitem,
            part,
            columns,
            workers=[workers[p % len(workers)]],
            allow_other_workers=False,
        )
        for p, part in enumerate(parts)
    ]
    return dd.from_delayed(picked, verify_meta=False)


def _dask_params(config: ModelConfig) -> dict[str, Any]:
    """The single-machine parameters, data-parallel, less those `lightgbm.dask` sets itself."""
    params = {k: v for k, v in parameters(config).items() if k != "num_threads"}
    params["tree_learner"] = "data"
    return params


def _loss_curve(
    client: Client, model: Future[str], parts: list[Future[pd.DataFrame]], features: list[str]
) -> F64:
    """Mean binary log loss of every round over all partitions (a sum per partition)."""
    sums = client.gather(
        [  # type: ignore[no-untyped-call]
            client.submit(partition_losses, model, part, features) for part in parts
        ]
    )
    rows = sum(n for _, n in sums)
    return np.asarray(sum(s for s, _ in sums) / rows, dtype=np.float64)


def partition_losses(model: str, frame: pd.DataFrame, features: list[str]) -> tuple[F64, int]:
    """(summed log loss after each round, rows) of one partition, adding tree by tree."""
    booster = lgb.Booster(model_str=model)
    X = frame[features].to_numpy(dtype=np.float64)
    y = frame[LABEL].to_numpy(dtype=np.float64)
    margin = np.zeros(len(y))
    sums = np.empty(booster.num_trees(), dtype=np.float64)
    for i in range(len(sums)):
        margin += booster.predict(X, start_iteration=i, num_iteration=1, raw_score=True)
        p = np.clip(1.0 / (1.0 + np.exp(-margin)), EPSILON, 1.0 - EPSILON)
        sums[i] = -float(np.sum(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))
    return sums, len(y)
