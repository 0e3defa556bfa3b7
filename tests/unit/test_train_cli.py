"""`arbiter train` and `arbiter promote` refuse bad input with one clear line (no traceback)."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import ROOT

SPEC = str(ROOT / "config" / "features.yaml")
T0 = 1_790_000_000_000
DAY = 86_400_000


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBITER_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("ARBITER_MLFLOW_ARTIFACTS", str(tmp_path / "artifacts"))
    return tmp_path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, " ".join(result.output.split())


def write_log(path, events) -> str:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return str(path)


def payment(i: int, day: float) -> dict:
    return {
        "event_id": f"p{i}",
        "type": "payment",
        "ts": T0 + int(day * DAY),
        "account_id": "acct_1",
        "amount": 12.5,
        # The offline builder needs every field a sum, mean or max of the spec reads.
        "cost": None,
        "duration_s": None,
    }


def test_an_empty_log_is_refused(env):
    log = write_log(env / "empty.jsonl", [])
    code, out = run("train", "--events", log, "--spec", SPEC)
    assert code == 2
    assert re.search(r"empty\.jsonl holds no events", out)


def test_a_missing_log_is_refused(env):
    code, out = run("train", "--events", str(env / "nowhere.parquet"), "--spec", SPEC)
    assert code == 2
    assert re.search(r"event log .*nowhere\.parquet does not exist", out)


def test_a_log_without_labels_is_refused(env):
    log = write_log(env / "log.jsonl", [payment(i, i) for i in range(30)])
    code, out = run("train", "--events", log, "--spec", SPEC)
    assert code == 2
    assert "the log holds no label events (type 'label')" in out


def test_a_log_too_short_for_the_split_is_refused(env):
    events = [payment(i, i / 2) for i in range(40)]
    events.append(
        {"event_id": "l1", "type": "label", "ts": T0 + DAY, "account_id": "acct_1",
         "label": "fraud", "source": "chargeback", "target_event_id": "p0"}
    )  # fmt: skip
    log = write_log(env / "short.jsonl", sorted(events, key=lambda e: e["ts"]))
    code, out = run("train", "--events", log, "--spec", SPEC)
    assert code == 2
    assert re.search(r"the split needs two gaps of the maturity \(10 days each\)", out)


def test_an_invalid_training_config_is_refused(env):
    config = env / "training.yaml"
    config.write_text("split: {train: 0.9}\n")
    code, out = run("train", "--events", "x.parquet", "--spec", SPEC, "--config", str(config))
    assert code == 2
    assert "split: train + validation + test must sum to 1" in out


def test_forcing_a_promotion_needs_a_reason(env):
    code, out = run("promote", "--force")
    assert code == 2
    assert "--force needs --reason" in out


def test_promote_without_any_model_says_what_to_do(env):
    code, out = run("promote")
    assert code == 2
    assert "has no version with the alias 'challenger': train one with `arbiter train`" in out


def test_a_config_extends_another_section_by_section_and_a_loop_is_refused(tmp_path):
    from training.config import InvalidTrainingConfig, load_training_config

    base = ROOT / "config" / "training.yaml"
    (tmp_path / "base.yaml").write_text(base.read_text())
    (tmp_path / "child.yaml").write_text(
        "extends: base.yaml\nmodel_name: child\nlabels:\n  scored: {kind: sms}\n"
    )
    child, parent = load_training_config(tmp_path / "child.yaml"), load_training_config(base)
    assert child.model_name == "child"
    assert child.labels.scored == {"kind": "sms"}  # replaced whole, not merged with type
    assert child.labels.maturity == parent.labels.maturity and child.model == parent.model
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(InvalidTrainingConfig, match="extends form a cycle"):
        load_training_config(tmp_path / "a.yaml")
