"""The rationale of one decision: what the customer is told, and what support and audit see.

Layer: explanations (pure). `build_rationale` turns a decision record (its JSON, as
`engine.records.DecisionRecord.to_json` writes it) into a JSON document with two parts:

* `customer`: what happened, at most four reasons (the rules and lists that fired first, then
  the families of features that weighed most towards fraud, where their text holds for the
  customer: `Catalogue.applies`, against the training population's quantiles), what would
  have changed the outcome, the categories of personal data used, and that the decision was
  automated. It never shows scores, thresholds, model names or feature identifiers.
* `internal`: the score, margin, base value and every contribution, summed per family, with the
  check that base value plus contributions gives the recorded margin; the thresholds, segment,
  rules, model and versions.

`counterfactual_for` asks the model what would have changed an adverse, score-driven decision
(see `explanations.counterfactual`); the caller passes its answer to `build_rationale`. The same
inputs always give the same document: sums are exact (`math.fsum`), ties sort by code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from explanations.catalogue import Catalogue, FamilyWeight
from explanations.counterfactual import (
    SEVERITY,
    Counterfactual,
    MarginOf,
    customer_view,
    internal_view,
    quantiles_of,
    score_action,
    threshold_margin,
    typical_of,
    what_would_change,
)
from explanations.wording import render

FEATURE_PREFIX = "FEATURE:"
MODEL_CODES = frozenset({"SCORE"})  # the model's own reason codes: families replace them
MAX_REASONS = 4
TOP_FAMILIES = 3  # the families a counterfactual tries, strongest first


def rule_codes(decision: Mapping[str, Any]) -> list[str]:
    """The record's rule and list reason codes (not the model's), in order, each once."""
    codes = (str(r["code"]) for r in decision.get("reasons") or ())
    return list(dict.fromkeys(c for c in codes if not _from_model(c)))


def decided_by_rule(decision: Mapping[str, Any], thresholds: Mapping[str, float] | None) -> bool:
    """Whether a rule, a list or the service set this adverse action: the score alone would not
    have given it (or the model was not consulted)."""
    action = decision["action"]
    if action == "allow":
        return False
    score = decision.get("score")
    if score is None:
        return True
    if thresholds is None:
        return any(c != "ALLOW_LISTED" for c in rule_codes(decision))
    return SEVERITY[score_action(float(score), thresholds)] < SEVERITY[action]


def counterfactual_for(
    decision: Mapping[str, Any],
    margin_of: MarginOf,
    *,
    catalogue: Catalogue,
    distribution: Mapping[str, Any] | None,
    thresholds: Mapping[str, float] | None,
    top: int = TOP_FAMILIES,
    steps: int = 16,
) -> Counterfactual | None:
    """What would have changed a score-driven adverse decision, asking `margin_of` (the model
    that decided); None when there is nothing to ask (allow, a rule decided, no contributions
    or thresholds)."""
    action = decision["action"]
    contributions = decision.get("contributions")
    if (
        action == "allow"
        or not contributions
        or thresholds is None
        or action not in thresholds
        or decided_by_rule(decision, thresholds)
    ):
        return None
    weights = [w for w in catalogue.weigh(contributions) if w.contribution > 0][:top]
    return what_would_change(
        margin_of,
        decision.get("features") or {},
        [(w.family.code, [name for name, _ in w.features]) for w in weights],
        typical_of(distribution),
        threshold_margin(thresholds[action]),
        integer_features=catalogue.integer_features(),
        steps=steps,
    )


def build_rationale(
    decision: Mapping[str, Any],
    *,
    catalogue: Catalogue,
    distribution: Mapping[str, Any] | None,
    thresholds: Mapping[str, float] | None,
    counterfactual: Counterfactual | None,
) -> dict[str, Any]:
    """The rationale document of `decision` (see the module docstring for its parts)."""
    action, subject = str(decision["action"]), str(decision["subject_type"])
    features: Mapping[str, Any] = decision.get("features") or {}
    contributions: Mapping[str, float | None] | None = decision.get("contributions")
    typical = typical_of(distribution)
    weights = catalogue.weigh(contributions or {})
    rules = rule_codes(decision)
    by_rule = decided_by_rule(decision, thresholds)
    used = [name for name in sorted(features) if features[name] is not None]
    categories = catalogue.categories(used, rules)
    limit = thresholds.get(action) if thresholds is not None else None
    customer = {
        "summary": _summary(decision, catalogue),
        "reasons": _reasons(
            action, rules, weights, features, typical, quantiles_of(distribution), catalogue
        ),
        "what_would_change": _what_would_change(
            decision,
            rules,
            counterfactual,
            catalogue,
            rule_decided=by_rule,
            instead=_instead(counterfactual, thresholds),
        ),
        "data_categories": [catalogue.model.data_categories[key] for key in categories],
        "automated": True,
    }
    internal = {
        "score": decision.get("score"),
        "raw_margin": decision.get("raw_margin"),
        "base_value": decision.get("base_value"),
        "contributions": (
            {name: contributions[name] for name in sorted(contributions)}
            if contributions is not None
            else None
        ),
        "families": [_family(w, features, typical) for w in weights],
        "check": _check(decision),
        "thresholds": dict(thresholds) if thresholds is not None else None,
        "segment": decision.get("segment"),
        "rules_fired": list(decision.get("rules_fired") or ()),
        "reason_codes": [str(r["code"]) for r in decision.get("reasons") or ()],
        "decided_by": None if action == "allow" else ("rule" if by_rule else "score"),
        "counterfactual": internal_view(
            counterfactual, threshold_margin(limit) if limit is not None else None
        ),
        "data_categories": categories,
        "model": {"name": decision.get("model_name"), "version": decision.get("model_version")},
        "policy_version": decision.get("policy_version"),
        "feature_spec_version": decision.get("feature_spec_version"),
    }
    return {
        "decision_id": decision["decision_id"],
        "catalogue_version": catalogue.version,
        "action": action,
        "subject_type": subject,
        "customer": customer,
        "internal": internal,
    }


def _from_model(code: str) -> bool:
    return code.startswith(FEATURE_PREFIX) or code in MODEL_CODES


def _summary(decision: Mapping[str, Any], catalogue: Catalogue) -> str:
    summaries = getattr(catalogue.model.wording.summary, str(decision["subject_type"]))
    when = datetime.fromtimestamp(int(decision["created_at"]) / 1000, tz=UTC)
    date = f"{when:%Y-%m-%d} at {when:%H:%M} UTC"
    return render(getattr(summaries, str(decision["action"])), lambda _kind, _name: date)


def _what_would_change(
    decision: Mapping[str, Any],
    rules: list[str],
    counterfactual: Counterfactual | None,
    catalogue: Catalogue,
    *,
    rule_decided: bool,
    instead: str | None = None,
) -> dict[str, Any] | None:
    """Nothing for an allow decision, nor for a score-driven one nobody asked the model about."""
    action = str(decision["action"])
    if action == "allow" or (counterfactual is None and not rule_decided):
        return None
    return customer_view(
        counterfactual,
        catalogue,
        action=action,
        subject_type=str(decision["subject_type"]),
        rule_decided=rule_decided,
        rule_codes=[code for code in rules if code != "ALLOW_LISTED"],
        instead=instead,
    )


def _instead(
    counterfactual: Counterfactual | None, thresholds: Mapping[str, float] | None
) -> str | None:
    """The action the score would have given after the counterfactual's change."""
    if counterfactual is None or counterfactual.margin_after is None or thresholds is None:
        return None
    margin = counterfactual.margin_after
    score = 1 / (1 + math.exp(-margin)) if margin > -700 else 0.0
    return score_action(score, thresholds)


