"""Writes tests/data/card_payments.jsonl, the small card-payments log the generic-spec tests use.

Deterministic (seeded); kept so the fixture can be regenerated or grown. Fraud reports arrive
14-40 days after the payment, as chargebacks do, and name it in `target_event_id`; the log ends
on day 150, so the reports of the last weeks' payments are not known yet (as in production).
`card_payments_training.yaml` trains on it (tests/integration/test_training.py).

    .venv/bin/python tests/data/make_card_payments.py
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np

START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
DAY_MS = 86_400_000
END_DAY = 150


def iso(ms: int) -> str:
    return (START + dt.timedelta(milliseconds=int(ms))).isoformat().replace("+00:00", "Z")


def main() -> None:
    rng = np.random.default_rng(11)
    events = []
    customers = [f"c{i:03d}" for i in range(40)]
    merchants = [f"m{i:02d}" for i in range(8)]
    home = {c: str(rng.choice(["DE", "FR", "NL"])) for c in customers}
    for i, c in enumerate(customers):
        events.append(
            {
                "type": "signup",
                "t": int(rng.integers(0, 5 * 86_400_000)),
                "customer_id": c,
                "country": home[c],
                "device_id": f"d{i:03d}",
            }
        )
    fraudsters = set(customers[:4])
    for _ in range(400):
        c = str(rng.choice(customers))
        bad = c in fraudsters and rng.random() < 0.6
        t = int(rng.integers(5 * DAY_MS, END_DAY * DAY_MS))
        amount = round(float(rng.lognormal(5.5 if bad else 3.5, 0.6)), 2)
        events.append(
            {
                "type": "authorization",
                "t": t,
                "customer_id": c,
                "merchant_id": str(rng.choice(merchants)),
                "amount": amount,
                "country": "RU" if bad and rng.random() < 0.7 else home[c],
                "channel": str(rng.choice(["online", "pos", "phone"])),
                "approved": bool(rng.random() > (0.3 if bad else 0.03)),
                "device_id": "d666" if bad else f"d{customers.index(c):03d}",
            }
        )
        reported = t + int(rng.integers(14, 40)) * DAY_MS
        if bad and rng.random() < 0.8 and reported < END_DAY * DAY_MS:
            events.append(
                {
                    "type": "fraud_report",
                    "t": reported,
                    "customer_id": c,
                    "merchant_id": events[-1]["merchant_id"],
                    "target": id(events[-1]),
                }
            )
    events.sort(key=lambda e: e["t"])
    ids = {id(e): f"cp{n:05d}" for n, e in enumerate(events)}
    out = Path(__file__).with_name("card_payments.jsonl")
    with out.open("w") as handle:
        for e in events:
            record = {"event_id": ids[id(e)], "ts": iso(e.pop("t")), **e}
            if "target" in record:
                record["target_event_id"] = ids[record.pop("target")]
            handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
