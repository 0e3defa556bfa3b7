"""Suspension flags: Redis's copy of which accounts the store holds suspended.

The store is the truth; the scoring hot path reads a copy, one flag per suspended account
beside the account's features (`SuspensionFlags.key`: the account's hash tag), in the same
Redis round trip as the features. The service sets a flag when a decision suspends an account
and re-sets it when it finds an account Redis knows nothing about suspended in the store
(`is_suspended`), or one without a flag that the process's memory (`known`, the last sync and
the process's own changes) holds suspended: Redis lost its data and an event or a payment
rebuilt the account's features before the flag came back. What can still leave a flag missing
or stale (a flag write that failed, a reinstatement done while Redis was down) is repaired by
`FlagSync`: every `interval_s` seconds the flags of every suspended account are written, and
flags of accounts no longer suspended are removed (an index set in Redis lists every flag, so no
key scan is needed). A sync writes what memory holds once its store read is done, its changes
included, and a change's own write waits for a sync's: a reinstatement made while a sync reads
is not flagged again by it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping

from engine.accounts import AccountState
from engine.errors import StoreError, StoreUnavailable
from engine.metrics import Metrics
from engine.poller import Watcher
from engine.ports import DecisionSink, FeatureSource, ReadingLike
from features.errors import FeatureStoreUnavailable

log = logging.getLogger("arbiter.flags")


class SuspensionFlags:
    def __init__(
        self, features: FeatureSource, store: DecisionSink, metrics: Metrics, entity: str
    ) -> None:
        self.features = features
        self.store = store
        self.metrics = metrics
        self.entity = entity  # the feature spec's entity keyed by account_id
        self.index = f"{features.key(entity, '')}:suspended-index"  # every flag key
        # The suspended accounts as of the last sync, with this process's changes since (None
        # before the first sync): what a payment goes by while Redis does not answer. Rebound,
        # never changed in place, under `_lock`; `_changes` are the changes made since the
        # last refresh began (a refresh must not undo a change its store read missed).
        self.known: dict[str, str] | None = None
        self._lock = threading.Lock()
        self._writes = threading.Lock()  # a change's Redis write, a sync's: one at a time
        self._changes: list[tuple[float, str, str | None]] = []

    def key(self, account_id: str) -> str:
        """The Redis key flagging a suspended account (its value: the decision behind it). It
        shares the account's hash tag, so it sits beside the account's features."""
        return f"{self.features.key(self.entity, account_id)}:suspended"

    def is_suspended(
        self, account_id: str, reading: ReadingLike, *, doubtful: bool | None = None
    ) -> bool:
        """From a reading that asked for `key(account_id)` first: the flag decides, except for
        an account Redis knows nothing about (new, idle past its ttl, or lost with a Redis
        restart), or one with no flag that this process's memory holds suspended: then the
        store does, and the flag is set again. The second case is a Redis that lost its data
        while the account's features came back before its flag (an event or a payment since
        the flush rebuilt them; the next sync would restore the flag, up to `interval_s`
        later), or a reinstatement by another process since the last sync. `doubtful`: what
        `needs_store` said for this reading (the event loop's caller, which must not ask the
        store, passes False), else it is worked out here."""
        if reading.flags and reading.flags[0] is not None:
            return True
        if not (self._doubtful(account_id, reading) if doubtful is None else doubtful):
            return False
        asked = time.monotonic()
        state = self.stored_status(account_id)
        if state is None:  # the store does not answer: what the last sync said
            return bool(self.known_suspended(account_id))
        if state.status != "suspended":
            self._forget(account_id, asked)  # lifted by another process since the last sync
            return False
        self.set({account_id: state.decision_id or "suspended"})
        return True

    def _forget(self, account_id: str, asked: float) -> None:
        """Memory drops an account the store, asked at `asked`, says is active, unless this
        process changed its status since (a suspension committed during the read stands). Not
        a change of its own: a refresh under way may put it back, and the store is asked again."""
        with self._lock:
            if self.known is None or account_id not in self.known:
                return
            if any(at >= asked and a == account_id for at, a, _ in self._changes):
                return
            self.known = _applied(self.known, [(account_id, None)])

    def stored_status(self, account_id: str) -> AccountState | None:
        """The store's word on the account, or None when the store does not answer (counted
        and logged: the caller decides by memory instead, never refuses; docs/security.md)."""
        try:
            return self.store.account_status(account_id)
        except StoreUnavailable as exc:
            self.metrics.dependency_errors.inc("store")
            log.warning("account %s: the store cannot say its status (%s)", account_id, exc)
            return None

    def needs_store(self, account_id: str, reading: ReadingLike) -> bool:
        """Whether `is_suspended` would ask the store (blocking I/O) for this reading."""
        unflagged = not reading.flags or reading.flags[0] is None
        return unflagged and self._doubtful(account_id, reading)

    def _doubtful(self, account_id: str, reading: ReadingLike) -> bool:
        """An account without a flag whose status Redis cannot vouch for."""
        known = self.known
        return self.entity in reading.unknown or (known is not None and account_id in known)

    def set(self, accounts: Mapping[str, str | None]) -> None:
        """Flag (decision id) or unflag (None) accounts. Best effort: a flag Redis missed is
        set again by `sync` or by the store look-up of an account Redis does not know."""
        try:
            with self._writes:
                with self._lock:
                    now = time.monotonic()
                    self._changes += [(now, a, d) for a, d in accounts.items()]
                    if self.known is not None:
                        self.known = _applied(self.known, accounts.items())
                self.features.set_strings(
                    {self.key(a): v for a, v in accounts.items()}, index=self.index
                )
        except FeatureStoreUnavailable as exc:
            self.metrics.dependency_errors.inc("redis")
            log.warning("suspension flags not written (%s); the next sync writes them", exc)

    def known_suspended(self, account_id: str) -> bool | None:
        """From memory (the last sync and this process's changes since; up to one sync
        interval behind other processes' changes): None before the first sync."""
        known = self.known
        return None if known is None else account_id in known

    def flagged(self) -> list[str]:
        """The accounts Redis flags as suspended (from the flag index)."""
        prefix, suffix = self.key("\0").split("\0")
        return [k[len(prefix) : -len(suffix)] for k in self.features.members(self.index)]

    def refresh(self) -> dict[str, str]:
        """`known` from the store (with the changes made while it was read); returns what the
        store said."""
        began = time.monotonic()
        suspended = {a: d or "suspended" for a, d in self.store.suspended_accounts().items()}
        with self._lock:
            self._changes = [c for c in self._changes if c[0] >= began]
            self.known = _applied(suspended, ((a, d) for _, a, d in self._changes))
        return suspended

    def sync(self, stale: Iterable[str] = ()) -> int:
        """Make Redis's flags match the store: set every suspended account's, and clear those
        of the `stale` accounts (flagged in Redis) that are active again. Returns how many
        flags were written."""
        self.refresh()
        with self._writes:  # memory as of now: the store's word and every change since its read
            with self._lock:
                suspended = dict(self.known or {})
            values: dict[str, str | None] = dict(suspended)
            for account_id in stale:
                if account_id not in suspended:
                    values[account_id] = None
            if values:
                self.features.set_strings(
                    {self.key(a): v for a, v in values.items()}, index=self.index
                )
        return len(values)


class FlagSync(Watcher[int]):
    """`SuspensionFlags.sync` every `interval_s` seconds, in a background thread."""

    def __init__(self, flags: SuspensionFlags, *, interval_s: float) -> None:
        self.flags = flags
        self.last_error: str | None = None
        super().__init__(interval_s=interval_s, name="suspension-flag-sync")

    def _check(self) -> int | None:
        try:
            try:
                stale = self.flags.flagged()
            except FeatureStoreUnavailable:
                self.flags.refresh()  # Redis down: the memory payments go by is kept fresh
                raise
            written = self.flags.sync(stale=stale)
        except (FeatureStoreUnavailable, StoreError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            if message != self.last_error:
                log.warning("suspension flags not synced: %s", message)
            self.last_error = message
            return None
        self.last_error = None
        return written


def _applied(base: Mapping[str, str], changes: Iterable[tuple[str, str | None]]) -> dict[str, str]:
    out = dict(base)
    for account_id, decision in changes:
        if decision is None:
            out.pop(account_id, None)
        else:
            out[account_id] = decision
    return out
