"""The promotion gate: a challenger takes the alias `champion` only when, on the same most recent
holdout, it is not worse than the champion beyond the configured tolerances.

The holdout is the more recent of the two models' stored test windows (`holdout/holdout.parquet`
of their runs; normally the challenger's): data frozen with its features, so both models score
exactly the same rows, reproducibly, without the event log. Both models are loaded from the
registry and scored there; the gate compares average precision and recall at 1% FPR:

    challenger >= champion - tolerance, for both

If either model's training or validation window reaches into that holdout (they were trained on
overlapping logs), the comparison favours that model; the result says so in a note. If a model
reads features the holdout lacks (another feature spec), the models cannot be compared and the
gate refuses. `force_reason` overrides the gate; the reason is recorded as a tag on the version. The
first model of a name becomes champion directly. Every decision is written to the version's tags
(`gate.*`), so the registry itself tells why a version serves.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
from mlflow import MlflowClient
from sklearn.metrics import average_precision_score

from training import registry
from training.config import PromotionConfig
from training.evaluate import FPRS, recall_at_fpr
from training.tracking import CHALLENGER, CHAMPION

AP = "average_precision"
RECALL = "recall_at_1pct_fpr"


@dataclass(frozen=True)
class Gate:
    champion_version: str
    holdout_run: str
    holdout_events: int
    challenger: dict[str, float]
    champion: dict[str, float]
    passed: bool
    reasons: list[str] = field(default_factory=list)  # why it was refused
    notes: list[str] = field(default_factory=list)  # caveats of the comparison


@dataclass(frozen=True)
class Promotion:
    version: str
    promoted: bool
    outcome: str  # first | passed | forced | refused | already_champion
    gate: Gate | None


def promote(
    client: MlflowClient,
    name: str,
    tolerances: PromotionConfig,
    number: str | None = None,
    force_reason: str | None = None,
) -> Promotion:
    candidate = registry.challenger_or(client, name, number)
    chosen = str(candidate.version)
    champion = registry.by_alias(client, name, CHAMPION)
    if champion is not None and str(champion.version) == chosen:
        return Promotion(chosen, False, "already_champion", None)
    if champion is None:
        _crown(client, name, chosen, None, {"gate.result": "first"})
        return Promotion(chosen, True, "first", None)
    gate = compare(client, name, chosen, str(champion.version), tolerances)
    tags = {
        "gate.result": "passed" if gate.passed else "refused",
        "gate.champion_version": gate.champion_version,
        "gate.holdout_run": gate.holdout_run,
        "gate.holdout_events": str(gate.holdout_events),
        **{f"gate.challenger_{k}": f"{v:.6f}" for k, v in gate.challenger.items()},
        **{f"gate.champion_{k}": f"{v:.6f}" for k, v in gate.champion.items()},
    }
    if gate.reasons:
        tags["gate.refused_because"] = "; ".join(gate.reasons)
    if gate.passed:
        _crown(client, name, chosen, str(champion.version), tags)
        return Promotion(chosen, True, "passed", gate)
    if force_reason:
        tags["gate.result"] = "forced"
        tags["promotion.forced_reason"] = force_reason
        _crown(client, name, chosen, str(champion.version), tags)
        return Promotion(chosen, True, "forced", gate)
    _tag(client, name, chosen, tags)
    return Promotion(chosen, False, "refused", gate)


def compare(
    client: MlflowClient, name: str, challenger: str, champion: str, tolerances: PromotionConfig
) -> Gate:
    models = {"challenger": challenger, "champion": champion}
    runs = {role: str(registry.version(client, name, n).run_id) for role, n in models.items()}
    tags = {role: client.get_run(run_id).data.tags for role, run_id in runs.items()}
    # The most recent holdout of the two (the challenger's on a tie, normally the case).
    newest = max(models, key=lambda role: int(tags[role].get("data.test_end_ms", "0")))
    holdout = registry.holdout_of(runs[newest])
    results: dict[str, dict[str, float]] = {}
    reasons: list[str] = []
    for role, number in models.items():
        booster = registry.load_booster(name, number)
        missing = [f for f in booster.feature_name() if f not in holdout.X.columns]
        if missing:
            reasons.append(
                f"the {role} (version {number}) reads features the holdout lacks ({missing[0]}, "
                f"{len(missing)} in all): another feature spec, the models cannot be compared"
            )
            results[role] = {AP: float("nan"), RECALL: float("nan")}
            continue
        score = np.asarray(booster.predict(holdout.X[booster.feature_name()]), dtype=np.float64)
        results[role] = _metrics(holdout.y, score)
    if not reasons:
        reasons = _shortfalls(results["challenger"], results["champion"], tolerances)
    notes = [
        f"the {role} (version {models[role]}) was trained or validated on data up to "
        f"{tags[role].get('data.validation_window', '?').split(' .. ')[-1]}, after the holdout "
        f"starts: the comparison favours the {role}"
        for role in models
        if int(tags[role].get("data.validation_end_ms", "0")) > holdout.start
    ]
    return Gate(
        champion_version=champion,
        holdout_run=runs[newest],
        holdout_events=len(holdout.y),
        challenger=results["challenger"],
        champion=results["champion"],
        passed=not reasons,
        reasons=reasons,
        notes=notes,
    )


def _shortfalls(
    challenger: dict[str, float], champion: dict[str, float], tolerances: PromotionConfig
) -> list[str]:
    reasons = []
    if challenger[AP] < champion[AP] - tolerances.tolerance_ap:
        reasons.append(
            f"average precision {challenger[AP]:.4f} < champion {champion[AP]:.4f} - tolerance "
            f"{tolerances.tolerance_ap:g}"
        )
    if challenger[RECALL] < champion[RECALL] - tolerances.tolerance_recall_at_1pct_fpr:
        reasons.append(
            f"recall at 1% FPR {challenger[RECALL]:.4f} < champion {champion[RECALL]:.4f} - "
            f"tolerance {tolerances.tolerance_recall_at_1pct_fpr:g}"
        )
    return reasons


def _metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    return {
        AP: float(average_precision_score(y, score)),
        RECALL: recall_at_fpr(y, score, FPRS["1pct"])[0],
    }


def _crown(
    client: MlflowClient, name: str, number: str, previous: str | None, tags: dict[str, str]
) -> None:
    now = dt.datetime.now(tz=dt.UTC).isoformat(timespec="seconds")
    _tag(client, name, number, {**tags, "promotion.promoted_at": now})
    client.set_registered_model_alias(name, CHAMPION, number)
    holder = registry.by_alias(client, name, CHALLENGER)
    if holder is not None and str(holder.version) == number:
        client.delete_registered_model_alias(name, CHALLENGER)
    if previous is not None:
        _tag(
            client,
            name,
            previous,
            {"promotion.superseded_by": number, "promotion.superseded_at": now},
        )


def _tag(client: MlflowClient, name: str, number: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, number, key, value)
