"""The `arbiter` command as users run it: a real process against the real Redis."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd

from tests.conftest import DATA, ROOT, TEST_REDIS_URL


def arbiter(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "ARBITER_REDIS_URL": TEST_REDIS_URL, "COLUMNS": "200", **env}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, cwd=ROOT,
        env=environment, timeout=300,
    )  # fmt: skip


def test_simulate_ingest_twice_and_show(tmp_path, redis_client):
    out = tmp_path / "world"
    done = arbiter("simulate", "--accounts", "60", "--days", "3", "--out", str(out))
    assert done.returncode == 0, done.stderr
    events = pd.read_parquet(out / "events.parquet")

    first = arbiter("ingest", str(out / "events.parquet"))
    assert first.returncode == 0, first.stderr
    assert f"{len(events):,} events applied, 0 already known" in first.stdout

    # A replay of the same log (here as JSON Lines) changes nothing.
    again = arbiter("ingest", str(out / "events.jsonl"))
    assert again.returncode == 0, again.stderr
    assert f"0 events applied, {len(events):,} already known" in again.stdout

    account = events.loc[events["type"] == "payment", "account_id"].iloc[0]
    end = pd.Timestamp(events["ts"].max()) + pd.Timedelta(minutes=1)
    shown = arbiter("features", "show", "--account", account, "--at", end.isoformat())
    assert shown.returncode == 0, shown.stderr
    assert f"features of {account}" in shown.stdout
    assert "account_payments_24h" in shown.stdout


def test_a_bad_event_in_a_log_is_refused_naming_event_and_field(tmp_path, redis_client):
    log = tmp_path / "bad.jsonl"
    log.write_text(
        '{"event_id": "e1", "type": "login", "ts": "2026-11-01T10:00:00Z", '
        '"account_id": "a1", "ip": "31.10.0.1", "success": "maybe"}\n'
    )
    done = arbiter("ingest", str(log))
    assert done.returncode == 2
    assert "event e1 (login): field 'success'" in done.stdout
    assert redis_client.dbsize() == 0


def test_another_domain_builds_with_its_own_spec(tmp_path):
    out = tmp_path / "features.parquet"
    done = arbiter(
        "features", "build", str(DATA / "card_payments.jsonl"),
        "--spec", str(DATA / "card_payments_spec.yaml"), "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    matrix = pd.read_parquet(out)
    assert "merchant_fraud_reports_30d" in matrix.columns
    assert len(matrix) == len((DATA / "card_payments.jsonl").read_text().splitlines())


def test_an_invalid_spec_is_refused_with_the_entry(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: x\nentities: {user: {key: user}}\n"
        "features:\n  - {name: n, kind: count, entity: usr, window: 1h}\n"
    )
    done = arbiter("features", "check", str(spec))
    assert done.returncode == 2
    assert "features[0] 'n': unknown entity 'usr'" in " ".join(done.stdout.split())
