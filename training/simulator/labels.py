"""Labels as they arrive in real life: late, incomplete and a little noisy.

- Chargebacks: 70% of approved payments made with a card that was not the payer's draw one
  (`label=fraud`, `source=chargeback`, `target_event_id` = the payment), 2 days plus a log-normal
  delay later (median ~7 days, ~85% within 10 days, a tail to 45): the issuer's fraud report
  (TC40 / SAFE) and the dispute reach the merchant days after the cardholder notices, a few
  stragglers weeks later. About 0.2% of honest approved payments are disputed too (friendly
  fraud, services not recognised), 5-45 days later, also as `fraud` chargebacks: the noise every
  chargeback feed carries.
- Reviews: analysts catch most fraud accounts 1-10 days after the fraud began (`source=review`,
  `label=fraud`, `reason` = the scenario, the first fraudulent payment as target when there is
  one). A fraud chargeback on an account the analysts missed triggers a review of it 0.5-3 days
  later, as it does in any fraud team. They also look at honest accounts that merely look
  unusual (travellers, servers on hosting networks, foreign cards, campaigns, agencies) and
  clear them (`not_fraud`).
- A label whose time falls after the end of the window is not known yet and is not emitted.

Labels are bookkeeping about events, not fraud activity: they carry no scenario in the truth.
"""

from __future__ import annotations

import numpy as np

from training.simulator.config import BENIGN, DAY_MS, SCENARIOS, SimConfig
from training.simulator.table import EventTable
from training.simulator.world import NEVER, Population

CHARGEBACK_P = 0.7
# Days from a stolen-card payment to its chargeback: CHARGEBACK_MIN + log-normal, capped.
CHARGEBACK_MIN, CHARGEBACK_MEDIAN, CHARGEBACK_SIGMA, CHARGEBACK_MAX = 2.0, 5.0, 0.6, 45.0
FRIENDLY_P = 0.002
REVIEW_P: dict[str, float] = {
    "stolen_card": 0.6,
    "card_testing": 0.5,
    "sms_pumping": 0.85,
    "irsf": 0.85,
    "toll_fraud": 0.9,
    "account_takeover": 0.75,
    "trial_abuse": 0.7,
}
CLEARED_SHARE = 0.02  # honest accounts reviewed and cleared
FRAUD_REASON = "card_not_present_fraud"
DISPUTE_REASONS = np.array(
    [FRAUD_REASON, "services_not_received", "transaction_not_recognised"], dtype=object
)


def generate(pop: Population, config: SimConfig, table: EventTable) -> None:
    rng = config.rng("labels")
    payments = table.rows("payment")
    charged = _chargebacks(rng, table, payments)
    _fraud_reviews(rng, pop, table, payments, charged)
    _clearances(rng, pop, config, table, payments)


def _chargebacks(
    rng: np.random.Generator, table: EventTable, payments: dict[str, np.ndarray]
) -> np.ndarray:
    """Add the chargebacks; returns the earliest fraud chargeback time per account (NEVER: none)."""
    n = len(payments["ts"])
    approved = payments["status"] == "approved"
    stolen = payments["_stolen"].astype(bool)
    fraud = stolen & approved & (rng.random(n) < CHARGEBACK_P)
    friendly = ~stolen & approved & (rng.random(n) < FRIENDLY_P)
    fraud_days = CHARGEBACK_MIN + rng.lognormal(np.log(CHARGEBACK_MEDIAN), CHARGEBACK_SIGMA, n)
    fraud_days = np.minimum(fraud_days, CHARGEBACK_MAX)
    delay = np.where(fraud, fraud_days, rng.uniform(5, 45, n)) * DAY_MS
    reason = np.where(fraud, FRAUD_REASON, DISPUTE_REASONS[rng.integers(0, 3, n)])
    chosen = fraud | friendly
    table.add(
        "label",
        payments["account"][chosen],
        (payments["ts"] + delay.astype(np.int64))[chosen],
        label="fraud",
        source="chargeback",
        reason=reason[chosen].astype(object),
        _target=payments["key"][chosen],
    )
    first = np.full(int(payments["account"].max(initial=-1)) + 1, NEVER, dtype=np.int64)
    arrival = (payments["ts"] + delay.astype(np.int64))[fraud]
    np.minimum.at(first, payments["account"][fraud], arrival)
    return first


