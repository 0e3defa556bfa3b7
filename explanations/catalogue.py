"""The reason-code catalogue: which family each model feature belongs to, in the customer's words.

Layer: explanations (pure; reads one YAML file, imports no other Arbiter package).
`load_catalogue(path)` validates `config/reasons.yaml` into a `Catalogue` whose `version` is a
hash of the validated content (recorded in every rationale), or raises `InvalidCatalogue` naming
the entry at fault: an unknown field, a feature listed twice, a placeholder the grammar (see
`explanations.wording`) or the family does not know, a customer text that names internals
(identifiers, scores, thresholds, models). A family's text may name its own features' values,
`{feature}`, and their typical values, `{typical:feature}`.

`Catalogue.weigh` sums a decision's contributions per family; `Catalogue.applies` says whether a
family's text is true of the customer (one of its features that pushed towards fraud is unusual
on its risky side: past the feature's `tail` of the training population, the highest tenth by
default), so that no reason claims what the customer's values do not show.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from explanations.wording import (
    INTEGER_UNITS,
    Unit,
    as_number,
    human,
    mentions_internals,
    placeholders,
    render,
)

CODE_PATTERN = r"^[A-Z][A-Z0-9_]{1,47}$"

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
TAILS = (1, 0.5, 0.25, 0.1, 0.05)  # a feature's `tail`: pXX and p(100-XX) are stored quantiles


class InvalidCatalogue(Exception):
    code = "invalid_catalogue"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureEntry(_Strict):
    name: str = Field(pattern=_NAME.pattern)
    unit: Unit
    # Which side of typical the family's text speaks of ("many cards": high; "a new account",
    # the account's age: low; either: the time of day).
    risky: Literal["high", "low", "either"] = "high"
    # How unusual the value must be for the family's text to hold: among the highest (risky
    # high), the lowest (low) or either `tail` of the training population. 0.1: past the 90th
    # percentile ("many cards": more than nine in ten accounts show); 0.5: past the median ("a
    # new account": newer than most); 1: no bar (the time of day: the text speaks of fraud at
    # that hour, not of the customer). Flags: their risky state, whatever the population.
    tail: float = 0.1
    says: str = Field(min_length=1)  # a noun phrase for the value, customer wording
    if_on: str | None = None  # flags: clauses that finish "If ..."
    if_off: str | None = None
    categories: list[str] | None = None  # None: the family's

    @model_validator(mode="after")
    def _tail(self) -> FeatureEntry:
        if self.tail not in TAILS:  # each a pair of quantiles training stores
            raise ValueError(f"tail must be one of {', '.join(f'{t:g}' for t in TAILS)}")
        return self

    @model_validator(mode="after")
    def _flag_clauses(self) -> FeatureEntry:
        is_flag = self.unit == "flag"
        if is_flag != (self.if_on is not None) or is_flag != (self.if_off is not None):
            raise ValueError("flags (and only flags) give both 'if_on' and 'if_off'")
        return self


class Family(_Strict):
    code: str = Field(pattern=CODE_PATTERN)
    label: str = Field(min_length=1)  # internal short name
    text: str = Field(min_length=1)
    features: list[FeatureEntry]
    categories: list[str] = Field(min_length=1)
    catch_all: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)


class RuleText(_Strict):
    text: str = Field(min_length=1)
    categories: list[str] = []


class Summary(_Strict):
    allow: str
    review: str
    decline: str
    suspend_account: str


class Outcome(_Strict):
    review: str
    decline: str
    suspend_account: str


class Still(_Strict):
    """What an outcome would still have been after the change (finishes "..., but ...")."""

    review: str
    decline: str


class Stills(_Strict):
    payment: Still
    account: Still


class Summaries(_Strict):
    payment: Summary
    account: Summary


class Outcomes(_Strict):
    payment: Outcome
    account: Outcome


class Wording(_Strict):
    summary: Summaries
    outcome: Outcomes
    still: Stills
    rule_decided: str
    rules_also: str
    no_single_factor: str
    unknown_rule: str
    overall_risk: str


class CatalogueModel(_Strict):
    name: str
    data_categories: dict[str, str] = Field(min_length=1)
    families: list[Family] = Field(min_length=1)
    rules: dict[str, RuleText] = {}
    wording: Wording


@dataclass(frozen=True)
class FamilyWeight:
    """A family's share of one decision: its features' contributions and their sum."""

    family: Family
    contribution: float
    features: tuple[tuple[str, float], ...]  # strongest towards fraud first


class Catalogue:
    def __init__(self, model: CatalogueModel, version: str) -> None:
        self.model = model
        self.version = version
        self.families: tuple[Family, ...] = tuple(model.families)
        self.catch_all = next(f for f in model.families if f.catch_all)
        self._family = {f.code: f for f in model.families}
        self._family_of = {e.name: f for f in model.families for e in f.features}
        self._entry = {e.name: e for f in model.families for e in f.features}

    def family(self, code: str) -> Family:
        return self._family[code]

    def family_of(self, feature: str) -> Family:
        """The feature's family; the catch-all for a feature the catalogue does not list."""
        return self._family_of.get(feature, self.catch_all)

    def entry(self, feature: str) -> FeatureEntry | None:
        return self._entry.get(feature)

    def feature_wording(self) -> tuple[dict[str, str], frozenset[str]]:
        """What the decision's `FEATURE:<name>` reasons call each feature (its `says`), and the
        features that are flags (engine.reasons says their state)."""
        words = {name: entry.says for name, entry in self._entry.items()}
        return words, frozenset(n for n, e in self._entry.items() if e.unit == "flag")

    def uncovered(self, names: Iterable[str]) -> list[str]:
        """The `names` no family lists (they fall into the catch-all)."""
        return sorted(set(names) - self._entry.keys())

    def integer_features(self) -> frozenset[str]:
        return frozenset(n for n, e in self._entry.items() if e.unit in INTEGER_UNITS)

    def is_known_rule(self, code: str) -> bool:
        return code in self.model.rules

    def rule_text(self, code: str) -> str:
        """The customer text of a rule or list reason; a generic one for a code not listed (ops
        may add a rule before the catalogue knows it)."""
        rule = self.model.rules.get(code)
        return rule.text if rule is not None else self.model.wording.unknown_rule

    def categories(self, features: Iterable[str], codes: Iterable[str] = ()) -> list[str]:
        """Data category keys behind these features and rule codes, in the catalogue's order."""
        found: set[str] = set()
        for name in features:
            entry, family = self._entry.get(name), self.family_of(name)
            found.update(entry.categories if entry and entry.categories else family.categories)
        for code in codes:
            if code in self.model.rules:
                found.update(self.model.rules[code].categories)
        return [key for key in self.model.data_categories if key in found]

    def weigh(self, contributions: Mapping[str, float | None]) -> list[FamilyWeight]:
        """Contributions summed per family: every family with at least one contribution,
        strongest towards fraud first (ties by code, so the order is deterministic)."""
        grouped: dict[str, list[tuple[str, float]]] = {}
        for name in sorted(contributions):
            value = contributions[name]
            if value is not None and math.isfinite(value):
                grouped.setdefault(self.family_of(name).code, []).append((name, float(value)))
        weights = [
            FamilyWeight(
                self._family[code],
                math.fsum(v for _, v in members),
                tuple(sorted(members, key=lambda m: (-m[1], m[0]))),
            )
            for code, members in grouped.items()
        ]
        return sorted(weights, key=lambda w: (-w.contribution, w.family.code))

    def applies(
        self,
        weight: FamilyWeight,
        values: Mapping[str, Any],
        quantiles: Mapping[str, Mapping[str, float]],
    ) -> bool:
        """Whether the family's text is true of this customer: a feature that pushed towards
        fraud is unusual on its risky side, past its entry's `tail` of the training population
        (`quantiles`, per feature, as `explanations.counterfactual.quantiles_of` gives them). A
        contribution is relative to the whole population, so a customer a little past the
        median can still get a positive one; the text ("many cards") would then claim what
        their values do not show (one card in a day, where most accounts have none and nine in
        ten at most one). Without quantiles (no distribution, an unlisted feature) there is
        nothing to hold it against."""
        for name, contribution in weight.features:
            if contribution <= 0:
                continue
            entry, known = self._entry.get(name), quantiles.get(name)
            if entry is None or not known:
                return True
            value = as_number(values.get(name))
            if value is None:
                continue
            if _unusual(entry, value, known):
                return True
        return False

    def family_text(
        self, family: Family, values: Mapping[str, Any], typical: Mapping[str, float | None]
    ) -> str:
        """The family's customer text with this customer's values and the typical ones."""

        def lookup(kind: str | None, name: str) -> str | None:
            unit = self._entry[name].unit
            if kind == "typical":
                return human(unit, typical.get(name), typical=True)
            return human(unit, values.get(name))

        def shown(name: str) -> bool:  # an optional part does not list a mitigating value
            return not self._mitigates(name, values, typical)

        return render(family.text, lookup, keep=shown)

    def _mitigates(
        self, name: str, values: Mapping[str, Any], typical: Mapping[str, float | None]
    ) -> bool:
        """Whether the customer's value of `name` is typical or on its safe side (a verified
        account, an old one, no payments in 24 hours where most accounts have none): a reason's
        text then leaves its optional part out."""
        entry = self._entry.get(name)
        value, usual = as_number(values.get(name)), as_number(typical.get(name))
        if entry is not None and entry.unit == "flag" and value is not None:
            usual = 0.5  # a flag's safe state is safe whatever most accounts have
        if entry is None or value is None or usual is None:
            return False
        high, low = entry.risky == "high", entry.risky == "low"
        return (high and value <= usual) or (low and value >= usual)