def _reasons(
    action: str,
    rules: list[str],
    weights: list[FamilyWeight],
    features: Mapping[str, Any],
    typical: Mapping[str, float | None],
    quantiles: Mapping[str, Mapping[str, float]],
    catalogue: Catalogue,
) -> list[dict[str, str]]:
    """Rules and lists first (they decide outright), then the families that pushed towards
    fraud and whose text is true of the customer; an allow decision has no adverse reason to
    give beyond its allow list."""
    reasons = [{"code": code, "text": catalogue.rule_text(code)} for code in rules]
    if action != "allow":
        reasons += [
            {"code": w.family.code, "text": catalogue.family_text(w.family, features, typical)}
            for w in weights
            if w.contribution > 0 and catalogue.applies(w, features, quantiles)
        ]
        if not reasons:  # adverse, with no rule and no contribution to show
            reasons = [{"code": "SCORE", "text": catalogue.model.wording.overall_risk}]
    return reasons[:MAX_REASONS]


def _family(
    weight: FamilyWeight, features: Mapping[str, Any], typical: Mapping[str, float | None]
) -> dict[str, Any]:
    return {
        "code": weight.family.code,
        "label": weight.family.label,
        "contribution": weight.contribution,
        "features": [
            {
                "name": name,
                "value": features.get(name),
                "typical": typical.get(name),
                "contribution": value,
            }
            for name, value in weight.features
        ],
    }


def _check(decision: Mapping[str, Any]) -> dict[str, float] | None:
    """Base value plus contributions against the recorded margin: exact TreeSHAP makes them
    equal (to rounding), so a gap means the contributions are not the deciding model's."""
    contributions = decision.get("contributions")
    base, margin = decision.get("base_value"), decision.get("raw_margin")
    if contributions is None or base is None or margin is None:
        return None
    values = [contributions[name] for name in sorted(contributions)]
    total = math.fsum([float(base), *(float(v) for v in values if v is not None)])
    return {"base_plus_sum": total, "raw_margin": float(margin)}
