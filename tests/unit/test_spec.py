"""The feature spec: validation names the entry, the version follows the content."""

from __future__ import annotations

import copy

import pytest
import yaml

from features.errors import InvalidSpec
from features.spec import load_spec, parse_duration, parse_spec
from tests.conftest import ROOT

RAW = yaml.safe_load((ROOT / "config" / "features.yaml").read_text())
DAY = next(i for i, f in enumerate(RAW["features"]) if f["name"] == "account_payments_24h")


def edited(**changes):
    raw = copy.deepcopy(RAW)
    raw["features"][changes.pop("index", DAY)].update(changes)
    return raw


def test_the_shipped_spec_is_valid_and_versioned():
    plan = load_spec(ROOT / "config" / "features.yaml")
    assert len(plan.version) == 16
    assert "account_cards_24h" in plan.output and "account_country" not in plan.output


def test_the_version_changes_with_the_content_but_not_with_formatting():
    base = parse_spec(copy.deepcopy(RAW)).version
    assert parse_spec(edited(window="12h")).version != base
    reordered = copy.deepcopy(RAW)
    reordered["features"][DAY] = dict(reversed(list(reordered["features"][DAY].items())))
    assert parse_spec(reordered).version == base


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"window": "24 hours"}, rf"features\[{DAY}\] 'account_payments_24h'.*duration '24 hours'"),
        (
            {"entity": "planet"},
            rf"features\[{DAY}\] 'account_payments_24h': unknown entity 'planet'",
        ),
        ({"kind": "median"}, rf"features\[{DAY}\] 'account_payments_24h'\.kind"),
        ({"window": None}, rf"features\[{DAY}\] 'account_payments_24h'.*needs a 'window'"),
        ({"name": "account_payments_1h"}, r"'account_payments_1h': the name is used twice"),
        ({"colour": "red"}, rf"features\[{DAY}\] 'account_payments_24h'\.colour"),
    ],
)
def test_an_invalid_entry_is_refused_with_its_name(changes, message):
    with pytest.raises(InvalidSpec, match=message):
        parse_spec(edited(**changes))


def test_a_reference_to_a_later_feature_is_refused():
    raw = copy.deepcopy(RAW)
    raw["features"].insert(1, {"name": "early", "kind": "ratio", "a": "amount", "b": "account_age"})
    with pytest.raises(
        InvalidSpec, match=r"features\[1\] 'early': refers to 'account_age'.*defined later"
    ):
        parse_spec(raw)


def test_a_ttl_shorter_than_a_window_is_refused():
    raw = copy.deepcopy(RAW)
    raw["entities"]["account"]["ttl"] = "7d"
    with pytest.raises(InvalidSpec, match=r"entity 'account': ttl 7d is shorter than a window"):
        parse_spec(raw)


def test_durations_and_default_hops():
    assert parse_duration("10m") == 600_000
    assert parse_duration("7d") == 604_800_000
    plan = load_spec(ROOT / "config" / "features.yaml")
    day = next(f for f in plan.features if f.name == "account_payments_24h")
    assert (day.window, day.hop) == (86_400_000, 7_200_000)
