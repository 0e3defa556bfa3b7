"""Evaluation on the test window, as a fraud team reads it.

* ranking: ROC AUC, average precision, recall at 0.1% and 1% false-positive rate (the share of
  fraud caught while bothering at most 1 in 1,000 / 1 in 100 good customers);
* workload: precision of the top k alerts of each day (what a review team of fixed size sees);
* ground truth: recall per fraud scenario at the 1%-FPR threshold, when scenario truth exists
  (`truth.parquet` beside a simulated log; labels are incomplete, the truth is not);
* money: expected loss at candidate thresholds, where a missed fraud costs its amount and an
  alert on a good event costs `review_cost` (a review, a declined good customer);
* calibration: Brier score and a reliability table (mean score against observed rate, by
  score quantile).

Everything returned is plain JSON-ready data; `headline` picks the numbers logged as metrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score, roc_curve

from training.config import EvaluationConfig
from training.dataset import DAY_MS, Part

F64 = npt.NDArray[np.float64]
FPRS = {"0.1pct": 0.001, "1pct": 0.01}


def recall_at_fpr(y: npt.ArrayLike, score: F64, max_fpr: float) -> tuple[float, float]:
    """(recall, threshold): the most fraud caught by a threshold whose FPR is at most max_fpr."""
    fpr, tpr, thresholds = roc_curve(y, score, drop_intermediate=False)
    allowed = np.flatnonzero(fpr <= max_fpr)
    best = allowed[np.argmax(tpr[allowed])]
    return float(tpr[best]), float(min(thresholds[best], 1.0))


def scores(y: npt.ArrayLike, score: F64) -> dict[str, float]:
    """The ranking and calibration numbers of one model on one window."""
    out = {
        "roc_auc": float(roc_auc_score(y, score)),
        "average_precision": float(average_precision_score(y, score)),
        "brier": float(brier_score_loss(y, score)),
    }
    for name, limit in FPRS.items():
        out[f"recall_at_{name}_fpr"] = recall_at_fpr(y, score, limit)[0]
    return out


def top_k_per_day(y: npt.ArrayLike, score: F64, ts: npt.ArrayLike, k: int) -> dict[str, float]:
    """Alert on the k highest scores of each UTC day: precision and recall of those alerts."""
    labels = np.asarray(y)
    day = np.asarray(ts, dtype=np.int64) // DAY_MS
    order = np.lexsort((-score, day))
    first = np.searchsorted(day[order], day[order], side="left")
    alerted = order[np.arange(len(order)) - first < k]
    caught = int(labels[alerted].sum())
    return {
        "k": float(k),
        "days": float(len(np.unique(day))),
        "alerts": float(len(alerted)),
        "precision": caught / len(alerted) if len(alerted) else 0.0,
        "recall": caught / max(int(labels.sum()), 1),
    }


def expected_loss(
    y: npt.ArrayLike, score: F64, amount: F64, thresholds: list[float], review_cost: float
) -> list[dict[str, float]]:
    """Per threshold: alerts, recall, precision and the loss (missed fraud amount + the cost of
    alerts on good events). Threshold 1.0 is "no model": nothing alerted, all fraud lost."""
    labels = np.asarray(y).astype(bool)
    value = np.nan_to_num(amount, nan=0.0)
    rows = []
    for t in [*thresholds, 1.0]:
        alert = score >= t if t < 1.0 else np.zeros(len(score), dtype=bool)
        missed = float(value[labels & ~alert].sum())
        false_alerts = int((alert & ~labels).sum())
        rows.append(
            {
                "threshold": float(t),
                "alert_rate": float(alert.mean()),
                "recall": float((alert & labels).sum() / max(labels.sum(), 1)),
                "precision": float((alert & labels).sum() / max(alert.sum(), 1)),
                "missed_fraud_amount": missed,
                "false_alerts": float(false_alerts),
                "loss": missed + review_cost * false_alerts,
            }
        )
    return rows


def reliability(y: npt.ArrayLike, score: F64, bins: int) -> list[dict[str, float]]:
    """Mean score against observed positive rate per score-quantile bin."""
    labels = np.asarray(y, dtype=np.float64)
    edges = np.unique(np.quantile(score, np.linspace(0, 1, bins + 1)))
    if len(edges) == 1:  # a constant score: one bin
        edges = np.repeat(edges, 2)
    which = np.searchsorted(edges[1:-1], score, side="right")
    table = []
    for b in range(len(edges) - 1):
        inside = which == b
        if inside.any():
            table.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "events": float(inside.sum()),
                    "mean_score": float(score[inside].mean()),
                    "observed_rate": float(labels[inside].mean()),
                }
            )
    return table


def per_scenario(
    part: Part, score: F64, threshold: float, truth: pd.DataFrame
) -> dict[str, dict[str, float]]:
    """Per scenario of the truth: events in the window, how many carry a positive label, and the
    share the model alerts on at `threshold`; `benign` is every event outside the truth."""
    scenario = (
        pd.Series(part.event_id)
        .map(truth.set_index("event_id")["scenario"])
        .fillna("benign")
        .to_numpy(dtype=object)
    )
    out: dict[str, dict[str, float]] = {}
    for name in sorted(set(scenario)):
        inside = scenario == name
        out[str(name)] = {
            "events": float(inside.sum()),
            "labelled_positive": float(part.y[inside].sum()),
            "alerted": float((score[inside] >= threshold).sum()),
            "recall": float((score[inside] >= threshold).mean()),
        }
    return out


def evaluate(
    part: Part,
    score: F64,
    config: EvaluationConfig,
    baseline: F64 | None = None,
    truth: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The whole evaluation of one window (the evaluation JSON of a run)."""
    _, threshold = recall_at_fpr(part.y, score, FPRS["1pct"])
    losses = expected_loss(part.y, score, part.amount, config.thresholds, config.review_cost)
    result: dict[str, Any] = {
        "window": {"start": part.start, "end": part.end},
        "events": len(part.y),
        "positives": part.positives,
        "model": scores(part.y, score),
        "threshold_at_1pct_fpr": threshold,
        "top_k_per_day": top_k_per_day(part.y, score, part.ts, config.top_k_per_day),
        "expected_loss": losses,
        "best_threshold": min(losses, key=lambda row: row["loss"]),
        "reliability": reliability(part.y, score, config.calibration_bins),
        "review_cost": config.review_cost,
    }
    if baseline is not None:
        result["baseline"] = scores(part.y, baseline)
        result["baseline_top_k_per_day"] = top_k_per_day(
            part.y, baseline, part.ts, config.top_k_per_day
        )
    if truth is not None:
        result["per_scenario"] = per_scenario(part, score, threshold, truth)
    return result


