"""The figures of a training run: PR and ROC curves (model and baseline), the threshold curve
ops use to pick thresholds, calibration, SHAP summary (beeswarm) and feature importance.

Rendered with matplotlib's Agg backend (no display needed); `save` writes a PNG and closes the
figure so a long session does not accumulate them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
import shap
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from training.explain import ShapSummary

F64 = npt.NDArray[np.float64]


def save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def pr_curve(y: npt.ArrayLike, scores: dict[str, F64]) -> Figure:
    figure, ax = plt.subplots(figsize=(6, 5))
    base = float(np.mean(np.asarray(y, dtype=np.float64)))
    for name, score in scores.items():
        precision, recall, _ = precision_recall_curve(y, score)
        ax.step(recall, precision, where="post", label=name)
    ax.axhline(base, color="grey", linestyle=":", label=f"base rate {base:.2%}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title("Precision-recall, test window")
    ax.legend(loc="upper right")
    return figure


def roc_plot(y: npt.ArrayLike, scores: dict[str, F64]) -> Figure:
    figure, ax = plt.subplots(figsize=(6, 5))
    for name, score in scores.items():
        fpr, tpr, _ = roc_curve(y, score)
        ax.step(np.maximum(fpr, 1e-4), tpr, where="post", label=name)
    for limit in (0.001, 0.01):
        ax.axvline(limit, color="grey", linestyle=":")
    ax.set_xscale("log")
    ax.set(xlabel="false-positive rate (log)", ylabel="recall", xlim=(1e-4, 1), ylim=(0, 1.02))
    ax.set_title("ROC, test window (dotted: 0.1% and 1% FPR)")
    ax.legend(loc="lower right")
    return figure


def threshold_curve(y: npt.ArrayLike, score: F64) -> Figure:
    """Precision, recall and alert rate against the score threshold."""
    precision, recall, thresholds = precision_recall_curve(y, score)
    ordered = np.sort(score)
    alert_rate = 1 - np.searchsorted(ordered, thresholds, side="left") / len(score)
    figure, ax = plt.subplots(figsize=(7, 5))
    ax.plot(thresholds, precision[:-1], label="precision")
    ax.plot(thresholds, recall[:-1], label="recall")
    ax.plot(thresholds, alert_rate, label="alert rate")
    ax.set_xscale("log")
    ax.set(xlabel="score threshold (log)", ylabel="share", ylim=(0, 1.02))
    ax.set_title("Choosing a threshold, test window")
    ax.legend(loc="center left")
    return figure


def calibration(tables: dict[str, list[dict[str, float]]]) -> Figure:
    figure, ax = plt.subplots(figsize=(6, 5))
    top = 0.0
    for name, rows in tables.items():
        predicted = [r["mean_score"] for r in rows]
        observed = [r["observed_rate"] for r in rows]
        ax.plot(predicted, observed, marker="o", label=name)
        top = max([top, *predicted, *observed])
    ax.plot([0, top], [0, top], color="grey", linestyle=":", label="perfectly calibrated")
    ax.set(xlabel="mean score (per quantile bin)", ylabel="observed positive rate")
    ax.set_title("Calibration, test window")
    ax.legend(loc="upper left")
    return figure


def shap_beeswarm(summary: ShapSummary, max_display: int = 20) -> Figure:
    figure = plt.figure()
    with warnings.catch_warnings():
        # A feature never set in the sample (all NaN) has no colour scale; shap warns, harmlessly.
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        shap.summary_plot(
            summary.values,
            summary.sample,
            show=False,
            max_display=max_display,
            plot_size=(8, 8),
            rng=np.random.default_rng(0),  # the jitter of the dots: the same picture every time
        )
    figure.suptitle(f"SHAP (log-odds) on {len(summary.sample):,} test events")
    return figure


def importance(gain: dict[str, float], shap_mean: dict[str, float], top: int = 25) -> Figure:
    names = list(shap_mean)[:top][::-1]
    figure, axes = plt.subplots(1, 2, figsize=(12, max(4, 0.3 * len(names))), sharey=True)
    axes[0].barh(names, [shap_mean[n] for n in names])
    axes[0].set(title="mean |SHAP| (log-odds), test sample")
    total = sum(gain.values()) or 1.0
    axes[1].barh(names, [gain.get(n, 0.0) / total for n in names])
    axes[1].set(title="LightGBM split gain (share)")
    figure.tight_layout()
    return figure


def write_figures(
    directory: Path,
    y: npt.ArrayLike,
    scores: dict[str, F64],
    reliability: dict[str, list[dict[str, float]]],
    summary: ShapSummary,
    gain: dict[str, float],
) -> list[Path]:
    """Render and save every figure of a run into `directory`, one at a time."""
    model = next(iter(scores.values()))
    makers: dict[str, Callable[[], Figure]] = {
        "pr_curve.png": lambda: pr_curve(y, scores),
        "roc_curve.png": lambda: roc_plot(y, scores),
        "threshold_curve.png": lambda: threshold_curve(y, model),
        "calibration.png": lambda: calibration(reliability),
        "shap_summary.png": lambda: shap_beeswarm(summary),
        "feature_importance.png": lambda: importance(gain, summary.mean_abs),
    }
    return [save(make(), directory / name) for name, make in makers.items()]