def _first_payment(
    payments: dict[str, np.ndarray], accounts: np.ndarray, fraud_only: bool, before: np.ndarray
) -> np.ndarray:
    """Key of each account's earliest (fraudulent) payment before `before`, or -1."""
    keys = np.full(len(accounts), -1, dtype=np.int64)
    mask = payments["scenario"] != BENIGN if fraud_only else np.ones(len(payments["ts"]), bool)
    order = np.argsort(payments["ts"], kind="stable")
    order = order[mask[order]]
    position = {int(a): i for i, a in enumerate(accounts)}
    for row in order:
        i = position.get(int(payments["account"][row]))
        if i is not None and keys[i] < 0 and payments["ts"][row] < before[i]:
            keys[i] = payments["key"][row]
    return keys


def _fraud_reviews(
    rng: np.random.Generator,
    pop: Population,
    table: EventTable,
    payments: dict[str, np.ndarray],
    charged: np.ndarray,
) -> None:
    account, ts, _ = table.touched()
    first = np.full(pop.n, NEVER, dtype=np.int64)
    np.minimum.at(first, account, ts)
    fraud = np.flatnonzero(first < NEVER)
    detect = np.array([REVIEW_P[SCENARIOS[s]] for s in pop.scenario[fraud]])
    found = rng.random(len(fraud)) < detect
    found_ts = first[fraud] + (rng.uniform(1, 10, len(fraud)) * DAY_MS).astype(np.int64)
    # A fraud chargeback sends an account the analysts missed to review.
    chargeback = np.full(len(fraud), NEVER, dtype=np.int64)
    has = fraud < len(charged)
    chargeback[has] = charged[fraud[has]]
    after = chargeback + (rng.uniform(0.5, 3, len(fraud)) * DAY_MS).astype(np.int64)
    triggered = ~found & (chargeback < NEVER)
    caught = fraud[found | triggered]
    review_ts = np.where(found, found_ts, after)[found | triggered]
    target = _first_payment(payments, caught, True, review_ts)
    target = np.where(rng.random(len(caught)) < 0.5, target, -1)
    table.add(
        "label",
        caught,
        review_ts,
        label="fraud",
        source="review",
        reason=np.array(SCENARIOS, dtype=object)[pop.scenario[caught]],
        _target=target,
    )


def _clearances(
    rng: np.random.Generator,
    pop: Population,
    config: SimConfig,
    table: EventTable,
    payments: dict[str, np.ndarray],
) -> None:
    honest = np.flatnonzero(pop.scenario == BENIGN)
    unusual = (
        (pop.trip_start_ms < NEVER)
        | pop.servers
        | (pop.card_bin[:, 0] != pop.country)
        | (pop.campaigns > 0)
        | pop.global_app
        | pop.agency
    )[honest]
    weight = np.where(unusual, 8.0, 1.0)
    n = min(len(honest), round(CLEARED_SHARE * len(honest)))
    cleared = np.sort(rng.choice(honest, size=n, replace=False, p=weight / weight.sum()))
    lo, hi = pop.active_span(config.start_ms, config.end_ms)
    seen = lo[cleared] + (rng.random(n) * (hi[cleared] - lo[cleared])).astype(np.int64)
    review_ts = seen + (rng.uniform(1, 10, n) * DAY_MS).astype(np.int64)
    target = _first_payment(payments, cleared, False, review_ts)
    target = np.where(rng.random(n) < 0.4, target, -1)
    table.add(
        "label",
        cleared,
        review_ts,
        label="not_fraud",
        source="review",
        reason="cleared",
        _target=target,
    )
