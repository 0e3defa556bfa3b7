#!/usr/bin/env bash
# After `make run` loaded a simulated world: show one account's online features and say how to
# look at others.
set -euo pipefail
world="${1:-var/world}"
read -r benign fraud scenario < <(.venv/bin/python - "$world" <<'PY'
import sys
import pandas as pd
accounts = pd.read_parquet(f"{sys.argv[1]}/accounts.parquet")
benign = accounts[accounts["scenario"].isna()]["account_id"].iloc[0]
fraud = accounts[accounts["scenario"] == "sms_pumping"]
if fraud.empty:
    fraud = accounts[accounts["scenario"].notna()]
print(benign, fraud["account_id"].iloc[0], fraud["scenario"].iloc[0])
PY
)
.venv/bin/arbiter features show --account "$benign"
cat <<MSG

A simulated world is loaded into Redis (${ARBITER_REDIS_URL:-redis://127.0.0.1:6379/0}); the log is $world/events.parquet.
Look at any account's online features (as of now), say one the simulator made a fraudster
($scenario) and the honest one above:
    .venv/bin/arbiter features show --account $fraud
    .venv/bin/arbiter features show --account $benign --ip 31.10.0.7
Who is who: $world/accounts.parquet (scenario column); ground truth: $world/truth.parquet.
Build the same features offline, or prove online/offline parity on this log:
    .venv/bin/arbiter features build $world/events.parquet
    .venv/bin/arbiter features parity $world/events.parquet --limit 20000
MSG