def _unusual(entry: FeatureEntry, value: float, quantiles: Mapping[str, float]) -> bool:
    """Whether `value` lies in the entry's `tail` on its risky side (see `FeatureEntry`)."""
    high, low = entry.risky != "low", entry.risky != "high"
    if entry.unit == "flag":  # on (risky high) or off (risky low) is the risky state itself
        return (high and value >= 0.5) or (low and value < 0.5)
    if entry.tail == 1:
        return True
    upper = as_number(quantiles.get(f"p{round(100 * (1 - entry.tail))}", quantiles.get("p50")))
    lower = as_number(quantiles.get(f"p{round(100 * entry.tail)}", quantiles.get("p50")))
    return bool(
        (high and upper is not None and value > upper)
        or (low and lower is not None and value < lower)
    )


def _check(model: CatalogueModel, source: str) -> None:
    """What a schema cannot say: references between entries, and the texts' placeholders."""

    def fail(where: str, message: str) -> NoReturn:
        raise InvalidCatalogue(f"{source}: {where}: {message}")

    def text(where: str, template: str, allowed: Mapping[str | None, Iterable[str]]) -> None:
        try:
            found = placeholders(template)
        except ValueError as exc:
            fail(where, str(exc))
        for kind, name in found:
            if name not in allowed.get(kind, ()):
                label = f"{kind}:{name}" if kind else name
                fail(where, f"unknown placeholder {{{label}}} (this text knows {_known(allowed)})")
        term = mentions_internals(template)
        if term is not None:
            fail(where, f"a customer text must not mention internals ({term!r})")

    def categories(where: str, keys: Iterable[str]) -> None:
        for key in keys:
            if key not in model.data_categories:
                fail(where, f"unknown data category {key!r}")

    owner: dict[str, str] = {}
    codes: set[str] = set()
    catch_alls = [f.code for f in model.families if f.catch_all]
    if len(catch_alls) != 1:
        fail("families", f"exactly one family needs 'catch_all: true' (found {len(catch_alls)})")
    for i, family in enumerate(model.families):
        where = f"families.{i} ({family.code})"
        if family.code in codes or family.code in model.rules:
            fail(where, f"code {family.code} is used twice (families and rules share codes)")
        codes.add(family.code)
        if family.catch_all and family.features:
            fail(where, "the catch-all family lists no features: it takes the unlisted ones")
        categories(where, family.categories)
        names = family.names
        text(f"{where}.text", family.text, {None: names, "typical": names})
        for j, entry in enumerate(family.features):
            at = f"{where}.features.{j} ({entry.name})"
            if entry.name in owner:
                fail(at, f"feature {entry.name!r} is listed twice (also in {owner[entry.name]})")
            owner[entry.name] = family.code
            categories(at, entry.categories or ())
            for name, clause in (("says", entry.says), ("if_on", entry.if_on),
                                 ("if_off", entry.if_off)):  # fmt: skip
                text(f"{at}.{name}", clause or "", {})
    for code, rule in model.rules.items():
        if not re.match(CODE_PATTERN, code):
            fail(f"rules.{code}", "a reason code is upper case: letters, digits, '_'")
        text(f"rules.{code}.text", rule.text, {})
        categories(f"rules.{code}", rule.categories)
    for key, description in model.data_categories.items():
        text(f"data_categories.{key}", description, {})
    words = model.wording
    for subject in ("payment", "account"):
        summary: Summary = getattr(words.summary, subject)
        outcome: Outcome = getattr(words.outcome, subject)
        for action, template in summary.model_dump().items():
            text(f"wording.summary.{subject}.{action}", template, {None: ("date",)})
        for action, template in outcome.model_dump().items():
            text(f"wording.outcome.{subject}.{action}", template, {})
        still: Still = getattr(words.still, subject)
        for action, template in still.model_dump().items():
            text(f"wording.still.{subject}.{action}", template, {})
    text("wording.rule_decided", words.rule_decided, {None: ("rules",)})
    text("wording.rules_also", words.rules_also, {None: ("rules",)})
    for name in ("no_single_factor", "unknown_rule", "overall_risk"):
        text(f"wording.{name}", getattr(words, name), {})


def _known(allowed: Mapping[str | None, Iterable[str]]) -> str:
    known = [f"{{{kind}:{n}}}" if kind else f"{{{n}}}" for kind, ns in allowed.items() for n in ns]
    return ", ".join(known) or "none"


def parse_catalogue(raw: Any, source: str = "reasons") -> Catalogue:
    if not isinstance(raw, dict):
        raise InvalidCatalogue(f"{source}: expected a mapping with families, rules and wording")
    try:
        model = CatalogueModel.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        entry = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise InvalidCatalogue(f"{source}: {entry}: {err['msg']}") from None
    _check(model, source)
    payload = json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return Catalogue(model, hashlib.sha256(payload.encode()).hexdigest()[:12])


def parse_catalogue_text(text: str, source: str = "reasons") -> Catalogue:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidCatalogue(f"catalogue {source} is not valid YAML: {exc}") from exc
    return parse_catalogue(raw, source)


def load_catalogue(path: str | Path) -> Catalogue:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidCatalogue(f"catalogue {path} cannot be read: {exc.strerror}") from exc
    return parse_catalogue_text(text, str(path))
