"""`arbiter policy check` and `arbiter policy backtest` on real files and a real SQLite store."""

from __future__ import annotations

import pytest
import typer
import yaml
from typer.testing import CliRunner

from cli import policy as policy_cmds
from engine.policy import load_policy
from engine.records import Reason
from engine.store import DecisionStore
from tests.conftest import ROOT
from tests.integration.test_decision_store import decision

RAW = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
SUSPENDED = (Reason("ACCOUNT_SUSPENDED", "The account is suspended."),)
OLD = 400 * 86_400  # account_age (seconds) of an account no segment singles out
QUIET = {"account_cards_24h": 1, "card_declines_24h": 0, "account_age": OLD}


@pytest.fixture
def arbiter(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'arbiter.db'}"
    monkeypatch.setenv("ARBITER_DATABASE_URL", url)
    monkeypatch.setenv("ARBITER_FEATURE_SPEC", str(ROOT / "config" / "features.yaml"))
    app = typer.Typer()
    app.command("noop")(lambda: None)  # a second command keeps `policy` a sub-command
    policy_cmds.register(app)

    def run(*args: str):
        result = CliRunner().invoke(app, ["policy", *args])
        return result.exit_code, " ".join(result.output.split())

    run.url = url
    return run


def policy_file(tmp_path, **changes) -> str:
    path = tmp_path / "proposed.yaml"
    path.write_text(yaml.safe_dump({**RAW, **changes}))
    return str(path)


# --- check ----------------------------------------------------------------------------------


def test_check_prints_what_a_valid_policy_decides_with(arbiter):
    code, out = arbiter("check", str(ROOT / "config" / "policy.yaml"))
    version = load_policy(ROOT / "config" / "policy.yaml").version
    assert code == 0, out
    assert f"valid: policy default version {version}" in out
    assert "thresholds: review >= 0.35, decline >= 0.7, suspend_account >= 0.92" in out
    assert "segment new_accounts when {'account_age_days_below': 7.0}" in out
    assert "rule many_cards: account_cards_24h > 20.0 -> decline (MANY_CARDS)" in out
    assert "deny lists: {'ip': 1}" in out
    assert "warning" not in out  # every shipped reason has the customer's words


def test_check_warns_of_a_reason_the_customer_would_read_as_its_code(arbiter, tmp_path):
    rule = {"name": "big", "when": {"feature": "amount", "above": 5000}, "action": "review",
            "reason": "UNUSUALLY_LARGE_TOP_UP"}  # fmt: skip
    code, out = arbiter("check", policy_file(tmp_path, rules=[*RAW["rules"], rule]))
    assert code == 0, out
    flat = " ".join(out.split())
    assert "warning: reason UNUSUALLY_LARGE_TOP_UP has no customer words" in flat
    assert "the notice reads 'Unusually large top up.'" in flat
    assert "MANY_CARDS has no" not in flat


def test_check_refuses_unordered_thresholds_with_exit_2(arbiter, tmp_path):
    bad = policy_file(tmp_path, thresholds={"review": 0.8, "decline": 0.5, "suspend_account": 0.9})
    code, out = arbiter("check", bad)
    assert code == 2
    assert out == f"invalid: {bad}: thresholds: Value error, must be ordered: review <= " + (
        "decline <= suspend_account"
    )


def test_check_refuses_a_rule_on_a_feature_the_spec_lacks(arbiter, tmp_path):
    rule = {"name": "x", "when": {"feature": "cards_per_minute", "above": 3},
            "action": "review", "reason": "X_RULE"}  # fmt: skip
    code, out = arbiter("check", policy_file(tmp_path, rules=[rule]))
    assert code == 2
    assert "name features the feature spec does not provide: cards_per_minute" in out


def test_check_refuses_a_rule_on_a_text_feature_and_a_file_not_in_utf8(arbiter, tmp_path):
    # Both were accepted by `check` before: the first then failed every payment, the second
    # was a traceback where the service's watcher refused it cleanly.
    rule = {"name": "plan", "when": {"feature": "account_plan", "above": 1},
            "action": "decline", "reason": "PLAN_RULE"}  # fmt: skip
    code, out = arbiter("check", policy_file(tmp_path, rules=[rule]))
    assert code == 2
    assert "these features hold text: rules[0] (plan): account_plan" in " ".join(out.split())
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    code, out = arbiter("check", str(latin))
    assert code == 2 and out.startswith("invalid: ") and "is not UTF-8 text" in out


def test_check_refuses_a_missing_file(arbiter, tmp_path):
    code, out = arbiter("check", str(tmp_path / "nope.yaml"))
    assert code == 2 and "cannot be read: No such file or directory" in out


# --- backtest -------------------------------------------------------------------------------


def fill(url: str) -> None:
    """Decisions as recorded under the shipped policy (and an older one without rules)."""
    enterprise = {**QUIET, "account_plan": "enterprise"}
    records = [
        decision(1, score=0.10, features=QUIET),  # allow -> allow
        decision(2, score=0.32, features=QUIET),  # allow -> review (review 0.30)
        decision(3, action="review", score=0.50, features=QUIET),  # review -> review
        decision(4, action="decline", score=0.75, features=QUIET),  # decline -> decline
        # allow -> decline (many_cards), under an older policy
        decision(
            5, score=0.05, features={**QUIET, "account_cards_24h": 25}, policy_version="pol-0"
        ),
        decision(6, action="decline", score=0.93, features=QUIET),  # -> suspend_account
        decision(7, action="decline", score=0.80, features=enterprise),  # -> review (segment)
        decision(8, score=0.28, features={**QUIET, "account_age": 2 * 86_400}),  # -> review
        decision(9, action="review", score=None, raw_margin=None, degraded=True),
        decision(10, action="decline", score=None, raw_margin=None, reasons=SUSPENDED),
        decision(11, account="acct-vip", action="decline", score=0.75, features=QUIET),  # allow
    ]
    store = DecisionStore(url)
    try:
        store.migrate()
        for record in records:
            store.append_decision(record, suspend=False, notification=None)
    finally:
        store.close()


