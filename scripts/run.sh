#!/usr/bin/env bash
# `make run`: a simulated world in Redis, champion payment and account models in MLflow, the API
# on 127.0.0.1:8000.
# Each step is skipped when its result is already there; the last one serves in the foreground.
set -euo pipefail
world="${1:-var/world}"
bin=.venv/bin

"$bin/arbiter" ingest "$world/events.parquet"
if ! "$bin/arbiter" models list 2>/dev/null | grep -q champion; then
  echo "no champion model yet: training one on $world and promoting it"
  "$bin/arbiter" train --events "$world/events.parquet" --spec config/features.yaml
  "$bin/arbiter" promote
fi
if ! "$bin/arbiter" models list --config config/training-account.yaml 2>/dev/null \
    | grep -q champion; then
  echo "no account model yet: training one on $world and promoting it"
  "$bin/arbiter" train --events "$world/events.parquet" --config config/training-account.yaml
  "$bin/arbiter" promote --config config/training-account.yaml
fi
scripts/show-world.sh "$world" >/dev/null
read -r account card ip country < <("$bin/python" - "$world" <<'PY'
import sys
import pandas as pd
events = pd.read_parquet(f"{sys.argv[1]}/events.parquet")
accounts = pd.read_parquet(f"{sys.argv[1]}/accounts.parquet")
honest = set(accounts.loc[accounts["scenario"].isna(), "account_id"])
paid = events[(events["type"] == "payment") & events["account_id"].isin(honest)
              & (events["status"] == "approved")]
last = paid.iloc[-1]
print(last["account_id"], last["card_fp"], last["ip"], last["billing_country"])
PY
)
keys="$("$bin/arbiter" keys local)"
scorer="$(awk '$1 == "scorer" {print $2}' <<<"$keys")"
support="$(awk '$1 == "support" {print $2}' <<<"$keys")"
cat <<MSG

Arbiter is starting on http://127.0.0.1:8000 (interactive docs: http://127.0.0.1:8000/docs).
API keys for local use, one per role (made afresh at each start; docs/security.md):

$keys

An honest customer's usual top-up:

  curl -s http://127.0.0.1:8000/v1/payments/score -H "Authorization: Bearer $scorer" \
    -H 'content-type: application/json' -d '{
    "payment_id": "demo-ok-$$", "account_id": "$account", "amount": 20.0, "currency": "USD",
    "card_fp": "$card", "bin_country": "$country", "billing_country": "$country", "ip": "$ip"}'

A stolen card on the same account: a new card from abroad, a large amount, from an address
on the shipped deny list (199.10.0.0/16), so it is declined with DENY_LISTED_IP. The model's
score alone stays under the shipped thresholds here: docs/policy.md sets them against the champion.

  curl -s http://127.0.0.1:8000/v1/payments/score -H "Authorization: Bearer $scorer" \
    -H 'content-type: application/json' -d '{
    "payment_id": "demo-bad-$$", "account_id": "$account", "amount": 950.0, "currency": "USD",
    "card_fp": "ffffeeeeddddcccc", "bin_country": "NG", "billing_country": "$country",
    "ip": "199.10.4.4"}'

Its rationale:   curl -s -H "Authorization: Bearer $support" http://127.0.0.1:8000/v1/decisions/<decision_id>/rationale
The pages:       http://127.0.0.1:8000/ui/login (sign in with the support or reviewer key)
Account status:  curl -s -H "Authorization: Bearer $scorer" http://127.0.0.1:8000/v1/accounts/$account
Readiness:       curl -s http://127.0.0.1:8000/readyz

MSG
exec "$bin/arbiter" serve --host 127.0.0.1 --port 8000
