"""What a simulated world holds: counts per event type and scenario, realised base rates."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from features.events import EVENT_TYPES, format_ts
from training.simulator.config import BENIGN, SCENARIO_RATES, SCENARIOS, SimConfig
from training.simulator.table import BuiltLog


def _share(part: np.ndarray | float, whole: np.ndarray | float) -> float:
    total = float(np.sum(whole))
    return round(float(np.sum(part)) / total, 5) if total else 0.0


def describe(config: SimConfig, log: BuiltLog, accounts: pd.DataFrame) -> dict[str, Any]:
    events = log.events
    types = events["type"].to_numpy(dtype=object)
    fraud = log.scenario != BENIGN
    payment = types == "payment"
    label = types == "label"
    amount = events["amount"].to_numpy(dtype=float, na_value=np.nan)
    declined = (events["status"] == "declined").to_numpy()
    source = events["source"].to_numpy(dtype=object)
    verdict = events["label"].to_numpy(dtype=object)
    targets_fraud = np.zeros(len(types), dtype=bool)
    has_target = log.target_row >= 0
    targets_fraud[has_target] = fraud[log.target_row[has_target]]
    chargeback = label & (source == "chargeback")
    account_scenario = accounts["scenario"].to_numpy(dtype=object)
    per_scenario: dict[str, dict[str, Any]] = {}
    for code, name in enumerate(SCENARIOS):
        members = int((account_scenario == name).sum())
        mine = log.scenario == code
        per_scenario[name] = {
            "configured_rate": SCENARIO_RATES[name],
            "accounts": members,
            "account_rate": _share(members, len(accounts)),
            "events": int(mine.sum()),
            "payments": int((mine & payment).sum()),
        }
    return {
        "seed": config.seed,
        "accounts": len(accounts),
        "days": config.days,
        "start": format_ts(config.start_ms),
        "end": format_ts(config.end_ms),
        "events": len(events),
        "events_by_type": {t: int((types == t).sum()) for t in EVENT_TYPES},
        "scenarios": per_scenario,
        "base_rates": {
            "fraud_accounts": _share(accounts["scenario"].notna(), len(accounts)),
            "compromised_accounts": _share(accounts["compromised_at"].notna(), len(accounts)),
            "fraud_events": _share(fraud, len(events)),
            "fraud_payments": _share(fraud & payment, payment),
            "fraud_payment_amount": _share(amount[fraud & payment], amount[payment]),
            "declined_payments": _share(declined & payment, payment),
        },
        "labels": {
            "chargeback": int(chargeback.sum()),
            "chargeback_on_honest_payments": int((chargeback & ~targets_fraud).sum()),
            "fraud_payments_charged_back": int((chargeback & targets_fraud).sum()),
            "review_fraud": int((label & (source == "review") & (verdict == "fraud")).sum()),
            "review_not_fraud": int((label & (verdict == "not_fraud")).sum()),
        },
    }
