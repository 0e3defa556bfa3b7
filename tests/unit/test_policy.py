"""The ops policy: validation names the entry, decisions follow lists, rules and thresholds."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from engine.policy import Facts, InvalidPolicy, load_policy, parse_policy, parse_policy_text
from features.spec import load_spec
from tests.conftest import ROOT

RAW = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
POLICY = load_policy(ROOT / "config" / "policy.yaml")
QUIET = {"account_cards_24h": 1.0, "card_declines_24h": 0.0}


def test_every_reason_the_shipped_policy_gives_has_its_own_plain_text():
    # Not the fallback made of the code ("Sms pumping."): billing, support and the customer's
    # notification read these texts.
    from engine.reasons import TEXTS

    codes = {r.reason for r in POLICY.model.rules} | {r.reason for r in POLICY.model.account.rules}
    assert codes and sorted(codes - set(TEXTS)) == []


def test_the_shipped_policy_is_valid_and_names_only_known_features():
    plan = load_spec(ROOT / "config" / "features.yaml")
    assert POLICY.unknown_features(set(plan.output)) == []
    assert len(POLICY.version) == 16


@pytest.mark.parametrize(
    ("score", "action"),
    [
        (0.10, "allow"),
        (0.35, "review"),
        (0.69, "review"),
        (0.70, "decline"),
        (0.95, "suspend_account"),
    ],
)
def test_the_score_meets_the_thresholds(score, action):
    verdict = POLICY.decide(score, QUIET, Facts(account_id="a1", account_age_days=400))
    assert verdict.action == action
    assert verdict.segment is None and verdict.reasons == ()


def test_a_segment_tightens_thresholds_for_new_accounts():
    verdict = POLICY.decide(0.30, QUIET, Facts(account_age_days=2))
    assert (verdict.action, verdict.segment) == ("review", "new_accounts")


def test_rules_fire_with_their_reason_and_never_soften_the_score():
    features = {**QUIET, "account_cards_24h": 25.0}
    low = POLICY.decide(0.05, features, Facts(account_age_days=400))
    assert (low.action, low.reasons, low.rules_fired) == (
        "decline",
        ("MANY_CARDS",),
        ("many_cards",),
    )
    high = POLICY.decide(0.99, features, Facts(account_age_days=400))
    assert high.action == "suspend_account" and high.reasons == ("MANY_CARDS",)


def test_lists_allow_and_deny_by_cidr():
    assert POLICY.decide(0.01, QUIET, Facts(ip="199.10.3.4")).reasons == ("DENY_LISTED_IP",)
    raw = copy.deepcopy(RAW)
    raw["lists"]["allow"]["ip"] = ["31.10.0.0/24"]
    allowing = parse_policy(raw)
    assert allowing.decide(0.99, QUIET, Facts(ip="31.10.0.9")).action == "allow"
    assert allowing.version != POLICY.version


@pytest.mark.parametrize(
    "ip", ["::ffff:199.10.4.4", "::FFFF:C70A:0404", "0:0:0:0:0:ffff:199.10.4.4"]
)
def test_an_ipv4_address_written_as_ipv6_meets_the_ipv4_lists(ip):
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d: the same address, listed.
    assert POLICY.decide(0.01, QUIET, Facts(ip=ip)).reasons == ("DENY_LISTED_IP",)
    raw = copy.deepcopy(RAW)
    raw["lists"]["allow"]["ip"] = ["199.10.4.0/24"]
    assert parse_policy(raw).decide(0.99, QUIET, Facts(ip=ip)).reasons == ("ALLOW_LISTED",)
    # Another IPv6 address is not an IPv4 one.
    assert POLICY.decide(0.01, QUIET, Facts(ip="2001:db8::c70a:404")).reasons == ()


def test_traffic_to_a_deny_listed_destination_suspends_the_account():
    raw = copy.deepcopy(RAW)
    raw["lists"]["deny"]["destination_prefix"] = ["+88216", "+37281"]
    policy = parse_policy(raw)
    # The list's entries that the destinations start with (never the numbers themselves).
    assert policy.denied_destinations(["+882160001234", None, "+2547", "+882161"]) == ["+88216"]
    assert policy.denied_destinations(["+2547000001"]) == []
    verdict = policy.decide_account(None, {}, "a1", ["+88216"])
    assert (verdict.action, verdict.reasons) == ("suspend_account", ("DENY_LISTED_DESTINATION",))
    assert policy.decide_account(None, {}, "a1", []).action == "allow"
    raw["lists"]["allow"]["account"] = ["a1"]
    assert parse_policy(raw).decide_account(None, {}, "a1", ["+88216"]).action == "allow"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["thresholds"].update(decline=0.2), r"thresholds: .*must be ordered"),
        (
            lambda r: r["lists"]["deny"]["ip"].append("not-an-ip"),
            r"lists.deny.ip\[1\]: 'not-an-ip'",
        ),
        (lambda r: r["rules"][0].update(action="explode"), r"rules\.0\.action"),
        (lambda r: r["rules"][0]["when"].update(below=3), r"rules\.0\.when.*exactly one of"),
        (lambda r: r.update(colour="red"), r"colour: Extra inputs are not permitted"),
        # A country or a number range is never trusted: only the deny lists take them.
        (
            lambda r: r["lists"]["allow"].update(bin_country=["US"]),
            r"lists.allow.bin_country: Extra inputs are not permitted",
        ),
        (
            lambda r: r["lists"]["allow"].update(destination_prefix=["+1"]),
            r"lists.allow.destination_prefix: Extra inputs are not permitted",
        ),
        # A blank entry: an empty destination prefix would suspend every account with traffic.
        (
            lambda r: r["lists"]["deny"].update(destination_prefix=["+88216", ""]),
            r"lists.deny.destination_prefix.1: .*an entry cannot be blank",
        ),
        (lambda r: r["lists"]["deny"]["ip"].append(" "), r"lists.deny.ip.1: .*cannot be blank"),
        (lambda r: r["lists"]["allow"].update(card=["\t"]), r"lists.allow.card.0: .*blank"),
        # A country as payments give it, or the entry would never match.
        (
            lambda r: r["lists"]["deny"].update(bin_country=["NG", "ng"]),
            r"lists.deny.bin_country.1: .*two capital letters",
        ),
        (lambda r: r["lists"]["deny"].update(bin_country=["N1"]), r"bin_country.0: .*capital"),
        # A bound that is not a number never holds: refused, not a rule that is silently off.
        (
            lambda r: r["rules"][0]["when"].update(above=float("nan")),
            r"rules.0.when.above: Input should be a finite number",
        ),
        (lambda r: r["triggers"][0].update(above=float("inf")), r"triggers.0.above: .*finite"),
    ],
)
def test_an_invalid_policy_is_refused_naming_the_entry(edit, message):
    raw = copy.deepcopy(RAW)
    edit(raw)
    with pytest.raises(InvalidPolicy, match=message):
        parse_policy(raw)


PLAN = load_spec(ROOT / "config" / "features.yaml")
NAMES = {f.name for f in PLAN.features}
SHIPPED = (ROOT / "config" / "policy.yaml").read_text()


def test_the_spec_knows_its_text_features():
    assert PLAN.text_features() == {"account_country", "account_plan", "account_verification"}


@pytest.mark.parametrize(
    ("where", "condition"),
    [
        ("rules[2] (plan)", "rules"),
        ("triggers[6]", "triggers"),
        ("account.rules[2] (plan)", "account"),
    ],
)
def test_a_condition_on_a_text_feature_is_refused(where, condition):
    # `account_plan > 1` compares text with a number: every decision would fail on it.
    raw = copy.deepcopy(RAW)
    when = {"feature": "account_plan", "above": 1}
    if condition == "rules":
        raw["rules"].append({"name": "plan", "when": when, "action": "decline", "reason": "PLAN"})
    elif condition == "triggers":
        raw["triggers"].append(when)
    else:
        raw["account"]["rules"].append(
            {"name": "plan", "when": [when], "action": "review", "reason": "PLAN"}
        )
    text = yaml.safe_dump(raw)
    with pytest.raises(InvalidPolicy, match=rf"hold text: {re.escape(where)}: account_plan"):
        parse_policy_text(text, "p", NAMES, PLAN.text_features())
    # Checked without the spec (a backtest of an old file, a unit's fake): it never holds.
    policy = parse_policy_text(text, "p")
    features = {**QUIET, "account_plan": "enterprise", "account_sms_10m": 0.0}
    assert policy.decide(0.1, features, Facts(account_id="a1")).action == "allow"
    assert policy.triggered(features) == []


def test_a_key_written_twice_is_refused_not_kept_last():
    # Plain YAML keeps the second `lists:` and drops the first's deny list without a word.
    twice = SHIPPED + "\nlists:\n  deny: {account: [acct-other]}\n"
    with pytest.raises(InvalidPolicy, match=r"(?s)not valid YAML.*found the key 'lists' twice"):
        parse_policy_text(twice)
    nested = SHIPPED.replace("  review: 0.35\n", "  review: 0.35\n  review: 0.2\n", 1)
    with pytest.raises(InvalidPolicy, match=r"found the key 'review' twice"):
        parse_policy_text(nested)


def test_merge_keys_still_merge_and_a_key_they_bring_may_be_overridden():
    text = SHIPPED.replace(
        "thresholds:\n  review: 0.35", "thresholds: &base\n  review: 0.35", 1
    ).replace(
        "    thresholds: {review: 0.50, decline: 0.85, suspend_account: 0.97}",
        "    thresholds: {<<: *base, review: 0.50}",
    )
    assert "<<: *base" in text
    [_, enterprise] = parse_policy_text(text).model.segments
    assert (enterprise.thresholds.review, enterprise.thresholds.decline) == (0.50, 0.70)


def test_a_file_not_in_utf8_or_nested_too_deep_is_refused_with_a_message(tmp_path):
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes(SHIPPED.replace("# Arbiter", "# Arbiter caf\u00e9").encode("latin-1"))
    with pytest.raises(InvalidPolicy, match=r"latin1.yaml is not UTF-8 text"):
        load_policy(latin)
    with pytest.raises(InvalidPolicy, match=r"nests deeper than YAML can be read"):
        parse_policy_text("[" * 5000)


def test_triggers_name_what_crossed():
    assert POLICY.triggered({"account_sms_10m": 80.0}) == ["account_sms_10m>60.0"]
    assert POLICY.triggered({"account_sms_10m": 10.0}) == []


# --- account decisions -----------------------------------------------------------------------


def account_policy(**account):
    from engine.policy import parse_policy

    raw = {"name": "t", "thresholds": {"review": 0.3, "decline": 0.6, "suspend_account": 0.9},
           "lists": {"allow": {"account": ["vip"]}, "deny": {"account": ["known-bad"]}},
           "account": account}  # fmt: skip
    return parse_policy(raw)


PUMP_RULE = {
    "name": "pump", "reason": "SMS_PUMPING", "action": "suspend_account",
    "when": [{"feature": "sms", "above": 50}, {"feature": "verified", "below": 0.2}],
}  # fmt: skip


def test_an_account_rule_fires_only_when_all_its_conditions_hold():
    policy = account_policy(rules=[PUMP_RULE])
    hit = policy.decide_account(None, {"sms": 80, "verified": 0.1}, "a1")
    assert (hit.action, hit.reasons, hit.rules_fired) == ("suspend_account", ("SMS_PUMPING",),
                                                          ("pump",))  # fmt: skip
    assert policy.decide_account(None, {"sms": 80, "verified": 0.5}, "a1").action == "allow"
    assert policy.decide_account(None, {"sms": 80}, "a1").action == "allow"  # missing: no hit


def test_account_thresholds_and_lists_decide_with_the_account_models_score():
    policy = account_policy(thresholds={"review": 0.2, "suspend_account": 0.7})
    assert policy.decide_account(0.1, {}, "a1").action == "allow"
    assert policy.decide_account(0.2, {}, "a1").action == "review"
    assert policy.decide_account(0.7, {}, "a1").action == "suspend_account"
    assert policy.decide_account(0.99, {}, "vip").action == "allow"
    listed = policy.decide_account(0.0, {}, "known-bad")
    assert (listed.action, listed.reasons) == ("suspend_account", ("DENY_LISTED_ACCOUNT",))


def test_account_thresholds_out_of_order_are_refused_naming_the_entry():
    with pytest.raises(InvalidPolicy, match=r"account\.thresholds.*ordered"):
        account_policy(thresholds={"review": 0.8, "suspend_account": 0.5})


def test_an_account_rule_on_an_unknown_feature_is_refused():
    policy = account_policy(rules=[PUMP_RULE])
    with pytest.raises(InvalidPolicy, match="sms, verified"):
        policy.require_features({"other"})


def test_a_backtest_replays_account_decisions_through_the_account_section():
    from engine.backtest import replay
    from engine.records import DecisionRecord, StoredDecision

    def account_decision(n, score, features):
        record = DecisionRecord(
            decision_id=f"d{n}", created_at=1, subject_type="account", subject_id="a1",
            account_id="a1", action="allow", feature_spec_version="s", policy_version="p0",
            score=score, features=features,
        )  # fmt: skip
        return StoredDecision(record, n, "0" * 64, "f" * 64)

    strict = account_policy(rules=[PUMP_RULE], thresholds={"review": 0.2, "suspend_account": 0.7})
    what_if = replay(strict, [
        account_decision(1, None, {"sms": 90, "verified": 0.0}),  # rules only: the rule fires
        account_decision(2, 0.3, {"sms": 1, "verified": 1.0}),  # the new review threshold
        account_decision(3, 0.01, {}),
    ])  # fmt: skip
    assert what_if.moves == {("allow", "suspend_account"): 1, ("allow", "review"): 1,
                             ("allow", "allow"): 1}  # fmt: skip
    assert not what_if.unscored


def test_the_shipped_policy_reviews_an_account_whose_calls_cost_far_more_than_a_day_should():
    # Revenue-share and toll fraud: a day of calls costing more than 150 is reviewed.
    spike = POLICY.decide_account(None, {"account_call_cost_24h": 320.5}, "a1")
    assert (spike.action, spike.reasons, spike.rules_fired) == (
        "review",
        ("HIGH_CALL_COST",),
        ("call_cost_spike",),
    )
    assert POLICY.decide_account(None, {"account_call_cost_24h": 90.0}, "a1").action == "allow"
    assert POLICY.decide_account(0.7, {"account_call_cost_24h": 320.5}, "a1").action == (
        "suspend_account"  # the account model's score still decides above the rule
    )
