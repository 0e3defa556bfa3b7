"""Backtesting a proposed policy on the stored decisions (`arbiter policy backtest`).

Each stored decision with a score is decided again under the proposed policy from its recorded
score and feature values; `WhatIf` counts the moves from each recorded action to each new one.
Decisions made without a score (degraded, account already suspended) cannot be replayed and are
counted apart, and so are payment decisions a card, IP or BIN-country list decided (their
facts are not in the record: replayed, they would move for no change of the policy), and
allow-listed ones unless the proposed policy allow-lists their account. Account decisions
(`subject_type: account`) are replayed through the policy's `account` section.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from engine.policy import SEVERITY, Action, Policy, facts_of
from engine.records import StoredDecision


@dataclass
class WhatIf:
    """Stored decisions replayed under a proposed policy."""

    moves: Counter[tuple[Action, Action]] = field(default_factory=Counter)  # (was, would be)
    unscored: Counter[tuple[str, Action]] = field(default_factory=Counter)  # (why, action)
    versions: Counter[str] = field(default_factory=Counter)  # policy versions replayed

    @property
    def replayed(self) -> int:
        return sum(self.moves.values())

    @property
    def changed(self) -> int:
        return sum(n for (was, now), n in self.moves.items() if was != now)

    @property
    def stricter(self) -> int:
        return sum(n for (was, now), n in self.moves.items() if SEVERITY[now] > SEVERITY[was])


def replay(policy: Policy, decisions: Iterable[StoredDecision]) -> WhatIf:
    """What `policy` would have decided on each stored decision that has a score. Only the
    account's own facts are in the record (its id and its features), so IP, card, BIN country
    and destination lists of the proposed policy cannot apply in a replay."""
    result = WhatIf()
    for stored in decisions:
        record = stored.record
        if record.subject_type == "account" and not record.degraded:
            # An account decision replays through the account section (its rules need only
            # the recorded features; no score means no account model was promoted). Whether a
            # trigger would have asked for it at all needs the event stream: not replayed.
            account = policy.decide_account(record.score, record.features, record.account_id)
            result.moves[(record.action, account.action)] += 1
            result.versions[record.policy_version] += 1
            continue
        if record.score is None:
            why = "degraded" if record.degraded else _unscored_reason(stored)
            result.unscored[(why, record.action)] += 1
            continue
        codes = {reason.code for reason in record.reasons}
        if codes & _UNSEEN_LISTS:
            result.unscored[(UNSEEN, record.action)] += 1
            continue
        if "ALLOW_LISTED" in codes and record.account_id not in policy.model.lists.allow.account:
            result.unscored[(ALLOWED, record.action)] += 1
            continue
        facts = facts_of({"account_id": record.account_id}, record.features)
        verdict = policy.decide(record.score, record.features, facts)
        result.moves[(record.action, verdict.action)] += 1
        result.versions[record.policy_version] += 1
    return result


# Lists whose facts (the card, the IP, the BIN country) a record does not keep.
_UNSEEN_LISTS = frozenset({"DENY_LISTED_CARD", "DENY_LISTED_IP", "DENY_LISTED_BIN_COUNTRY"})
UNSEEN = "listed by card, IP or BIN country"
# The record does not say which allow list (account, card, IP) let it through.
ALLOWED = "allow-listed, the proposal not by its account"


def _unscored_reason(stored: StoredDecision) -> str:
    codes = {reason.code for reason in stored.record.reasons}
    return "account suspended" if "ACCOUNT_SUSPENDED" in codes else "not scored"
