"""Verification of stored decisions: re-derived from their stored feature values with the exact
model version that made them.

A customer who objects is owed the rationale of the decision as it was made, so it must be
possible to show, years later, that the recorded score and contributions follow from the
recorded feature values. `Verifier.verify` loads the model version named in the record from
the registry (not whatever is champion now), scores the stored features again and checks:

* the raw margin, and the probability, against the recorded ones (within 1e-9);
* each stored contribution, and the base value, against exact TreeSHAP on the same row;
* base value + sum(stored contributions) against the recorded raw margin.

The outcome is a `Verification`: `match`, `mismatch` (its `detail` names each check that
failed and the largest difference), `not_scored` (no model was consulted: a suspended
account, a degraded decision, the rules alone) or `model_unavailable` (the registry or the
artifact failed; the reason in `detail`). Only the store's errors raise (`DecisionNotFound`
for an unknown id, `StoreError`). Verification only reads: it stores nothing.

Where a decision chain proves records were not changed after they were written
(`DecisionStore.verify_chain`), this proves what was written is what the model says.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from engine.chain import JsonValue
from engine.ports import ScorerLike
from engine.records import StoredDecision

# Derived from the same features with the same model, values match to rounding.
TOLERANCE = 1e-9

Status = Literal["match", "mismatch", "not_scored", "model_unavailable"]
STATUSES: tuple[Status, ...] = ("match", "mismatch", "not_scored", "model_unavailable")


@dataclass(frozen=True)
class Verification:
    decision_id: str
    model_name: str | None
    model_version: str | None
    status: Status
    score_recorded: float | None
    score_derived: float | None
    margin_recorded: float | None
    margin_derived: float | None
    max_contribution_diff: float | None  # None when the decision has no stored contributions
    detail: str


class _Model(Protocol):
    @property
    def scorer(self) -> ScorerLike: ...


class _Store(Protocol):
    def get_decision(self, decision_id: str) -> StoredDecision: ...
    def decisions_since(self, since_ms: int) -> Iterable[StoredDecision]: ...


class _Unavailable:
    """A version that failed to load during one sample: not asked of the registry again."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class Verifier:
    def __init__(self, store: _Store, load_version: Callable[[str, str], _Model]) -> None:
        """`load_version(name, version)`: that exact model version, ready to score (e.g.
        `DeferredContributions.model`, to share its loaded versions)."""
        self.store = store
        self.load_version = load_version
        self._models: dict[tuple[str, str], _Model] = {}
        self._lock = threading.Lock()

    def verify(self, decision_id: str) -> Verification:
        """The decision re-derived and compared; `DecisionNotFound` for an unknown id."""
        return self._verify(self.store.get_decision(decision_id), {})

    def verify_sample(self, n: int | None, *, seed: int = 0) -> list[Verification]:
        """Every stored decision (`n` None), or `n` of them drawn at random with `seed` (the
        same store and seed draw the same ones), in chain order. One pass over the store,
        holding at most `n` decisions."""
        if n is not None and n < 0:
            raise ValueError(f"a sample of {n} decisions")
        failed: dict[tuple[str, str], _Unavailable] = {}
        if n is None:
            return [self._verify(stored, failed) for stored in self.store.decisions_since(0)]
        return [self._verify(stored, failed) for stored in _reservoir(self.store, n, seed)]

    def _verify(
        self, stored: StoredDecision, failed: dict[tuple[str, str], _Unavailable]
    ) -> Verification:
        record = stored.record
        name, version = record.model_name, record.model_version
        # What the record says; each outcome below fills in what was derived.
        unverified = Verification(
            record.decision_id, name, version, "not_scored", record.score, None,
            record.raw_margin, None, None, "",
        )  # fmt: skip
        if record.score is None and record.raw_margin is None:
            why = "features unavailable (degraded)" if record.degraded else "no model consulted"
            codes = ", ".join(r.code for r in record.reasons) or record.action
            return replace(unverified, detail=f"not scored: {why} ({codes})")
        if name is None or version is None or record.score is None or record.raw_margin is None:
            return replace(
                unverified, status="mismatch",
                detail="the record has a score without its raw margin or its model version",
            )  # fmt: skip
        model = self._model(name, version, failed)
        if isinstance(model, _Unavailable):
            return replace(unverified, status="model_unavailable", detail=model.reason)
        stored_values = stored.contributions
        try:
            row = model.scorer.vector(record.features)
            score = model.scorer.score(row)
            derived = model.scorer.contributions(row) if stored_values is not None else None
        except (TypeError, ValueError) as exc:  # a stored feature value that is not a number
            return replace(
                unverified, status="mismatch",
                detail=f"model {name} v{version} cannot score the stored features: {exc}",
            )  # fmt: skip
        failures = [
            *_differs("margin", record.raw_margin, score.margin),
            *_differs("score", record.score, score.probability),
        ]
        max_diff = None
        if derived is not None and stored_values is not None:
            max_diff, found = _contribution_checks(
                stored_values, stored.base_value, derived.values, derived.base, record.raw_margin
            )
            failures += found
        if failures:
            status: Status = "mismatch"
            detail = f"model {name} v{version}: " + "; ".join(failures)
        else:
            status = "match"
            what = "the margin" if max_diff is None else "the margin and the contributions"
            detail = f"model {name} v{version} reproduces {what} within {TOLERANCE:g}"
        return replace(
            unverified, status=status, score_derived=score.probability,
            margin_derived=score.margin, max_contribution_diff=max_diff, detail=detail,
        )  # fmt: skip

    def _model(
        self, name: str, version: str, failed: dict[tuple[str, str], _Unavailable]
    ) -> _Model | _Unavailable:
        key = (name, version)
        with self._lock:
            if key in failed:
                return failed[key]
            if key not in self._models:
                try:
                    self._models[key] = self.load_version(name, version)
                except Exception as exc:  # whatever the registry or the artifact raise
                    reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
                    failed[key] = _Unavailable(f"model {name} v{version}: {reason}")
                    return failed[key]
            return self._models[key]


