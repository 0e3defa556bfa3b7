"""Suspension flags: Redis's copy of the store's suspensions, and where it cannot be trusted."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace

from engine.accounts import AccountState
from engine.flags import SuspensionFlags
from engine.metrics import Metrics


class Redis:
    """The flags as `FeatureSource.set_strings` writes them."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def key(self, entity: str, value: object) -> str:
        return f"arb:{{{entity}:{value}}}"

    def set_strings(self, values: Mapping[str, str | None], index: str) -> None:
        for key, value in values.items():
            if value is None:
                self.values.pop(key, None)
            else:
                self.values[key] = value

    def members(self, index: str) -> list[str]:
        return list(self.values)


@dataclass
class Store:
    suspended: dict[str, str | None]
    asked: int = 0
    while_read: Callable[[], None] | None = None  # runs once the sync's read has its answer

    def account_status(self, account_id: str) -> AccountState:
        self.asked += 1
        decision = self.suspended.get(account_id)
        status = "suspended" if account_id in self.suspended else "active"
        if self.while_read is not None:  # the answer is given; something happens meanwhile
            self.while_read, run = None, self.while_read
            run()
        return AccountState(account_id, status, 1, decision, 1)  # type: ignore[arg-type]

    def suspended_accounts(self) -> dict[str, str | None]:
        answer = dict(self.suspended)
        if self.while_read is not None:
            self.while_read, run = None, self.while_read
            run()
        return answer


def reading(flag: str | None, unknown: frozenset[str] = frozenset()) -> SimpleNamespace:
    return SimpleNamespace(features={}, applied=True, flags=(flag,), unknown=unknown)


def flags_for(store: Store) -> tuple[SuspensionFlags, Redis]:
    redis = Redis()
    flags = SuspensionFlags(redis, store, Metrics(), "account")  # type: ignore[arg-type]
    return flags, redis


def test_an_account_held_suspended_in_memory_is_asked_of_the_store_when_its_flag_is_gone():
    # Redis restarted empty and an event rebuilt the account's features: Redis knows the
    # account (not `unknown`) but has no flag. Memory says suspended: the store decides.
    store = Store({"a1": "d1"})
    flags, redis = flags_for(store)
    flags.sync()
    redis.values.clear()
    assert flags.needs_store("a1", reading(None))
    assert flags.is_suspended("a1", reading(None)) is True
    assert redis.values == {flags.key("a1"): "d1"}  # flagged again
    # An account memory holds active and Redis knows: no look-up.
    assert not flags.needs_store("a2", reading(None))
    assert flags.is_suspended("a2", reading(None)) is False
    assert store.asked == 1


def test_a_lift_by_another_process_is_asked_once_then_forgotten():
    store = Store({"a1": "d1"})
    flags, redis = flags_for(store)
    flags.sync()
    del store.suspended["a1"]  # reinstated elsewhere; that process cleared the flag
    redis.values.clear()
    assert flags.is_suspended("a1", reading(None)) is False
    assert flags.known_suspended("a1") is False
    assert not flags.needs_store("a1", reading(None))
    assert store.asked == 1


def test_a_reinstatement_during_a_syncs_read_is_not_flagged_again_by_it():
    store = Store({"a1": "d1"})
    flags, redis = flags_for(store)
    flags.sync()
    assert redis.values == {flags.key("a1"): "d1"}

    def reinstate() -> None:  # committed after the sync's read, its flag cleared at once
        del store.suspended["a1"]
        flags.set({"a1": None})

    store.while_read = reinstate
    flags.sync(stale=["a1"])
    assert redis.values == {}
    assert flags.known_suspended("a1") is False


def test_a_suspension_made_while_the_store_answered_active_is_not_forgotten():
    store = Store({"a1": "d1"})
    flags, redis = flags_for(store)
    flags.sync()
    del store.suspended["a1"]  # lifted elsewhere; then suspended again here, during the read
    redis.values.clear()

    def suspend_again() -> None:
        store.suspended["a1"] = "d2"
        flags.set({"a1": "d2"})

    store.while_read = suspend_again
    assert flags.is_suspended("a1", reading(None)) is False  # the store's answer, as read
    assert flags.known_suspended("a1") is True  # the newer change stands
    assert redis.values == {flags.key("a1"): "d2"}
    flags.sync(stale=flags.flagged())
    assert redis.values == {flags.key("a1"): "d2"}


def test_the_event_loops_caller_never_asks_the_store():
    store = Store({"a1": "d1"})
    flags, redis = flags_for(store)
    flags.sync()
    redis.values.clear()
    assert flags.is_suspended("a1", reading(None), doubtful=False) is False
    assert store.asked == 0
