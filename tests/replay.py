"""Replaying a simulated world through the HTTP API, as billing and the event pipeline would:
events in time order, activity in `POST /v1/events` batches, each payment through
`POST /v1/payments/score` (the batch before it flushed first, so the payment sees all earlier
activity). Labels are left out: they arrive weeks later and feed training, not scoring.

Used by the scenario tests (tests/integration/test_service_e2e.py) and handy by hand:

    .venv/bin/python -m tests.replay var/world http://127.0.0.1:8000 --per-scenario 2
"""

from __future__ import annotations

import argparse
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from features.events import EVENT_TYPES

INT_FIELDS = {name for fields in EVENT_TYPES.values() for name, f in fields.items()
              if f.kind == "int"}  # fmt: skip
PAYMENT_FIELDS = ("payment_id", "account_id", "amount", "currency", "card_fp", "bin_country",
                  "billing_country", "ip")  # fmt: skip


@dataclass
class Outcome:
    """What the engine decided about the replayed accounts."""

    payments: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    accounts: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    events_sent: int = 0

    def actions(self, account_id: str) -> Counter[str]:
        return Counter(d["action"] for d in self.payments[account_id] + self.accounts[account_id])

    def adverse(self, account_id: str) -> list[dict[str, Any]]:
        return [d for d in self.payments[account_id] + self.accounts[account_id]
                if d["action"] != "allow"]  # fmt: skip


def pick_accounts(world: Path, per_scenario: int, honest: int, seed: int = 0) -> dict[str, str]:
    """account_id -> scenario ("honest" for honest ones): up to `per_scenario` fraud accounts
    of each scenario (those with the most fraud events first) and `honest` random honest ones
    with at least one payment."""
    accounts = pd.read_parquet(world / "accounts.parquet")
    events = pd.read_parquet(world / "events.parquet", columns=["event_id", "type", "account_id"])
    truth = pd.read_parquet(world / "truth.parquet")
    fraud_events = events.merge(truth, on="event_id")
    chosen: dict[str, str] = {}
    for scenario, rows in fraud_events.groupby("scenario"):
        busiest = rows["account_id"].value_counts().index[:per_scenario]
        chosen.update({a: str(scenario) for a in busiest})
    payers = set(events.loc[events["type"] == "payment", "account_id"])
    clean = accounts.loc[accounts["scenario"].isna() & accounts["account_id"].isin(payers)]
    picked = np.random.default_rng(seed).choice(clean["account_id"].to_numpy(), honest,
                                                replace=False)  # fmt: skip
    chosen.update({str(a): "honest" for a in picked})
    return chosen


def _json(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if isinstance(value, pd.Timestamp):
            value = int(value.value // 1_000_000)
        elif isinstance(value, np.generic):
            value = value.item()
        if key in INT_FIELDS and isinstance(value, float):
            value = int(value)  # a column with gaps reads back as floats
        out[key] = value
    return out


def events_of(world: Path, accounts: Iterable[str]) -> list[dict[str, Any]]:
    """The accounts' events in time order, labels left out, as JSON-ready dicts."""
    events = pd.read_parquet(world / "events.parquet")
    wanted = events[events["account_id"].isin(set(accounts)) & (events["type"] != "label")]
    wanted = wanted.sort_values("ts", kind="stable")
    return [_json(row) for row in wanted.to_dict("records")]


def replay(client: httpx.Client, events: list[dict[str, Any]], batch: int = 2000) -> Outcome:
    outcome = Outcome()
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        if not pending:
            return
        response = client.post("/v1/events", json={"events": pending})
        response.raise_for_status()
        for decision in response.json()["decisions"]:
            outcome.accounts[decision["account_id"]].append(decision)
        outcome.events_sent += len(pending)
        pending.clear()

    for event in events:
        if event["type"] != "payment":
            pending.append(event)
            if len(pending) >= batch:
                flush()
            continue
        flush()
        body = {k: event[k] for k in PAYMENT_FIELDS if k in event} | {"ts": event["ts"]}
        response = client.post("/v1/payments/score", json=body)
        response.raise_for_status()
        outcome.payments[event["account_id"]].append({**response.json(), "ts": event["ts"]})
    flush()
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("world", type=Path)
    parser.add_argument("url")
    parser.add_argument("--per-scenario", type=int, default=2)
    parser.add_argument("--honest", type=int, default=20)
    parser.add_argument("--key", required=True, help="an API key with the scorer and ingest roles")
    args = parser.parse_args()
    chosen = pick_accounts(args.world, args.per_scenario, args.honest)
    headers = {"Authorization": f"Bearer {args.key}"}
    with httpx.Client(base_url=args.url, timeout=30.0, headers=headers) as client:
        outcome = replay(client, events_of(args.world, chosen))
    print(f"{outcome.events_sent} events and "
          f"{sum(len(v) for v in outcome.payments.values())} payments replayed")  # fmt: skip
    for account_id, scenario in sorted(chosen.items(), key=lambda kv: kv[1]):
        reasons = Counter(r["code"] for d in outcome.adverse(account_id) for r in d["reasons"])
        print(f"{scenario:17} {account_id}  payments {len(outcome.payments[account_id]):3}  "
              f"account decisions {len(outcome.accounts[account_id]):2}  "
              f"{dict(outcome.actions(account_id))}  {dict(reasons.most_common(4))}")  # fmt: skip


if __name__ == "__main__":
    main()
