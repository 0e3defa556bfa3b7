"""What would have changed the outcome, found by asking the model itself.

Layer: explanations (pure; the model is a plain callable, `margin_of(features) -> raw margin`).
For an adverse decision, `what_would_change` takes the families that weighed most (strongest
first) and moves each family's features together from the customer's values towards the typical
ones, a fraction `t` of the way (integer features rounded). A family that does not bring the
margin below the action's threshold even at `t = 1` could not change the outcome alone; for the
first one that does, bisection finds the smallest `t` that does (to `2**-steps`). When none
does, the answer says so: no single factor on its own would have changed the outcome.

`customer_view` words the answer for the customer with the catalogue's units and phrases (or
says which rule decided, when the score alone would not have given the action);
`internal_view` gives the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from explanations.catalogue import Catalogue
from explanations.wording import as_number, human, render

MarginOf = Callable[[dict[str, Any]], float]
SEVERITY: dict[str, int] = {"allow": 0, "review": 1, "decline": 2, "suspend_account": 3}
# A feature the catalogue does not know has no customer phrase: say what moved, not its name.
_UNLISTED = "other aspects of your activity had been closer to what is typical"


@dataclass(frozen=True)
class Counterfactual:
    found: bool
    family: str | None  # the family code whose change would have sufficed
    changes: tuple[tuple[str, float, float], ...]  # (feature, from, to), only those that move
    margin_after: float | None  # the model's margin with the changes applied
    tried: tuple[str, ...]  # family codes, in the order they were tried
    t: float | None = None  # how far towards typical the change goes (1: all the way)


def threshold_margin(threshold: float) -> float:
    """The raw margin a probability threshold corresponds to (logit); below it, below the
    threshold. A threshold of 0 cannot be gone below, one of 1 always is."""
    if threshold <= 0:
        return -math.inf
    if threshold >= 1:
        return math.inf
    return math.log(threshold / (1 - threshold))


def score_action(score: float, thresholds: Mapping[str, float]) -> str:
    """The action the score alone gives (the engine's rule, on plain thresholds; an account's
    thresholds have no `decline`)."""
    for action in ("suspend_account", "decline", "review"):
        limit = thresholds.get(action)
        if limit is not None and score >= limit:
            return action
    return "allow"


def _by_feature(distribution: Mapping[str, Any] | None) -> Iterator[tuple[str, dict[str, float]]]:
    """Each feature of the model's training population with its quantiles that are numbers
    (none for a feature never set there), in name order."""
    features = (distribution or {}).get("features") or {}
    for name in sorted(features):
        quantiles = (features[name] or {}).get("quantiles") or {}
        numbers = ((key, as_number(value)) for key, value in quantiles.items())
        yield name, {key: number for key, number in numbers if number is not None}


def quantiles_of(distribution: Mapping[str, Any] | None) -> dict[str, dict[str, float]]:
    """Each feature's quantiles in the model's training population (`p1` ... `p99`); a
    feature never set there, or a model without a distribution, has none."""
    return {name: known for name, known in _by_feature(distribution) if known}


def typical_of(distribution: Mapping[str, Any] | None) -> dict[str, float | None]:
    """Each feature's typical value: the median (`p50`) of the model's training population."""
    return {name: known.get("p50") for name, known in _by_feature(distribution)}


def move(
    features: Mapping[str, Any],
    names: Sequence[str],
    typical: Mapping[str, float | None],
    t: float,
    integer_features: frozenset[str] | set[str] = frozenset(),
) -> dict[str, Any]:
    """`features` with `names` moved a fraction `t` of the way to their typical values. Missing
    values, and features without a typical value, stay as they are."""
    row = dict(features)
    for name in names:
        start, goal = as_number(features.get(name)), as_number(typical.get(name))
        if start is None or goal is None:
            continue
        value = goal if t == 1 else start + t * (goal - start)
        row[name] = float(round(value)) if name in integer_features else value
    return row


def what_would_change(
    margin_of: MarginOf,
    features: Mapping[str, Any],
    families: Sequence[tuple[str, Sequence[str]]],
    typical: Mapping[str, float | None],
    threshold_margin: float,
    *,
    integer_features: frozenset[str] | set[str] = frozenset(),
    steps: int = 16,
) -> Counterfactual:
    """The smallest change of one family's features (first family that can) that takes the
    margin below `threshold_margin`. At most `steps + 1` model calls per family: `t = 1`, then
    bisection on `t`, which assumes the customer's own margin (`t = 0`) is at or above it."""
    tried: list[str] = []
    for code, names in families:
        tried.append(code)
        found = _smallest_move(
            margin_of, features, names, typical, threshold_margin, integer_features, steps
        )
        if found is not None:
            t, margin, changes = found
            return Counterfactual(True, code, changes, margin, tuple(tried), t)
    return Counterfactual(False, None, (), None, tuple(tried))