def _reservoir(store: _Store, n: int, seed: int) -> list[StoredDecision]:
    """`n` decisions drawn uniformly in one pass (Algorithm R), back in chain order."""
    rng = random.Random(seed)
    kept: list[StoredDecision] = []
    for i, stored in enumerate(store.decisions_since(0)):
        if i < n:
            kept.append(stored)
        elif (j := rng.randrange(i + 1)) < n:
            kept[j] = stored
    return sorted(kept, key=lambda s: s.seq)


def _gap(a: float, b: float) -> float:
    # A stored null or non-number (NaN here) is as far from a derived value as can be.
    diff = abs(a - b)
    return math.inf if math.isnan(diff) else diff


def _differs(what: str, recorded: float, derived: float) -> list[str]:
    diff = _gap(recorded, derived)
    if diff <= TOLERANCE:
        return []
    return [f"{what} differs by {diff:.3g} (recorded {recorded!r}, derived {derived!r})"]


def _contribution_checks(
    stored: Mapping[str, JsonValue],
    stored_base: float | None,
    derived: Mapping[str, float],
    derived_base: float,
    margin: float,
) -> tuple[float, list[str]]:
    """The largest difference between stored and derived contributions (base value included),
    and the checks that failed: the features, each contribution, the base value, their sum."""
    failures: list[str] = []
    if set(stored) != set(derived):
        extra, missing = sorted(set(stored) - set(derived)), sorted(set(derived) - set(stored))
        failures.append(f"contributions name other features (extra {extra}, missing {missing})")
    values = {k: _number(v) for k, v in stored.items()}
    base = _number(stored_base)
    diffs = {k: _gap(v, derived[k]) for k, v in values.items() if k in derived}
    worst = max(diffs, key=diffs.__getitem__, default=None)
    if worst is not None and diffs[worst] > TOLERANCE:
        failures.append(f"contributions differ by up to {diffs[worst]:.3g} ({worst})")
    base_diff = _gap(base, derived_base)
    if base_diff > TOLERANCE:
        failures.append(f"base value differs by {base_diff:.3g}")
    total = math.fsum([base, *values.values()])
    if (gap := _gap(total, margin)) > TOLERANCE:
        failures.append(
            f"base + sum(contributions) = {total!r} is {gap:.3g} from the recorded margin"
        )
    return max([base_diff, *diffs.values()]), failures


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return math.nan
