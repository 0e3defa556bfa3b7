"""The reason-code catalogue: covers every model feature once, refuses bad edits by name."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from engine.policy import load_policy
from explanations.catalogue import (
    Catalogue,
    InvalidCatalogue,
    load_catalogue,
    parse_catalogue,
    parse_catalogue_text,
)
from explanations.wording import human, placeholders, render
from features.spec import load_spec
from tests.conftest import ROOT

PATH = ROOT / "config" / "reasons.yaml"
RAW: dict[str, Any] = yaml.safe_load(PATH.read_text())
CATALOGUE = load_catalogue(PATH)


def model_features() -> list[str]:
    return list(load_spec(ROOT / "config" / "features.yaml").output)


def test_every_model_feature_belongs_to_exactly_one_family():
    names = model_features()
    assert "account_country" not in names  # hidden features are not the model's
    assert CATALOGUE.uncovered(names) == []
    listed = [n for family in CATALOGUE.families for n in family.names]
    assert sorted(listed) == sorted(names)  # each once, and nothing the spec no longer has
    for name in names:
        assert not CATALOGUE.family_of(name).catch_all


def test_the_families_named_in_the_brief_are_there():
    codes = {f.code for f in CATALOGUE.families}
    assert {
        "COUNTRY_MISMATCH",
        "CARD_COUNT",
        "PAYMENT_VELOCITY",
        "AMOUNT_UNUSUAL",
        "DECLINES_CHARGEBACKS",
        "SMS_VELOCITY",
        "SMS_PUMPING_PATTERN",
        "CALL_VELOCITY",
        "HIGH_COST_CALLS",
        "NEW_ACCOUNT",
        "ANONYMISING_NETWORK",
        "LOGIN_RISK",
        "SHARED_IP_OR_CARD",
        "DESTINATION_HOTSPOT",
        "TIME_OF_DAY",
        "OTHER_ACTIVITY",
    } <= codes
    assert CATALOGUE.family_of("account_sms_verified_share_24h").code == "SMS_PUMPING_PATTERN"
    assert CATALOGUE.family_of("account_call_cost_max_24h").code == "HIGH_COST_CALLS"


def test_every_reason_code_the_policy_and_the_service_emit_has_a_customer_text():
    policy = load_policy(ROOT / "config" / "policy.yaml")
    emitted = {r.reason for r in policy.model.rules} | {
        r.reason for r in policy.model.account.rules
    }
    emitted |= {
        "ALLOW_LISTED",
        "DENY_LISTED_ACCOUNT",
        "DENY_LISTED_CARD",
        "DENY_LISTED_IP",
        "DENY_LISTED_BIN_COUNTRY",
        "DENY_LISTED_DESTINATION",
        "ACCOUNT_SUSPENDED",
        "FEATURES_UNAVAILABLE",
    }
    for code in sorted(emitted):
        assert CATALOGUE.is_known_rule(code), code
        assert CATALOGUE.rule_text(code) != CATALOGUE.model.wording.unknown_rule
    assert CATALOGUE.rule_text("NOT_YET_KNOWN") == (
        "One of our fraud prevention rules applied to this decision."
    )


def test_the_version_is_a_hash_of_the_content_not_of_its_formatting():
    assert re.fullmatch(r"[0-9a-f]{12}", CATALOGUE.version)
    reformatted = yaml.safe_dump(RAW, sort_keys=True, width=60)
    assert parse_catalogue_text(reformatted).version == CATALOGUE.version
    edited = copy.deepcopy(RAW)
    edited["rules"]["MANY_CARDS"]["text"] = "Too many cards were used on your account."
    assert parse_catalogue(edited).version != CATALOGUE.version


def edit(change) -> dict[str, Any]:
    raw = copy.deepcopy(RAW)
    change(raw)
    return raw


def family(raw: dict[str, Any], code: str) -> dict[str, Any]:
    return next(f for f in raw["families"] if f["code"] == code)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda r: family(r, "TIME_OF_DAY")["features"].append(
                {"name": "amount", "unit": "money", "says": "the amount"}
            ),
            r"families\.\d+ \(TIME_OF_DAY\)\.features\.1 \(amount\): feature 'amount' is listed "
            r"twice \(also in AMOUNT_UNUSUAL\)",
        ),
        (
            lambda r: family(r, "CARD_COUNT").update(colour="red"),
            r"families\.1\.colour: Extra inputs are not permitted",
        ),
        (
            lambda r: family(r, "CARD_COUNT").update(text="Cards: {account_cards_7d}."),
            r"CARD_COUNT\)\.text: unknown placeholder \{account_cards_7d\} \(this text knows "
            r"\{account_cards_24h\}",
        ),
        (
            lambda r: family(r, "CARD_COUNT").update(text="Cards: {median:account_cards_24h}."),
            r"unknown placeholder \{median:account_cards_24h\}",
        ),
        (
            lambda r: family(r, "CARD_COUNT").update(text="Cards: {amount}."),
            r"CARD_COUNT\)\.text: unknown placeholder \{amount\}",
        ),
        (
            lambda r: family(r, "CARD_COUNT").update(text="Cards[: {account_cards_24h}."),
            r"CARD_COUNT\)\.text: an optional part '\[' is not closed",
        ),
        (
            lambda r: family(r, "CARD_COUNT").update(text="Cards: {account_cards_24h."),
            r"a brace '\{' or '\}' is not part of a placeholder",
        ),
        (
            lambda r: family(r, "CARD_COUNT").update(text="Your risk score was high."),
            r"CARD_COUNT\)\.text: a customer text must not mention internals \('score'\)",
        ),
        (
            lambda r: r["rules"]["MANY_CARDS"].update(text="account_cards_24h was above 20."),
            r"rules\.MANY_CARDS\.text: a customer text must not mention internals \('_'\)",
        ),
        (
            lambda r: family(r, "CARD_COUNT")["features"][0].update(unit="furlongs"),
            r"families\.1\.features\.0\.unit: Input should be 'count', 'money'",
        ),
        (
            lambda r: family(r, "COUNTRY_MISMATCH")["features"][0].pop("if_off"),
            r"families\.0\.features\.0: Value error, flags \(and only flags\) give both",
        ),
        (
            lambda r: family(r, "CARD_COUNT").update(categories=["biometrics"]),
            r"CARD_COUNT\): unknown data category 'biometrics'",
        ),
        (
            lambda r: family(r, "TIME_OF_DAY").update(catch_all=True),
            r"exactly one family needs 'catch_all: true' \(found 2\)",
        ),
        (
            lambda r: family(r, "CARD_COUNT").update(code="MANY_CARDS"),
            r"code MANY_CARDS is used twice \(families and rules share codes\)",
        ),
        (
            lambda r: r["wording"]["summary"]["payment"].update(decline="Declined on {when}."),
            r"wording\.summary\.payment\.decline: unknown placeholder \{when\}",
        ),
        (
            lambda r: r["wording"]["outcome"]["account"].pop("review"),
            r"wording\.outcome\.account\.review: Field required",
        ),
    ],
)
def test_a_bad_edit_is_refused_naming_the_entry(change, message):
    with pytest.raises(InvalidCatalogue, match=message) as caught:
        parse_catalogue(edit(change))
    assert caught.value.code == "invalid_catalogue"


def test_a_file_that_is_not_a_catalogue_is_refused(tmp_path):
    with pytest.raises(InvalidCatalogue, match=r"reasons: expected a mapping with families"):
        parse_catalogue_text("- just\n- a list\n")
    with pytest.raises(InvalidCatalogue, match=r"catalogue reasons is not valid YAML"):
        parse_catalogue_text("families: [unclosed\n")
    with pytest.raises(InvalidCatalogue, match=r"catalogue .*missing\.yaml cannot be read"):
        load_catalogue(tmp_path / "missing.yaml")


def test_a_feature_the_catalogue_does_not_know_falls_into_the_catch_all():
    assert CATALOGUE.family_of("brand_new_feature").code == "OTHER_ACTIVITY"
    assert CATALOGUE.uncovered(["brand_new_feature", "amount"]) == ["brand_new_feature"]
    weights = CATALOGUE.weigh({"brand_new_feature": 0.2, "amount": 0.5, "hour_of_day": None})
    assert [(w.family.code, w.contribution) for w in weights] == [
        ("AMOUNT_UNUSUAL", 0.5),
        ("OTHER_ACTIVITY", 0.2),
    ]
    assert CATALOGUE.categories(["brand_new_feature"]) == ["account"]


def test_data_categories_come_from_features_families_and_rules():
    assert CATALOGUE.categories(["amount"]) == ["payment"]
    assert CATALOGUE.categories(["ip_payments_1h"]) == ["payment", "network"]
    assert CATALOGUE.categories(["ip_account_country_mismatch"]) == ["account", "location"]
    assert CATALOGUE.categories([], ["DENY_LISTED_IP", "UNKNOWN"]) == ["network"]


def test_a_family_is_given_only_when_a_feature_that_weighed_is_on_its_risky_side():
    (weight,) = CATALOGUE.weigh({"account_age": 0.8, "account_strongly_verified": -0.1})
    quantiles = {"account_age": {"p10": 600.0, "p50": 86_400.0 * 200, "p90": 86_400.0 * 800}}
    # account_age has `tail: 0.5`: younger than the median is "new"
    assert CATALOGUE.applies(weight, {"account_age": 3600.0}, quantiles)  # young: risky low
    assert not CATALOGUE.applies(weight, {"account_age": 86_400.0 * 900}, quantiles)
    assert CATALOGUE.applies(weight, {"account_age": 86_400.0 * 900}, {})  # nothing to compare


# A population where most accounts use no card in a day and nine in ten at most one.
CARDS = {
    "account_cards_24h": {"p10": 0.0, "p50": 0.0, "p75": 0.0, "p90": 1.0, "p99": 3.0},
    "account_cards_30d": {"p10": 0.0, "p50": 0.0, "p75": 1.0, "p90": 1.0, "p99": 4.0},
}


@pytest.mark.parametrize(
    ("cards_24h", "cards_30d", "given"),
    [
        (1.0, 1.0, False),  # past the median, but not "many": nine in ten accounts show as much
        (2.0, 1.0, True),  # past the 90th percentile
        (1.0, 3.0, True),  # either feature that weighed towards fraud may carry it
        (0.0, 0.0, False),
    ],
)
def test_a_count_must_be_past_the_ninetieth_percentile_for_its_text(cards_24h, cards_30d, given):
    (weight,) = CATALOGUE.weigh({"account_cards_24h": 0.4, "account_cards_30d": 0.2})
    values = {"account_cards_24h": cards_24h, "account_cards_30d": cards_30d}
    assert CATALOGUE.applies(weight, values, CARDS) is given


def test_a_feature_that_weighed_against_fraud_does_not_carry_the_text():
    (weight,) = CATALOGUE.weigh({"account_cards_24h": 0.4, "account_cards_30d": -0.2})
    values = {"account_cards_24h": 1.0, "account_cards_30d": 9.0}
    assert not CATALOGUE.applies(weight, values, CARDS)


def test_flags_and_the_time_of_day_have_no_population_bar():
    # a country mismatch is the risky state even where many accounts show one
    (weight,) = CATALOGUE.weigh({"card_ip_country_mismatch": 0.5})
    common = {"card_ip_country_mismatch": {"p10": 0.0, "p50": 1.0, "p90": 1.0}}
    assert CATALOGUE.applies(weight, {"card_ip_country_mismatch": 1.0}, common)
    assert not CATALOGUE.applies(weight, {"card_ip_country_mismatch": 0.0}, common)
    # the time of day (`tail: 1`): its text speaks of fraud at that hour, not of the customer
    (weight,) = CATALOGUE.weigh({"hour_of_day": 0.3})
    hours = {"hour_of_day": {"p10": 2.0, "p50": 14.0, "p90": 21.0}}
    assert CATALOGUE.applies(weight, {"hour_of_day": 14.0}, hours)


def test_an_amount_is_unusual_in_either_tail():
    (weight,) = CATALOGUE.weigh({"amount": 0.5})
    amounts = {"amount": {"p10": 5.0, "p50": 20.0, "p90": 99.0}}
    assert CATALOGUE.applies(weight, {"amount": 950.0}, amounts)
    assert CATALOGUE.applies(weight, {"amount": 1.0}, amounts)
    assert not CATALOGUE.applies(weight, {"amount": 50.0}, amounts)  # past the median only
    assert not CATALOGUE.applies(weight, {"amount": 5.0}, amounts)  # the 10th percentile itself


def test_a_tail_outside_the_stored_quantiles_is_refused():
    source = PATH.read_text()
    bad = source.replace("risky: low, tail: 0.5,", "risky: low, tail: 0.3,", 1)
    assert bad != source
    with pytest.raises(InvalidCatalogue, match="tail"):
        parse_catalogue_text(bad)


@pytest.mark.parametrize(
    ("unit", "value", "typical", "written"),
    [
        ("count", 14.0, False, "14"),
        ("count", 1234.4, False, "1,234"),
        ("count", 0.0, True, "none"),
        ("count", 0.0, False, "0"),
        ("money", 950.0, False, "950.00"),
        ("money", 1234.567, False, "1,234.57"),
        ("share", 0.02, False, "2%"),
        ("share", 0.004, False, "less than 1%"),
        ("share", 1.0, False, "100%"),
        ("seconds", 45.0, False, "45 seconds"),
        ("seconds", 0.001, False, "less than a second"),  # not "0 seconds"
        ("seconds", 600.0, False, "10 minutes"),
        ("seconds", 3600.0, False, "60 minutes"),
        ("seconds", 18_000.0, False, "5 hours"),
        ("seconds", 86_400.0 * 3, False, "3 days"),
        ("seconds", 60.0 * 60 * 1.5, False, "2 hours"),
        ("flag", 1.0, False, "yes"),
        ("flag", 0.0, False, "no"),
        ("hour", 3.0, False, "03:00 UTC"),
        ("ratio", 8.27, False, "8.3 times"),
        ("count", None, False, None),
        ("count", float("nan"), False, None),
        ("money", "GB", False, None),
    ],
)
def test_values_are_written_for_a_person_per_their_unit(unit, value, typical, written):
    assert human(unit, value, typical=typical) == written


def test_an_optional_part_is_left_out_when_a_value_in_it_is_missing():
    values = {"a": "3", "b": None}

    def lookup(kind, name):
        return None if kind == "typical" else values[name]

    assert render("A: {a}[ (typically {typical:a})][, B: {b}].", lookup) == "A: 3."
    assert render("B: {b}.", lookup) == "B: unknown."
    assert placeholders("{a}[ and {typical:b}]") == [(None, "a"), ("typical", "b")]
    with pytest.raises(ValueError, match=r"optional parts '\[...\]' must be closed and not nested"):
        placeholders("[a [b]]")


def test_a_reasons_optional_part_does_not_list_a_value_on_the_safe_side_of_typical():
    new_account = next(f for f in CATALOGUE.families if f.code == "NEW_ACCOUNT")
    typical = {"account_age": 90 * 86_400.0, "account_is_trial": 0.0,
               "account_strongly_verified": 0.0}  # fmt: skip
    verified = {"account_age": 3600.0, "account_is_trial": "1", "account_strongly_verified": 1.0}
    text = CATALOGUE.family_text(new_account, verified, typical)
    assert text == (
        "Your account is new or not yet established: it was created 60 minutes ago; on a trial: "
        "yes."
    )  # not "; verified by phone or identity check: yes": that speaks for the customer
    unverified = dict(verified, account_strongly_verified=0.0, account_is_trial="0")
    text = CATALOGUE.family_text(new_account, unverified, dict(typical, account_is_trial=1.0))
    assert text.endswith("created 60 minutes ago; verified by phone or identity check: no."), text
    verified_typical = dict(typical, account_strongly_verified=1.0)  # most accounts verified
    text = CATALOGUE.family_text(new_account, verified, verified_typical)
    assert "verified" not in text, text  # still speaks for the customer
    lookup = {"a": "3", "b": "4"}.get
    assert render("A: {a}[, B: {b}].", lambda _, n: lookup(n), keep=lambda n: n != "b") == "A: 3."
    assert render("B: {b}.", lambda _, n: lookup(n), keep=lambda n: False) == "B: 4."


def test_the_shipped_texts_read_cleanly_for_a_customer_with_typical_values():
    catalogue: Catalogue = CATALOGUE
    values = {name: 2.0 for family in catalogue.families for name in family.names}
    for fam in catalogue.families:
        text = catalogue.family_text(fam, values, values)
        assert "{" not in text and "[" not in text and "unknown" not in text, text
        assert "  " not in text and not re.search(r"\s[,.;:)]", text), text
