"""The policy watcher on real files: good edits swap in, bad ones are refused and reported."""

from __future__ import annotations

import logging
import os
import time

import pytest
import yaml

from engine.policy import InvalidPolicy, Policy
from engine.policy_watch import PolicyWatcher
from features.spec import load_spec
from tests.conftest import ROOT

RAW = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
FEATURES = {f.name for f in load_spec(ROOT / "config" / "features.yaml").features}


def write(path, raw, *, bump: int = 1) -> None:
    """Write the policy and move its mtime, so an edit within the same clock tick is seen."""
    before = path.stat().st_mtime_ns if path.exists() else time.time_ns()
    path.write_text(yaml.safe_dump(raw) if isinstance(raw, dict) else raw)
    os.utime(path, ns=(before + bump * 1_000_000, before + bump * 1_000_000))


def with_review(review: float) -> dict:
    return {**RAW, "thresholds": {**RAW["thresholds"], "review": review}}


@pytest.fixture
def watched(tmp_path):
    path = tmp_path / "policy.yaml"
    write(path, RAW)
    swapped: list[Policy] = []
    watcher = PolicyWatcher(path, swapped.append, features=FEATURES, interval_s=0.01)
    first = watcher.load()
    return path, watcher, swapped, first


def test_a_good_edit_is_swapped_in_and_handed_to_the_callback(watched):
    path, watcher, swapped, first = watched
    assert watcher.check_now() is None  # nothing moved yet
    write(path, with_review(0.30))
    new = watcher.check_now()
    assert new is not None and new.version != first.version
    assert swapped == [new] and watcher.policy is new
    assert new.model.thresholds.review == 0.30 and watcher.last_error is None


def test_a_bad_edit_is_refused_and_the_last_good_policy_keeps_serving(watched, caplog):
    path, watcher, swapped, first = watched
    write(path, with_review(0.95))  # above decline: thresholds out of order
    with caplog.at_level(logging.ERROR, logger="arbiter.policy"):
        assert watcher.check_now() is None
        write(path, with_review(0.95), bump=2)  # the same bad content again: logged once
        assert watcher.check_now() is None
    assert swapped == [] and watcher.policy is first
    assert watcher.last_error is not None and "must be ordered" in watcher.last_error
    assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage()] == [
        f"policy refused, version {first.version} keeps serving: {watcher.last_error}"
    ]


def test_a_later_good_edit_clears_the_error(watched):
    path, watcher, swapped, _first = watched
    write(path, "name: [unclosed")
    watcher.check_now()
    assert watcher.last_error is not None and "not valid YAML" in watcher.last_error
    write(path, with_review(0.20), bump=2)
    new = watcher.check_now()
    assert new is not None and swapped == [new] and watcher.last_error is None


def test_a_rule_on_a_feature_the_spec_lacks_is_refused_naming_it(watched):
    path, watcher, swapped, first = watched
    rule = {"name": "x", "when": {"feature": "no_such_feature", "above": 1},
            "action": "review", "reason": "X_RULE"}  # fmt: skip
    write(path, {**RAW, "rules": [*RAW["rules"], rule]})
    assert watcher.check_now() is None
    assert watcher.last_error is not None and "no_such_feature" in watcher.last_error
    assert watcher.policy is first and swapped == []


def test_a_deleted_file_is_reported_and_its_return_clears_the_error(watched):
    path, watcher, swapped, first = watched
    content = path.read_text()
    path.unlink()
    assert watcher.check_now() is None
    assert watcher.last_error is not None and "cannot be read" in watcher.last_error
    path.write_text(content)
    assert watcher.check_now() is None  # the same policy back: no swap
    assert watcher.last_error is None and watcher.policy is first and swapped == []


def test_a_rewrite_that_keeps_the_rules_swaps_nothing(watched):
    path, watcher, swapped, first = watched
    write(path, "# a comment only\n" + path.read_text())
    assert watcher.check_now() is None and swapped == [] and watcher.policy is first


def test_the_first_load_of_an_invalid_file_raises(tmp_path):
    path = tmp_path / "policy.yaml"
    write(path, with_review(0.95))
    watcher = PolicyWatcher(path, lambda _p: None)
    with pytest.raises(InvalidPolicy, match=r"thresholds: .*must be ordered"):
        watcher.load()
    with pytest.raises(RuntimeError, match="has not loaded a policy"):
        _ = watcher.policy


def test_the_background_thread_picks_up_an_edit(watched):
    path, watcher, swapped, _first = watched
    watcher.start()
    try:
        write(path, with_review(0.30))
        deadline = time.monotonic() + 5
        while not swapped and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        watcher.stop()
    assert len(swapped) == 1 and swapped[0].model.thresholds.review == 0.30
