"""The ops policy: thresholds, segments, allow and deny lists, hard rules, re-score triggers.

`load_policy(path, features)` validates `config/policy.yaml` into a frozen `Policy` with a
`version` (a hash of the validated content) or raises `InvalidPolicy` naming the entry at fault
(a key written twice, a list entry left blank, a bound that is not a finite number, text that is
not UTF-8 or YAML nested past what the parser can read are refused too); given the feature
spec's names, it also refuses rules and triggers on features the spec lacks, and given its text
features (`SpecPlan.text_features`), conditions on those (a condition compares a number).
`Policy.decide` turns a score and the request's facts into an action with its reasons, in this
order: allow lists, deny lists, hard rules, then the score against the (segment's) thresholds.
An action never gets milder on the way: rules and deny lists can only make it stricter.
`Policy.decide_account` does the same for an account with no payment involved (the `account`
section: its own thresholds and rules; `triggers` say when the event pipeline's activity asks
for one). `facts_of(event, features)` gathers what it looks at besides the score.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from engine.policy_model import Lists, PolicyModel, Thresholds
from features.events import parse_address
from features.state import numeric

Action = Literal["allow", "review", "decline", "suspend_account"]
SEVERITY: dict[str, int] = {"allow": 0, "review": 1, "decline": 2, "suspend_account": 3}


class InvalidPolicy(Exception):
    code = "invalid_policy"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Facts:
    """What the policy looks at besides the score (any may be missing)."""

    account_id: str | None = None
    ip: str | None = None
    card_fp: str | None = None
    bin_country: str | None = None
    destination_prefix: str | None = None
    plan: str | None = None
    country: str | None = None
    trial: bool | None = None
    account_age_days: float | None = None


@dataclass(frozen=True)
class Verdict:
    action: Action
    reasons: tuple[str, ...]  # reason codes, rules and lists first
    rules_fired: tuple[str, ...]
    segment: str | None
    thresholds: Thresholds


class Policy:
    def __init__(self, model: PolicyModel, version: str) -> None:
        self.model = model
        self.version = version
        self._allow_nets = _networks(model.lists.allow.ip, "lists.allow.ip")
        self._deny_nets = _networks(model.lists.deny.ip, "lists.deny.ip")

    def thresholds_for(self, facts: Facts) -> tuple[str | None, Thresholds]:
        for segment in self.model.segments:
            w = segment.when
            if w.account_age_days_below is not None and not (
                facts.account_age_days is not None
                and facts.account_age_days < w.account_age_days_below
            ):
                continue
            if w.plan is not None and facts.plan not in w.plan:
                continue
            if w.country is not None and facts.country not in w.country:
                continue
            if w.trial is not None and facts.trial is not w.trial:
                continue
            return segment.name, segment.thresholds
        return None, self.model.thresholds

    def decide(self, score: float | None, features: Mapping[str, Any], facts: Facts) -> Verdict:
        """`score` None means the model was not consulted (degraded or listed)."""
        segment, limits = self.thresholds_for(facts)
        allow, deny = self.model.lists.allow, self.model.lists.deny
        if (
            facts.account_id in allow.account
            or facts.card_fp in allow.card
            or _in_networks(facts.ip, self._allow_nets)
        ):
            return Verdict("allow", ("ALLOW_LISTED",), (), segment, limits)
        reasons: list[str] = []
        fired: list[str] = []
        action: Action = "allow"

        def escalate(to: Action) -> None:
            nonlocal action
            if SEVERITY[to] > SEVERITY[action]:
                action = to

        listed = [
            ("DENY_LISTED_ACCOUNT", facts.account_id in deny.account),
            ("DENY_LISTED_CARD", facts.card_fp in deny.card),
            ("DENY_LISTED_IP", _in_networks(facts.ip, self._deny_nets)),
            ("DENY_LISTED_BIN_COUNTRY", facts.bin_country in deny.bin_country),
            ("DENY_LISTED_DESTINATION", _prefixed(facts.destination_prefix, deny)),
        ]
        for code, hit in listed:
            if hit:
                reasons.append(code)
                escalate("decline")
        for rule in self.model.rules:
            if rule.when.holds(features):
                fired.append(rule.name)
                reasons.append(rule.reason)
                escalate(rule.action)
        if score is not None:
            escalate(score_action(score, limits))
        return Verdict(action, tuple(reasons), tuple(fired), segment, limits)

    def decide_account(
        self,
        score: float | None,
        features: Mapping[str, Any],
        account_id: str,
        destinations: Collection[str] = (),
    ) -> Verdict:
        """An account-level decision: `allow`, `review` or `suspend_account`. The account allow
        list wins; the account deny list suspends, and so does traffic to a deny-listed
        destination (`destinations`: the numbers and prefixes the account's SMS and calls just
        went to); each account rule whose conditions all hold is a reason; then the account
        model's score (None: no account model, rules only)."""
        limits = self.model.account.thresholds
        as_payment = Thresholds(
            review=limits.review, decline=limits.suspend_account,
            suspend_account=limits.suspend_account,
        )  # fmt: skip
        if account_id in self.model.lists.allow.account:
            return Verdict("allow", ("ALLOW_LISTED",), (), None, as_payment)
        reasons: list[str] = []
        fired: list[str] = []
        action: Action = "allow"
        if account_id in self.model.lists.deny.account:
            reasons.append("DENY_LISTED_ACCOUNT")
            action = "suspend_account"
        if destinations and self.denied_destinations(destinations):
            reasons.append("DENY_LISTED_DESTINATION")
            action = "suspend_account"
        for rule in self.model.account.rules:
            if all(c.holds(features) for c in rule.when):
                fired.append(rule.name)
                reasons.append(rule.reason)
                if SEVERITY[rule.action] > SEVERITY[action]:
                    action = rule.action
        if score is not None:
            by_score = score_action(score, as_payment)
            if SEVERITY[by_score] > SEVERITY[action]:
                action = by_score
        return Verdict(action, tuple(reasons), tuple(fired), None, as_payment)

    def denied_destinations(self, destinations: Iterable[str | None]) -> list[str]:
        """The deny-listed prefixes that some of `destinations` (numbers or prefixes) start
        with: the list's entries, not the numbers (a recipient's number is not kept)."""
        given = [str(d) for d in destinations if d]
        return sorted(
            {
                p
                for p in self.model.lists.deny.destination_prefix
                if any(d.startswith(p) for d in given)
            }
        )

    def _named(self) -> list[tuple[str, str]]:
        """(where, feature) of every condition: the rules', the triggers', the account's."""
        return (
            [(f"rules[{i}] ({r.name})", r.when.feature) for i, r in enumerate(self.model.rules)]
            + [(f"triggers[{i}]", t.feature) for i, t in enumerate(self.model.triggers)]
            + [(f"account.rules[{i}] ({r.name})", c.feature)
               for i, r in enumerate(self.model.account.rules) for c in r.when]
        )  # fmt: skip

    def unknown_features(self, names: set[str]) -> list[str]:
        """Features the rules and triggers name that the feature spec does not provide."""
        return sorted({feature for _, feature in self._named()} - names)

    def require_features(
        self, names: Collection[str], source: str = "policy", text: Collection[str] = ()
    ) -> None:
        """Raise `InvalidPolicy` when a rule or trigger names a feature not in `names`, or
        one of the `text` features (a condition compares a number: `account_plan > 1` would
        fail every decision; plan and country are a segment's)."""
        unknown = self.unknown_features(set(names))
        if unknown:
            raise InvalidPolicy(
                f"{source}: rules or triggers name features the feature spec does not provide: "
                + ", ".join(unknown)
            )
        worded = [f"{where}: {feature}" for where, feature in self._named() if feature in text]
        if worded:
            raise InvalidPolicy(
                f"{source}: conditions compare numbers, and these features hold text: "
                + ", ".join(worded)
                + " (a segment's `when` takes a plan or a country)"
            )

    def triggered(self, features: Mapping[str, Any]) -> list[str]:
        """The trigger conditions an account's features meet (re-score it if any)."""
        return [f"{t.feature}>{t.above}" if t.above is not None else f"{t.feature}<{t.below}"
                for t in self.model.triggers if t.holds(features)]  # fmt: skip


