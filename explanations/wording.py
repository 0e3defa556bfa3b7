"""The customer's words: the template grammar of the catalogue's texts, and values written for a
person.

Layer: explanations (pure, no I/O). Templates: `{feature}` is the customer's value,
`{kind:feature}` another value of it (the catalogue uses `typical`), `[...]` an optional part left
out when a placeholder in it has no value (or, with `keep`, a value the text should not show);
outside one, a missing value is written "unknown".
`human(unit, value)` writes a number per its unit: count (integer; a typical 0 is "none"),
money (2 decimals), share (a percentage), seconds (seconds, minutes, hours or days), flag
(yes/no), hour (of the day, UTC), ratio ("8.3 times").
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Literal

from features.state import numeric

Unit = Literal["count", "money", "share", "seconds", "flag", "hour", "ratio"]
INTEGER_UNITS: frozenset[str] = frozenset({"count", "flag", "hour"})

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")
# What a customer text must never show: identifiers and the machinery behind the decision.
_INTERNAL = re.compile(
    r"_|\b(scores?|scoring|thresholds?|models?|probabilit(?:y|ies)|log-odds|margins?)\b", re.I
)


def human(unit: str, value: Any, *, typical: bool = False) -> str | None:
    """`value` written for a person per its `unit`; None when there is no number to write."""
    number = as_number(value)
    if number is None:
        return None
    if unit == "count":
        count = round(number)
        return "none" if typical and count == 0 else f"{count:,}"
    if unit == "money":
        return f"{number:,.2f}"
    if unit == "share":
        percent = number * 100
        if 0 < percent < 1:
            return "less than 1%"
        if 99 < percent < 100:
            return "more than 99%"
        return f"{round(percent)}%"
    if unit == "seconds":
        return _duration(number)
    if unit == "flag":
        return "yes" if number >= 0.5 else "no"
    if unit == "hour":
        return f"{int(number) % 24:02d}:00 UTC"
    if unit == "ratio":
        return f"{number:,.1f} times"
    return f"{number:,.2f}".rstrip("0").rstrip(".")


def as_number(value: Any) -> float | None:
    """A finite number as a float, read as the model reads it (`features.state.numeric`:
    booleans and numeric text too; a `last_value` feature keeps the event's field as text, so a
    trial flag is '1'); None for anything else (missing, NaN, other text)."""
    number = numeric(value)
    return number if math.isfinite(number) else None


# Each unit until the next reads better: "80 seconds", "75 minutes", "36 hours", "3 days".
_DURATIONS = ((90.0, 1, "second"), (5400.0, 60, "minute"), (172_800.0, 3600, "hour"),
              (math.inf, 86_400, "day"))  # fmt: skip


def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 1:  # an account decision read just after the event that triggered it
        return "less than a second"
    size, word = next((size, word) for limit, size, word in _DURATIONS if seconds < limit)
    count = round(seconds / size)
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def placeholders(template: str) -> list[tuple[str | None, str]]:
    """The `(kind, name)` of each placeholder; ValueError for brackets or braces out of place."""
    depth = 0
    for char in template:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth not in (0, 1):
            raise ValueError("optional parts '[...]' must be closed and not nested")
    if depth:
        raise ValueError("an optional part '[' is not closed")
    found: list[tuple[str | None, str]] = []
    for inner in _PLACEHOLDER.findall(template):
        kind, _, name = inner.rpartition(":")
        found.append((kind or None, name))
    if "{" in _PLACEHOLDER.sub("", template) or "}" in _PLACEHOLDER.sub("", template):
        raise ValueError("a brace '{' or '}' is not part of a placeholder")
    return found


def render(
    template: str,
    lookup: Callable[[str | None, str], str | None],
    missing: str = "unknown",
    keep: Callable[[str], bool] | None = None,
) -> str:
    """`template` with its placeholders filled by `lookup(kind, name)`; an optional part whose
    placeholders do not all have a value is left out, and so is one with a value placeholder
    `{name}` for which `keep(name)` is False, or one whose `{typical:name}` placeholders all
    name features `keep` refuses (a comparison with nothing unusual to compare)."""

    def fill(text: str, on_missing: str | None) -> str | None:
        out: list[str] = []
        last = 0
        compared: list[str] = []
        for match in _PLACEHOLDER.finditer(text):
            kind, _, name = match.group(1).rpartition(":")
            if on_missing is None and not kind and keep is not None and not keep(name):
                return None
            if kind == "typical":
                compared.append(name)
            value = lookup(kind or None, name)
            if value is None and on_missing is None:
                return None
            out += [text[last : match.start()], value if value is not None else str(on_missing)]
            last = match.end()
        if on_missing is None and keep is not None and compared and not any(map(keep, compared)):
            return None
        return "".join(out) + text[last:]

    kept = _OPTIONAL.sub(lambda m: fill(m.group(1), None) or "", template)
    return " ".join(str(fill(kept, missing)).split())


def mentions_internals(text: str) -> str | None:
    """The first internal term in a customer text (placeholders aside), or None."""
    match = _INTERNAL.search(_PLACEHOLDER.sub("", text))
    return match.group(0) if match else None