def proposed(tmp_path) -> str:
    return policy_file(
        tmp_path,
        thresholds={**RAW["thresholds"], "review": 0.30},
        lists={**RAW["lists"], "allow": {"account": ["acct-vip"]}},
    )


def test_replay_counts_every_move_and_keeps_unscored_decisions_apart(arbiter, tmp_path):
    fill(arbiter.url)
    store = DecisionStore(arbiter.url)
    try:
        result = policy_cmds.replay(load_policy(proposed(tmp_path)), store.decisions_since(0))
    finally:
        store.close()
    assert dict(result.moves) == {
        ("allow", "allow"): 1,
        ("allow", "review"): 2,
        ("allow", "decline"): 1,
        ("review", "review"): 1,
        ("decline", "decline"): 1,
        ("decline", "suspend_account"): 1,
        ("decline", "review"): 1,
        ("decline", "allow"): 1,
    }
    assert (result.replayed, result.changed, result.stricter) == (9, 6, 4)
    assert dict(result.unscored) == {("degraded", "review"): 1, ("account suspended", "decline"): 1}
    assert dict(result.versions) == {"pol-1": 8, "pol-0": 1}


def test_decisions_a_card_ip_or_bin_list_made_are_counted_apart_not_as_moves(arbiter, tmp_path):
    # Their facts are not in the record: replayed from the score alone, the unchanged policy
    # showed a DENY_LISTED_IP decline as a move to allow.
    listed = [
        decision(1, action="decline", score=0.10, features=QUIET,
                 reasons=(Reason("DENY_LISTED_IP", "The IP address is on a deny list."),)),
        decision(2, action="decline", score=0.05, features=QUIET,
                 reasons=(Reason("DENY_LISTED_BIN_COUNTRY", "The card's country is denied."),)),
        decision(3, score=0.95, features=QUIET,
                 reasons=(Reason("ALLOW_LISTED", "The account, card or IP is allow-listed."),)),
        decision(4, account="acct-vip", score=0.95, features=QUIET,
                 reasons=(Reason("ALLOW_LISTED", "The account, card or IP is allow-listed."),)),
        decision(5, score=0.10, features=QUIET),
    ]  # fmt: skip
    store = DecisionStore(arbiter.url)
    try:
        store.migrate()
        for record in listed:
            store.append_decision(record, suspend=False, notification=None)
        unchanged = load_policy(ROOT / "config" / "policy.yaml")
        result = policy_cmds.replay(unchanged, store.decisions_since(0))
        assert dict(result.moves) == {("allow", "allow"): 1}
        assert dict(result.unscored) == {
            ("listed by card, IP or BIN country", "decline"): 2,
            ("allow-listed, the proposal not by its account", "allow"): 2,
        }
        # A proposed policy allow-listing the account replays its ALLOW_LISTED decision.
        vip = load_policy(proposed(tmp_path))
        result = policy_cmds.replay(vip, store.decisions_since(0))
        assert result.moves[("allow", "allow")] == 2
    finally:
        store.close()


def test_backtest_prints_the_what_if_table(arbiter, tmp_path):
    fill(arbiter.url)
    path = proposed(tmp_path)
    code, out = arbiter("backtest", path)
    assert code == 0, out
    assert f"proposed policy default version {load_policy(path).version}" in out
    assert "recorded under policy versions: pol-1 (8), pol-0 (1)" in out
    #             allow review decline suspend total
    assert "│ allow │ 1 │ 2 │ 1 │ 0 │ 4 │" in out
    assert "│ review │ 0 │ 1 │ 0 │ 0 │ 1 │" in out
    assert "│ decline │ 1 │ 1 │ 1 │ 1 │ 4 │" in out
    assert "│ suspend_account │ 0 │ 0 │ 0 │ 0 │ 0 │" in out
    assert "│ total │ 2 │ 4 │ 2 │ 1 │ 9 │" in out
    assert "6 of 9 decisions would change (4 stricter, 2 milder)" in out
    assert "not replayed: 2 (account suspended -> decline: 1, degraded -> review: 1)" in out


def test_backtest_since_leaves_out_older_decisions(arbiter, tmp_path):
    fill(arbiter.url)
    # the records are made at 1_700_000_000_000 + n ms: from n = 6 on
    code, out = arbiter("backtest", proposed(tmp_path), "--since", "2023-11-14T22:13:20.006Z")
    assert code == 0, out
    assert "4 of 4 decisions would change (2 stricter, 2 milder)" in out
    assert "not replayed: 2" in out


def test_backtest_refuses_a_bad_since_and_a_missing_store(arbiter, tmp_path):
    path = proposed(tmp_path)
    code, out = arbiter("backtest", path)
    assert code == 2 and "no decision store at" in out
    fill(arbiter.url)
    code, out = arbiter("backtest", path, "--since", "last tuesday")
    assert code == 2 and "--since 'last tuesday' is not an ISO 8601 date or time" in out