def score_action(score: float, limits: Thresholds) -> Action:
    if score >= limits.suspend_account:
        return "suspend_account"
    if score >= limits.decline:
        return "decline"
    if score >= limits.review:
        return "review"
    return "allow"


def _networks(cidrs: list[str], where: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for i, cidr in enumerate(cidrs):
        try:
            out.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise InvalidPolicy(f"policy: {where}[{i}]: {cidr!r} is not an IP or CIDR") from None
    return out


def _in_networks(ip: str | None, nets: list[Any]) -> bool:
    if not ip or not nets:
        return False
    try:
        addr = parse_address(ip)
    except ValueError:
        return False
    # An IPv4 address written as IPv6 (::ffff:a.b.c.d, as a dual-stack socket reports it) is
    # the IPv4 address: listed as such, it must match.
    mapped = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else None
    return any(addr in net or (mapped is not None and mapped in net) for net in nets)


def _prefixed(prefix: str | None, deny: Lists) -> bool:
    return bool(prefix) and any(str(prefix).startswith(p) for p in deny.destination_prefix)


def parse_policy(raw: Any, source: str = "policy") -> Policy:
    if not isinstance(raw, dict):
        raise InvalidPolicy(f"{source}: expected a mapping with name and thresholds")
    try:
        model = PolicyModel.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        entry = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise InvalidPolicy(f"{source}: {entry}: {err['msg']}") from None
    payload = json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return Policy(model, hashlib.sha256(payload.encode()).hexdigest()[:16])


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader refusing a key written twice in one mapping (plain YAML keeps the
    last, silently: a second `lists:` block would drop the first's deny lists)."""


def _mapping(loader: _UniqueKeys, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: the loader merges it
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            twice = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: the constructor below says so
            continue
        if twice:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found the key {key!r} twice", key_node.start_mark,
            )  # fmt: skip
    return loader.construct_mapping(node, deep=deep)


_UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def parse_policy_text(
    text: str,
    source: str = "policy",
    features: Collection[str] | None = None,
    text_features: Collection[str] = (),
) -> Policy:
    """The policy in YAML `text`; with `features` (the spec's names), checked against them,
    and its conditions against the spec's `text_features`."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeys)  # a SafeLoader: no object construction
    except yaml.YAMLError as exc:
        raise InvalidPolicy(f"policy {source} is not valid YAML: {exc}") from exc
    except RecursionError:
        raise InvalidPolicy(f"policy {source} nests deeper than YAML can be read here") from None
    policy = parse_policy(raw, source)
    if features is not None:
        policy.require_features(features, source, text_features)
    return policy


def load_policy(
    path: str | Path,
    features: Collection[str] | None = None,
    text_features: Collection[str] = (),
) -> Policy:
    """The policy file at `path`, as the service's watcher reads it (UTF-8)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidPolicy(f"policy {path} cannot be read: {exc.strerror}") from exc
    return parse_policy_text(decode_policy(data, path), str(path), features, text_features)


def decode_policy(data: bytes, path: str | Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPolicy(f"policy {path} is not UTF-8 text: {exc}") from None


_NUMBERS = (int, float)  # a tuple: `int | float` is built at each call


def facts_of(event: Mapping[str, Any], features: Mapping[str, Any]) -> Facts:
    """What the policy looks at, from an event (or a stored decision's subject) and its
    features: the account's plan, country, trial and age come from the features."""
    age = features.get("account_age")
    trial = features.get("account_is_trial")
    country = features.get("account_country")
    plan = features.get("account_plan")
    return Facts(
        account_id=event.get("account_id"),
        ip=event.get("ip"),
        card_fp=event.get("card_fp"),
        bin_country=event.get("bin_country"),
        plan=plan if isinstance(plan, str) else None,
        country=country if isinstance(country, str) else None,
        trial=None if numeric(trial) != numeric(trial) else numeric(trial) == 1.0,
        account_age_days=age / 86_400 if isinstance(age, _NUMBERS) and _is_number(age) else None,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBERS) and not isinstance(value, bool) and value == value
