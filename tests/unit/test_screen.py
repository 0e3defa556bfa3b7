"""The body screen's card-number test: real card numbers are caught wherever they sit, and the
numbers Arbiter does carry (epoch milliseconds, E.164 phone numbers, ids) are not."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.screen import _CARD, RUN, _negative_integer, card_field, is_card_number, luhn, screen

CARDS = ["4111111111111111", "5500 0000 0000 0004", "3400-000000-00009", "6011000990139424",
         "4222222222222", "2223003122003222"]  # fmt: skip


@pytest.mark.parametrize("number", CARDS)
def test_card_numbers_are_recognised_with_or_without_separators(number):
    assert is_card_number(number)


@pytest.mark.parametrize("text", [
    "4111111111111112",  # fails Luhn
    "1764412345678",  # epoch milliseconds (starts with 1)
    "41111111111",  # too short
    "41111111111111111111",  # too long
    "9111111111111111",  # no card starts with 9
])  # fmt: skip
def test_other_digit_runs_are_not_cards(text):
    assert not is_card_number(text)


def test_luhn_matches_the_reference_examples():
    assert luhn("79927398713") and not luhn("79927398710")


def test_the_first_field_holding_a_card_is_named():
    body = {
        "events": [
            {"event_id": "e1", "ts": 1764412345678},
            {"event_id": "e2", "note": "paid with 4111 1111 1111 1111, thanks"},
        ]
    }
    assert card_field(body) == "events[1].note"
    assert card_field({"amount": 4111111111111111}) == "amount"
    assert card_field({"4111111111111111": 1}) == "body"  # a key at the top level
    assert card_field(["x", "5500000000000004"]) == "[1]"


def test_phone_numbers_timestamps_and_ids_pass():
    body = {
        "dest_number": "+4915123456789",
        "ts": 1764412345678,
        "payment_id": "pay-000123",
        "card_fp": "fp-9f8e7d6c5b4a3921",
        "amount": 25.0,
        "ip": "73.12.40.9",
    }
    assert card_field(body) is None


def test_ids_digests_and_phone_fields_are_not_cards():
    for _ in range(2000):
        assert card_field({"event_id": str(uuid.uuid4()), "fp": uuid.uuid4().hex * 2}) is None
    assert card_field({"dest_number": "4915123456789"}) is None  # E.164 without its +
    assert card_field({"ts": 2_100_000_000_000}) is None  # epoch ms, even past 2033


def test_the_screen_sees_through_what_json_loads_accepts():
    duplicate = b'{"statement": NaN, "statement": "4111 1111 1111 1111", "channel": "email"}'
    refused = screen(duplicate)
    assert refused is not None and (refused[1], refused[3]) == ("card_number", "statement")
    escaped = screen(b'{"note": "\\u0034111111111111111"}')  # a digit as a JSON escape
    assert escaped is not None and escaped[3] == "note"
    assert screen('{"note": 1}'.encode("utf-16")) == (
        422,
        "invalid_request",
        "the body is not UTF-8",
        "body",
    )
    assert screen(b'{"amount": 25.0, "ip": "73.12.40.9", "ts": 1764412345678}') is None


def test_a_payments_epoch_ms_alone_passes_and_a_card_beside_it_is_still_named():
    ts = b'"ts": 1700000000000'
    assert screen(b"{" + ts + b', "amount": 12.5, "ip": "10.0.0.1"}') is None
    for body, field in (
        (b'{"note": "4111 1111 1111 1111", ' + ts + b"}", "note"),
        (b'{"n": -4111111111111111, ' + ts + b"}", "n"),  # a negative integer's digits
        (b'{"x": [1, {"y": 4111111111111111}], ' + ts + b"}", "x[1].y"),
    ):
        refused = screen(body)
        assert refused is not None and refused[3] == field, body
    phone = b'{"dest_number": "+447911123456", "dest_prefix": "44791112345678", ' + ts + b"}"
    assert screen(phone) is None


def test_a_json_escape_before_the_digits_does_not_hide_a_card():
    for body, field in (
        (b'{"note": "\\n4111111111111111"}', "note"),
        (b'{"ts": 1700000000000, "note": "\\t4111 1111 1111 1111"}', "note"),
        (b'{"ts": 1700000000000, "n": "\\b378282246310005\\f"}', "n"),
    ):
        refused = screen(body)
        assert refused is not None and refused[3] == field, body


@pytest.mark.parametrize(("body", "field"), [
    (b'{"n":-4111111111111111}', "n"),  # alone: no other long number beside it
    (b'{"n" :\n\t -4111111111111111}', "n"),
    (b'{"x": [1,-4111111111111111]}', "x[1]"),
    (b'{"x": [ -4111111111111111]}', "x[0]"),
    (b"  -4111111111111111", "body"),
])  # fmt: skip
def test_a_negative_integer_is_caught_wherever_json_puts_a_value(body, field):
    assert screen(body) == (422, "card_number", _CARD.format(field=field), field)


def test_a_dash_before_digits_inside_a_string_is_not_a_negative_number():
    # Such ids skip the parse (the fast path); what the parse would find is still found.
    assert not _negative_integer(b'{"payment_id": "inv-20261207143000123"}')
    assert screen(b'{"payment_id": "inv-20261207143000123", "ts": 1700000000000}') is None
    assert _negative_integer(b'{"note": "a: -4111111111111111"}')  # parsed: harmless


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**19), 10**19) | st.floats(allow_nan=False)
    | st.sampled_from([-4111111111111111, 4111111111111111, -1700000000000, 1700000000000])
    | st.sampled_from(["4111111111111111", "inv-2026120714300012", "-4111111111111111",
                       "x -4111111111111111", "pay-000123", "+4915123456789"])
    | st.text(alphabet="0123456789 -+:,[abc", max_size=24),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["n", "note", "ts", "dest_number", "4111111111111111"]), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(_VALUES, st.sampled_from([None, 0, 1]))
def test_the_screen_names_what_parsing_every_body_would(value, indent):
    body = json.dumps(value, indent=indent).encode()
    expected = card_field(json.loads(body))
    refused = screen(body)
    assert (refused[3] if refused else None) == (
        (expected or "body") if expected is not None else None
    ), body


# The run pattern written plainly (look-behind first): the one in use must find the same runs.
_GROUPS = r"\d{4}(?:[ .-]\d{4}){3}(?:[ .-]?\d{1,3})?|\d{4}[ .-]\d{6}[ .-]\d{5}"
_FIRST_RUN = re.compile(rf"(?<![\dA-Za-z+_.-])(?:\d{{13,19}}|{_GROUPS})(?![\dA-Za-z_])")


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(
        st.text(alphabet="0123456789", min_size=1, max_size=20)
        | st.sampled_from(
            [
                " ",
                "-",
                "+",
                "_",
                ".",
                "a",
                "Z",
                "\u0664",
                "\uff14",
                "4111 1111 1111 1111",
                "4111.1111.1111.1111",
            ]
        ),
        max_size=12,
    ).map("".join)
)
def test_the_run_pattern_finds_what_its_first_form_found(text):
    assert [m.span() for m in RUN.finditer(text)] == [m.span() for m in _FIRST_RUN.finditer(text)]


FULL_WIDTH = "".join(chr(0xFF10 + int(d)) for d in "4111111111111111")  # ４１１１...
ARABIC_INDIC = "".join(chr(0x0660 + int(d)) for d in "5500000000000004")


@pytest.mark.parametrize("number", [FULL_WIDTH, ARABIC_INDIC, "4111.1111.1111.1111",
                                    "\uff14\uff11\uff11\uff11 1111 1111 1111"])  # fmt: skip
def test_a_card_typed_in_another_script_or_with_dots_is_a_card(number):
    assert is_card_number(number)
    for body in (
        json.dumps({"note": f"card {number}"}, ensure_ascii=False).encode(),
        json.dumps({"note": f"card {number}"}).encode(),
    ):  # raw, and as JSON escapes
        refused = screen(body)
        assert refused is not None and refused[1:] == ("card_number", _CARD.format(field="note"),
                                                       "note"), body  # fmt: skip
    assert screen(f"card {number}".encode()) is not None  # not JSON: the body is named


def test_other_digits_that_are_no_card_pass():
    not_luhn = "".join(chr(0xFF10 + int(d)) for d in "4111111111111112")
    body = json.dumps({"note": not_luhn, "ts": 1_790_000_000_000, "n": "\u0664\u0661"},
                      ensure_ascii=False).encode()  # fmt: skip
    assert screen(body) is None
    assert screen('{"city": "Zürich", "amount": 12.5}'.encode()) is None
    assert not is_card_number("31.10.0.7") and screen(b'{"ip": "4111.1111.1111.1112"}') is None
