"""Event validation names the event and the field at fault."""

from __future__ import annotations

import pandas as pd
import pytest

from features.errors import InvalidEvent
from features.events import format_ts, parse_ts, validate_event, validate_frame


def sms(**extra):
    event = {
        "event_id": "ev1", "type": "sms", "ts": "2026-11-01T10:00:00Z", "account_id": "acct_1",
        "dest_number": "+447700900123", "dest_prefix": "+4477", "dest_country": "GB",
        "segments": 1, "cost": 0.04, "verified": True,
    }  # fmt: skip
    event.update(extra)
    return event


def test_a_valid_event_is_normalised_to_epoch_milliseconds():
    event = validate_event(sms())
    assert event["ts"] == parse_ts("2026-11-01T10:00:00+00:00") == 1_793_527_200_000
    assert format_ts(event["ts"]) == "2026-11-01T10:00:00.000Z"


def test_an_unknown_type_names_the_event_and_lists_the_known_types():
    with pytest.raises(InvalidEvent, match=r"event ev1: field 'type': unknown type 'fax'.*sms"):
        validate_event(sms(type="fax"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"segments": 0}, r"event ev1 \(sms\): field 'segments' must be >= 1"),
        ({"dest_country": "GBR"}, r"field 'dest_country' must be 2 capital letters"),
        # Only the shape of a code, as the score door checks it: `us` would never meet `US`.
        ({"dest_country": "gb"}, r"field 'dest_country' must be 2 capital letters"),
        ({"dest_country": "12"}, r"field 'dest_country' must be 2 capital letters"),
        ({"dest_country": "日本"}, r"field 'dest_country' must be 2 capital letters"),
        ({"cost": 10**400}, r"field 'cost' must be finite"),
        ({"dest_prefix": " "}, r"field 'dest_prefix' must be a non-empty string"),
        ({"dest_number": "+44\ud800"}, r"field 'dest_number' must be Unicode text"),
        ({"verified": "yes"}, r"field 'verified' must be true or false"),
        ({"cost": float("nan")}, r"field 'cost' must be finite"),
        ({"ts": "2026-11-01T10:00:00"}, r"field 'ts' ISO timestamps need a time zone"),
        ({"ts": 1_793_527_200}, r"field 'ts' is outside 2000-01-01..2100-01-01"),
        ({"dest_number": None}, r"field 'dest_number' is required"),
        ({"colour": "red"}, r"unknown field 'colour' for type sms"),
    ],
)
def test_a_bad_field_is_named(change, message):
    with pytest.raises(InvalidEvent, match=message) as info:
        validate_event(sms(**change))
    assert info.value.event_id == "ev1"


def test_a_log_is_checked_column_by_column_and_names_the_first_bad_event():
    frame = pd.DataFrame([validate_event(sms()), validate_event(sms(event_id="ev2"))])
    validate_frame(frame)
    frame.loc[1, "segments"] = 500
    with pytest.raises(InvalidEvent, match=r"event ev2 \(sms\): field 'segments' must be within"):
        validate_frame(frame)
    frame.loc[1, "segments"] = 1
    frame.loc[1, "event_id"] = "ev1"
    with pytest.raises(InvalidEvent, match=r"event ev1 \(sms\): field 'event_id' is a duplicate"):
        validate_frame(frame)


def test_a_log_with_a_value_of_the_wrong_type_is_refused():
    login = {"event_id": "ev9", "type": "login", "ts": 1_793_527_200_000, "account_id": "a1",
             "ip": "31.10.0.1", "success": "maybe"}  # fmt: skip
    with pytest.raises(InvalidEvent, match=r"event ev9 \(login\): field 'success' must be true"):
        validate_frame(pd.DataFrame([login]))


def test_control_characters_in_a_string_field_are_refused_naming_the_field():
    event = {"event_id": "e1", "type": "login", "ts": 1_790_000_000_000, "account_id": "a\x00",
             "ip": "1.2.3.4", "success": True}  # fmt: skip
    with pytest.raises(InvalidEvent, match="control characters") as caught:
        validate_event(event)
    assert caught.value.field == "account_id"


@pytest.mark.parametrize("ip", ["nope", "31.10.0.256", "31.10.0", "31.10.0.1/24"])
def test_an_ip_that_is_no_address_is_refused_in_an_event_and_in_a_log(ip):
    login = {"event_id": "ev9", "type": "login", "ts": 1_793_527_200_000, "account_id": "a1",
             "ip": ip, "success": True}  # fmt: skip
    with pytest.raises(InvalidEvent, match=r"field 'ip' must be an IPv4 or IPv6 address"):
        validate_event(login)
    good = {**login, "event_id": "ev8", "ip": "2001:db8::1"}
    assert validate_event(good)["ip"] == "2001:db8::1"
    frame = pd.DataFrame([good, {**good, "event_id": "ev10", "ip": "::ffff:31.10.0.1"}, login])
    with pytest.raises(InvalidEvent, match=r"event ev9 \(login\): field 'ip' must be an IPv4"):
        validate_frame(frame)
    validate_frame(frame.iloc[:2])
