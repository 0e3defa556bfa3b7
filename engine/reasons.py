"""Reason codes and their plain-language texts, as shown to billing, support and customers.

Codes come from the policy (list hits, the hard rules' `reason`), from the service
(`ACCOUNT_SUSPENDED`, `FEATURES_UNAVAILABLE`) and, for score-driven actions, from the model's
strongest contributions (`FEATURE:<name>`). An unknown code still gets a text, never an error:
ops may add a rule with a new reason before this table knows it. The full rationale (values,
what would have changed the outcome) is the explanations package's work.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Mapping
from typing import Any

from engine.policy import Verdict, score_action
from engine.ports import ChampionModel, ContributionsLike
from engine.records import Reason
from features.state import numeric

FEATURE_PREFIX = "FEATURE:"

TEXTS: dict[str, str] = {
    "ALLOW_LISTED": "The account, card or IP address is on the allow list.",
    "DENY_LISTED_ACCOUNT": "The account is on the deny list.",
    "DENY_LISTED_CARD": "The card is on the deny list.",
    "DENY_LISTED_IP": "The payment came from an IP address on the deny list.",
    "DENY_LISTED_BIN_COUNTRY": "Cards issued in this country are not accepted.",
    "DENY_LISTED_DESTINATION": "The destination number range is on the deny list.",
    "MANY_CARDS": "Many different cards were used on the account within 24 hours.",
    "CARD_DECLINE_BURST": "The card was declined many times within 24 hours.",
    "SMS_PUMPING": (
        "The account sent texts to many different numbers within minutes and almost none of "
        "the verification codes were used: the pattern of SMS pumping."
    ),
    "HIGH_CALL_COST": (
        "The account's calls in 24 hours cost far more than usual: the pattern of revenue-share "
        "or toll fraud."
    ),
    "ACCOUNT_SUSPENDED": "The account is suspended; its payments are declined.",
    "FEATURES_UNAVAILABLE": (
        "The account's recent activity could not be read, so the payment was decided without it."
    ),
    "SCORE": "The fraud model rated the payment as risky.",
}


def text_of(
    code: str,
    descriptions: Mapping[str, str] | None = None,
    features: Mapping[str, Any] | None = None,
    flags: Collection[str] = (),
) -> str:
    """The plain-language text of a reason code. A `FEATURE:<name>` code names what weighed
    towards fraud without claiming a value: `descriptions` gives the feature's noun phrase (the
    reasons catalogue's `says`, "the age of your account"), and a flag in `flags` adds whether
    it held ("... verified by phone or identity check (no)"), since a flag pushes the score up
    in either state."""
    if code in TEXTS:
        return TEXTS[code]
    if code.startswith(FEATURE_PREFIX):
        name = code[len(FEATURE_PREFIX) :]
        what = (descriptions or {}).get(name) or name.replace("_", " ")
        held = numeric((features or {}).get(name)) if name in flags else math.nan
        state = f" ({'yes' if held == 1 else 'no'})" if held in (0.0, 1.0) else ""
        return f"This weighed towards fraud: {what[0].lower()}{what[1:]}{state}."
    return code.replace("_", " ").capitalize() + "."


def reasons_of(
    codes: list[str],
    descriptions: Mapping[str, str] | None = None,
    features: Mapping[str, Any] | None = None,
    flags: Collection[str] = (),
) -> list[Reason]:
    """Reasons for codes, most important first, each code once."""
    seen: dict[str, None] = dict.fromkeys(codes)
    return [Reason(code, text_of(code, descriptions, features, flags)) for code in seen]


def top_features(contributions: Mapping[str, float], n: int = 2) -> list[str]:
    """`FEATURE:<name>` codes of the `n` features that pushed the score up the most."""
    ranked = sorted(
        ((value, name) for name, value in contributions.items() if value > 0), reverse=True
    )
    return [f"{FEATURE_PREFIX}{name}" for _, name in ranked[:n]]


def explain(
    model: ChampionModel,
    row: Any,
    probability: float,
    verdict: Verdict,
    codes: list[str],
    timings: dict[str, float],
) -> ContributionsLike | None:
    """An adverse decision's exact contributions (None for `allow`: derived on first read);
    when the score itself made the action adverse, its strongest features join `codes`."""
    if verdict.action == "allow":
        return None
    mark = time.perf_counter()
    contributions = model.scorer.contributions(row)
    timings["contributions_ms"] = round((time.perf_counter() - mark) * 1000, 3)
    if score_action(probability, verdict.thresholds) != "allow":
        codes += top_features(contributions.values) or ["SCORE"]
    return contributions