def _smallest_move(
    margin_of: MarginOf,
    features: Mapping[str, Any],
    names: Sequence[str],
    typical: Mapping[str, float | None],
    threshold_margin: float,
    integer_features: frozenset[str] | set[str],
    steps: int,
) -> tuple[float, float, tuple[tuple[str, float, float], ...]] | None:
    """The smallest `t` moving `names` that takes the margin below `threshold_margin`, that
    margin and the changes; None when even `t = 1` does not."""
    starts = {n: as_number(features.get(n)) for n in names}
    movable = [n for n in names if starts[n] is not None and as_number(typical.get(n)) is not None]
    if not movable:
        return None
    seen: dict[tuple[Any, ...], float] = {}

    def margin_at(t: float) -> float:
        row = move(features, movable, typical, t, integer_features)
        key = tuple(row[n] for n in movable)
        # Rounded integer features make many t give one row: ask the model once for it.
        if key not in seen:
            seen[key] = float(margin_of(row))
        return seen[key]

    low, high = 0.0, 1.0
    high_margin = margin_at(high)
    if not high_margin < threshold_margin:
        return None  # even all the way to typical, this family alone does not do it
    for _ in range(steps):
        middle = (low + high) / 2
        margin = margin_at(middle)
        if margin < threshold_margin:
            high, high_margin = middle, margin
        else:
            low = middle
    row = move(features, movable, typical, high, integer_features)
    changes = tuple(
        (n, float(start), float(row[n]))
        for n in movable
        if (start := starts[n]) is not None and row[n] != start
    )
    return high, high_margin, changes


def customer_view(
    counterfactual: Counterfactual | None,
    catalogue: Catalogue,
    *,
    action: str,
    subject_type: str,
    rule_decided: bool = False,
    rule_codes: Sequence[str] = (),
    instead: str | None = None,
) -> dict[str, Any]:
    """What would have changed an adverse outcome, in the customer's words: `kind` is `change`
    (with `changes`: what, from, to, as written for a person), `none` (no single factor would
    have) or `rule` (`rule_decided`: the score alone would not have given the action; the rules
    and lists that fired, `rule_codes`, are named). A change is followed by the rules that fired
    as well, which it leaves aside. `instead` is the action the changed score would have given:
    a milder one that is still adverse is said too ("..., but this payment would still have
    been declined"), unless rules fired (what they would still give is not the score's).
    """
    if action not in SEVERITY or action == "allow":
        raise ValueError(f"only an adverse decision has something to change, not {action!r}")
    words = catalogue.model.wording
    texts = [catalogue.rule_text(code) for code in dict.fromkeys(rule_codes)]
    rules = " ".join(texts)
    if rule_decided:
        text = render(words.rule_decided, lambda _kind, _name: rules or words.unknown_rule)
        return {"kind": "rule", "text": text, "changes": []}
    if counterfactual is None or not counterfactual.found:
        return {"kind": "none", "text": words.no_single_factor, "changes": []}
    outcome: str = getattr(getattr(words.outcome, subject_type), action)
    visible, hidden = _clauses(counterfactual, catalogue)
    clauses = visible or hidden  # a change too small to show is still the honest answer
    still = getattr(getattr(words.still, subject_type), instead or "", None)
    if still is not None and not rules and SEVERITY[str(instead)] < SEVERITY[action]:
        outcome = f"{outcome}, {still}"  # with rules, what would still apply is theirs to say
    text = f"If {_join([c for c, _ in clauses])}, {outcome}."
    if rules:
        # The change only moves the assessment; a rule that fired as well may set the same
        # outcome on its own (its action is the policy's to know, not the record's).
        text += " " + render(words.rules_also, lambda _kind, _name: rules)
    return {"kind": "change", "text": text, "changes": [c for _, c in clauses if c]}


def _clauses(
    counterfactual: Counterfactual, catalogue: Catalogue
) -> tuple[list[tuple[str, dict[str, str] | None]], list[tuple[str, dict[str, str] | None]]]:
    """Each change as a clause finishing "If ...", split by whether it shows once written."""
    visible: list[tuple[str, dict[str, str] | None]] = []
    hidden: list[tuple[str, dict[str, str] | None]] = []
    unlisted = False
    for name, start, end in counterfactual.changes:
        entry = catalogue.entry(name)
        if entry is None:
            unlisted = True
            continue
        before, after = human(entry.unit, start), human(entry.unit, end)
        change = {"what": entry.says, "from": str(before), "to": str(after)}
        if entry.unit == "flag":
            clause = str(entry.if_on if end >= 0.5 else entry.if_off)
        else:
            clause = f"{entry.says} had been {after} instead of {before}"
        (visible if before != after else hidden).append((clause, change))
    if unlisted:
        visible.append((_UNLISTED, None))
    return visible, hidden


def internal_view(
    counterfactual: Counterfactual | None, threshold_margin: float | None = None
) -> dict[str, Any] | None:
    """The counterfactual's numbers, for support and audit."""
    if counterfactual is None:
        return None
    finite = threshold_margin is not None and math.isfinite(threshold_margin)
    return {
        "found": counterfactual.found,
        "family": counterfactual.family,
        "t": counterfactual.t,
        "changes": [{"feature": n, "from": a, "to": b} for n, a, b in counterfactual.changes],
        "margin_after": counterfactual.margin_after,
        "threshold_margin": threshold_margin if finite else None,
        "tried": list(counterfactual.tried),
    }


def _join(parts: Sequence[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]