def headline(evaluation: dict[str, Any], prefix: str = "test_") -> dict[str, float]:
    """The numbers worth a metric each (MLflow metrics, `arbiter models list`)."""
    metrics = {f"{prefix}{k}": v for k, v in evaluation["model"].items()}
    top = evaluation["top_k_per_day"]
    metrics[f"{prefix}precision_top_{int(top['k'])}_per_day"] = top["precision"]
    metrics[f"{prefix}best_threshold_loss"] = evaluation["best_threshold"]["loss"]
    # Where ops place the policy's thresholds (docs/policy.md): the score above which 1 in 100
    # good events is flagged, and the cheapest threshold of the expected-loss table.
    metrics[f"{prefix}threshold_at_1pct_fpr"] = evaluation["threshold_at_1pct_fpr"]
    metrics[f"{prefix}best_threshold"] = evaluation["best_threshold"]["threshold"]
    metrics[f"{prefix}no_model_loss"] = evaluation["expected_loss"][-1]["loss"]
    for k, v in evaluation.get("baseline", {}).items():
        metrics[f"baseline_{prefix}{k}"] = v
    for name, row in evaluation.get("per_scenario", {}).items():
        if name != "benign":
            metrics[f"{prefix}recall_{name}"] = row["recall"]
    return metrics
