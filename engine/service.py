"""The decision service: a payment in, a durable decision out.

`DecisionService.score_payment` records the payment as a `payment` event, reads the account's
features as of just before it (the same Redis round trip applies it), scores it with the
champion, lets the policy decide, and stores the decision (with the account's suspension and
the customer's notification) before returning it. `payment_id` is the idempotency key: a
retry gets the stored decision back, and the online store counts the event (`pay:<id>`) once.
A payment the service decided not to charge (`decline`, `suspend_account`) is then counted as
declined instead of approved, once its decision is stored (`engine.restatements`).

What the service needs from the packages below is stated as small protocols in `engine.ports`.
Suspension flags are `engine.flags`, customer notifications `engine.notices`, the event
pipeline's batches `engine.intake`, account decisions `engine.account_decisions`. The policy,
the model and the shadow model are plain attributes: a reload builds the new object fully,
then rebinds the attribute, so a request in flight finishes on the one it started with.

With a `shadow` model (the registry's `challenger`), a scored payment is also scored by it, on
the same feature vector; its version and score go into the record's `shadow` field and never
change the action. A failing shadow is logged and left out of the record.

The service counts what `/metrics` shows (`engine.metrics.Metrics`): decisions by action (a
retry is not a new decision), the time to decide, and the failures of Redis and the store.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from engine.account_decisions import account_record
from engine.errors import (
    ModelNotLoaded,
    PaymentConflict,
    StoreError,
    StoreUnavailable,
)
from engine.flags import SuspensionFlags
from engine.metrics import Metrics, elapsed_ms
from engine.notices import notification_of
from engine.policy import SEVERITY, Policy, Verdict, facts_of
from engine.ports import ChampionModel, DecisionSink, FeatureSource, ReadingLike
from engine.reasons import explain, reasons_of
from engine.records import Decision, DecisionRecord, StoredDecision, payment_differs
from engine.restatements import Outcome, Restatements
from features.errors import FeatureStoreUnavailable
from features.events import payment_event

log = logging.getLogger("arbiter.service")
T = TypeVar("T")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class _Pending:
    """A payment between its validation and its features: what the rest of the decision uses,
    taken once (a policy or model swap meanwhile does not change this request's)."""

    started: float
    read_at: float
    event: dict[str, Any]
    base: dict[str, Any]
    policy: Policy
    model: ChampionModel | None
    shadow: ChampionModel | None
    flag: str


class DecisionService:
    def __init__(
        self,
        *,
        features: FeatureSource,
        store: DecisionSink,
        policy: Policy,
        model: ChampionModel | None,
        feature_spec_version: str,
        descriptions: Mapping[str, str] | None = None,
        clock: Callable[[], int] = _now_ms,
        shadow: ChampionModel | None = None,
        metrics: Metrics | None = None,
        account_model: ChampionModel | None = None,
        account_entity: str = "account",
    ) -> None:
        self.features = features
        self.store = store
        self.policy = policy
        self.model = model
        self.feature_spec_version = feature_spec_version
        # What a `FEATURE:<name>` reason calls the feature (the reasons catalogue's wording once
        # the app has loaded it), and which features are flags (their state is said too).
        self.descriptions = dict(descriptions or {})
        # The customer's words for rule and list reasons (the catalogue's), for the notices.
        self.customer_texts: dict[str, str] = {}
        self.flag_features: frozenset[str] = frozenset()
        self.clock = clock
        self.shadow = shadow
        self.metrics = metrics if metrics is not None else Metrics()
        self.account_model = account_model
        self.account_entity = account_entity
        self.flags = SuspensionFlags(features, store, self.metrics, account_entity)
        self.restatements = Restatements(features, self.metrics)
        # How long a payment waits for Redis before it is decided degraded (None: the client's
        # own socket timeout).
        self.redis_budget_s: float | None = None

    # --- payments -----------------------------------------------------------------------------

    def score_payment(self, payment: Mapping[str, Any]) -> Decision:
        """Decide on one payment (fields of a `payment` event without `event_id`, `type` and
        `status`; `ts` defaults to now). Raises `InvalidEvent` for a bad payment and
        `ModelNotLoaded` when there is no model to score with."""
        pending = self._begin_payment(payment)
        reading: ReadingLike | None = None
        try:
            try:
                # Features, the suspension flag and the payment counted: one Redis round trip.
                reading = self.features.read_for_decision(pending.event, [pending.flag])
            except FeatureStoreUnavailable:
                outcome = self._without_features(pending)
            else:
                outcome = self._finish_payment(pending, reading)
            decision = (
                outcome
                if isinstance(outcome, Decision)
                else self._append(outcome, pending.event.get("amount"))
            )
            if self.restatements.due(decision, reading):  # not charged: counted as declined
                self.restatements.restate(pending.event)
        except StoreError:
            self.metrics.dependency_errors.inc("store")
            raise
        self._count(decision, pending.started)
        return decision

    def report_outcome(self, payment: Mapping[str, Any], status: str) -> Outcome:
        """The outcome (`approved` or `declined`) of a scored payment, sent with the payment's
        fields as scored (`engine.restatements.Restatements.report`)."""
        stored = self.store.get_by_payment(str(payment.get("payment_id")))
        event = payment_event(payment, stored.record.created_at if stored else self.clock())
        return self.restatements.report(stored, event, status, timed=payment.get("ts") is not None)

    async def score_payment_async(self, payment: Mapping[str, Any]) -> Decision:
        """`score_payment` for an event loop: the Redis round trip and the group commit are
        awaited (the loop serves other requests meanwhile, and one process gathers many
        decisions into each transaction); the rest is CPU on the loop's thread."""
        pending = self._begin_payment(payment)
        read_async = getattr(self.features, "read_for_decision_async", None)
        counted: ReadingLike | None = None  # the round trip that counted the payment
        try:
            try:
                if read_async is not None:
                    reading = await self._within_budget(read_async(pending.event, [pending.flag]))
                else:
                    reading = self.features.read_for_decision(pending.event, [pending.flag])
            except FeatureStoreUnavailable:
                if self.flags.known is None:  # before the first sync: the store is asked
                    outcome = await asyncio.to_thread(self._without_features, pending)
                else:  # from memory: no I/O
                    outcome = self._without_features(pending)
            else:
                counted = reading
                if self._needs_store(pending, reading):  # a retry, or a status Redis lacks
                    outcome = await asyncio.to_thread(self._finish_payment, pending, reading)
                else:  # the common case: CPU only, on the loop (the store is not asked)
                    outcome = self._finish_payment(pending, reading, on_loop=True)
            if isinstance(outcome, Decision):
                decision = outcome
            else:
                decision = await self._append_async(outcome, pending.event.get("amount"))
            if self.restatements.due(decision, counted):  # stored, not charged: declined
                await self.restatements.restate_async(pending.event, self._within_budget)
        except StoreError:
            self.metrics.dependency_errors.inc("store")
            raise
        self._count(decision, pending.started)
        return decision

    async def _within_budget(self, reading: Awaitable[T]) -> T:
        """The Redis round trip, or `FeatureStoreUnavailable` past `redis_budget_s` (a slow
        Redis must not hold billing up: the payment is decided degraded instead). A late
        round trip is not cut short: it finishes in the background and hands its connection
        back (cutting it would drop the connection, and the next payments would pay for a
        reconnect inside their own budget); a payment it counted meanwhile is a retry's to
        find, with its degraded decision."""
        if self.redis_budget_s is None:
            return await reading
        task = asyncio.ensure_future(reading)
        task.add_done_callback(_quiet)  # also when this request is cancelled meanwhile
        done, _ = await asyncio.wait({task}, timeout=self.redis_budget_s)
        if task in done:
            return task.result()
        ms = round(self.redis_budget_s * 1000)
        raise FeatureStoreUnavailable(f"Redis did not answer within {ms} ms")

    def _needs_store(self, pending: _Pending, reading: ReadingLike) -> bool:
        """Whether finishing this payment reads the store (blocking I/O, kept off the loop)."""
        return not reading.applied or self.flags.needs_store(pending.base["account_id"], reading)

    def _count(self, decision: Decision, started: float) -> None:
        if not decision.replayed:
            self.metrics.decisions.inc(decision.action)
            self.metrics.score_seconds.observe(time.perf_counter() - started)

    def _begin_payment(self, payment: Mapping[str, Any]) -> _Pending:
        started = time.perf_counter()
        now = self.clock()
        event = payment_event(payment, now)
        payment_id, account_id = str(event["payment_id"]), str(event["account_id"])
        # One of each for the whole request, however many swaps happen meanwhile.
        policy, model, shadow = self.policy, self.model, self.shadow
        base: dict[str, Any] = dict(
            decision_id=str(uuid.uuid4()), created_at=now, subject_type="payment",
            subject_id=payment_id, account_id=account_id, payment_id=payment_id,
            feature_spec_version=self.feature_spec_version, policy_version=policy.version,
        )  # fmt: skip
        return _Pending(started, time.perf_counter(), event, base, policy, model, shadow,
                        self.flags.key(account_id))  # fmt: skip

    def _without_features(self, pending: _Pending) -> Decision | DecisionRecord:
        """Redis did not answer: a suspended account is still declined, the rest is decided
        degraded. Whether the account is suspended comes from memory (`SuspensionFlags.known`,
        synced from the store every `flag_sync_seconds`), or from the store before the first
        sync. A retry gets its first decision back from the store's append, which keeps one
        decision per payment."""
        self.metrics.dependency_errors.inc("redis")
        base, started = pending.base, pending.started
        timings = {"features_ms": elapsed_ms(pending.read_at)}  # how long Redis was waited for
        suspended = self.flags.known_suspended(base["account_id"])
        if suspended is None:  # before the first sync; a store that is down too: active
            state = self.flags.stored_status(base["account_id"])
            suspended = state is not None and state.status == "suspended"
        if suspended:
            return self._suspended(base, started)
        return self._degraded(base, pending.event, pending.policy, started, timings)

    def _finish_payment(
        self, pending: _Pending, reading: ReadingLike, *, on_loop: bool = False
    ) -> Decision | DecisionRecord:
        """The decision to store (a record), or the one stored before (a retry). `on_loop`:
        `_needs_store` said no store read is needed, and none is made."""
        base, started, event = pending.base, pending.started, pending.event
        policy, model, shadow = pending.policy, pending.model, pending.shadow
        payment_id, account_id = base["payment_id"], base["account_id"]
        timings: dict[str, float] = {"features_ms": elapsed_ms(pending.read_at)}
        if not reading.applied:
            # The payment's event was counted before: a retry (or a concurrent duplicate, which
            # the store's append resolves under its lock). A new payment skips this look-up.
            previous = self.store.get_by_payment(payment_id)
            if previous is not None:
                _same_payment(previous, account_id, event.get("amount"))
                return Decision.of(replace(previous, replayed=True))
        if self.flags.is_suspended(account_id, reading, doubtful=False if on_loop else None):
            return self._suspended(base, started)
        if model is None:
            raise ModelNotLoaded("no model is loaded: promote a champion, then check /readyz")
        features = reading.features
        mark = time.perf_counter()
        row = model.scorer.vector(features)
        score = model.scorer.score(row)
        timings["model_ms"] = elapsed_ms(mark)
        shadowed = None
        if shadow is not None:
            mark = time.perf_counter()
            shadowed = _shadow_score(shadow, features)
            timings["shadow_ms"] = elapsed_ms(mark)
        mark = time.perf_counter()
        facts = facts_of(event, features)
        verdict = policy.decide(score.probability, features, facts)
        timings["policy_ms"] = elapsed_ms(mark)
        codes = list(verdict.reasons)
        contributions = explain(model, row, score.probability, verdict, codes, timings)
        timings["total_ms"] = elapsed_ms(started)
        return DecisionRecord(
            **base, action=verdict.action, score=score.probability, raw_margin=score.margin,
            model_name=model.name, model_version=model.version, model_run_id=model.run_id,
            segment=verdict.segment, rules_fired=verdict.rules_fired,
            reasons=tuple(reasons_of(codes, self.descriptions, features, self.flag_features)),
            features=features, contributions=contributions.values if contributions else None,
            base_value=contributions.base if contributions else None, shadow=shadowed,
            timings=timings,
        )  # fmt: skip

    def _suspended(self, base: dict[str, Any], started: float) -> DecisionRecord:
        return DecisionRecord(
            **base, action="decline", reasons=tuple(reasons_of(["ACCOUNT_SUSPENDED"])),
            timings=_timings(started),
        )  # fmt: skip

    def _degraded(
        self,
        base: dict[str, Any],
        event: Mapping[str, Any],
        policy: Policy,
        started: float,
        timings: Mapping[str, float] | None = None,
    ) -> DecisionRecord:
        """Features cannot be read: the lists still apply, the rest is the policy's fallback."""
        verdict: Verdict = policy.decide(None, {}, facts_of(event, {}))
        action = max(verdict.action, policy.model.degraded_action, key=SEVERITY.__getitem__)
        codes = [*verdict.reasons, "FEATURES_UNAVAILABLE"]
        return DecisionRecord(
            **base, action=action, degraded=True, segment=verdict.segment,
            reasons=tuple(reasons_of(codes, self.descriptions)),
            timings={**(timings or {}), **_timings(started)},
        )  # fmt: skip

    # --- accounts -----------------------------------------------------------------------------

    def score_account(
        self,
        account_id: str,
        *,
        event: Mapping[str, Any] | None = None,
        triggers: Sequence[str] = (),
        destinations: Sequence[str] = (),
    ) -> Decision:
        """An account-level decision (no payment involved): on demand, or after `event` crossed
        the policy's `triggers` or the account's traffic went to the deny-listed
        `destinations`. The account's features as of now (or just after `event`), the account
        model's score when one is loaded (else the policy's account rules alone), the policy's
        account section. Raises `AccountSuspended` for an account suspended already.
        """
        started = time.perf_counter()
        try:
            # One account decision at a time per account in this process: two batches at
            # once would both read the account active and suspend it twice, with two notices
            # (across processes the store sends the second no notice: engine.store).
            lock = _ACCOUNT_LOCKS[zlib.crc32(account_id.encode()) % len(_ACCOUNT_LOCKS)]
            if not lock.acquire(timeout=ACCOUNT_LOCK_S):  # a store that hangs: 503, resend
                raise StoreUnavailable(
                    f"account {account_id}: an earlier decision is still waiting for the store"
                )
            try:
                record = account_record(
                    self, account_id, event, tuple(triggers), tuple(destinations), started
                )
                decision = self._append(record)
            finally:
                lock.release()
        except StoreError:
            self.metrics.dependency_errors.inc("store")
            raise
        except FeatureStoreUnavailable:
            self.metrics.dependency_errors.inc("redis")
            raise
        self._count(decision, started)
        return decision

    # --- storing --------------------------------------------------------------------------------

    def _append(self, record: DecisionRecord, amount: float | None = None) -> Decision:
        """Store `record`; `amount`, a payment's, checks a retry the store finds decided."""
        stored = self.store.append_decision(record, **_with(record, self.customer_texts))
        return self._stored(record, stored, amount=amount)

    async def _append_async(self, record: DecisionRecord, amount: float | None) -> Decision:
        submit = getattr(self.store, "submit", None)
        if submit is None:  # a store without a writer thread: the direct write, off the loop
            return await asyncio.to_thread(self._append, record, amount)
        mark = time.perf_counter()
        stored = await asyncio.wrap_future(submit(record, **_with(record, self.customer_texts)))
        waited = elapsed_ms(mark)
        if record.action == "suspend_account" and not stored.replayed:
            # The flag write is blocking Redis I/O: off the loop too (rare: suspensions only).
            return await asyncio.to_thread(self._stored, record, stored, waited, amount)
        return self._stored(record, stored, waited, amount)

    def _stored(
        self,
        record: DecisionRecord,
        stored: StoredDecision,
        waited: float | None = None,
        amount: float | None = None,
    ) -> Decision:
        if stored.replayed:  # decided before: its decision answers only the same payment
            _same_payment(stored, record.account_id, amount)
        elif record.action == "suspend_account":
            self.flags.set({record.account_id: record.decision_id})
        return Decision.of(stored) if waited is None else Decision.of(stored, store_ms=waited)


_ACCOUNT_LOCKS = tuple(threading.Lock() for _ in range(64))
ACCOUNT_LOCK_S = 30.0  # how long an account decision waits for the one before it


def _same_payment(previous: StoredDecision, account_id: str, amount: float | None) -> None:
    """`PaymentConflict` when a retry of a decided payment_id is not that payment."""
    field = payment_differs(previous.record, account_id, amount)
    if field is not None:
        raise PaymentConflict(
            f"payment {previous.record.payment_id} was scored with another {field}: a "
            "payment_id names one payment (a retry sends the same fields; a new payment needs "
            "a new payment_id)",
            field=field,
        )


def _with(record: DecisionRecord, customer_texts: Mapping[str, str]) -> dict[str, Any]:
    """What goes into a decision's transaction beside it: the suspension, the notification."""
    return {
        "suspend": record.action == "suspend_account",
        "notification": (
            notification_of(record, customer_texts) if record.action != "allow" else None
        ),
    }


def _quiet(task: asyncio.Future[Any]) -> None:
    """Collect a late round trip's outcome (an exception unread would be logged as lost)."""
    if not task.cancelled():
        task.exception()


def _shadow_score(shadow: ChampionModel, features: Mapping[str, Any]) -> dict[str, Any] | None:
    """The challenger's opinion, for the record only. Whatever goes wrong with it must not
    touch the decision, hence the broad catch."""
    try:
        score = shadow.scorer.score(shadow.scorer.vector(features))
    except Exception:
        log.exception("shadow model %s version %s failed to score", shadow.name, shadow.version)
        return None
    return {"version": shadow.version, "score": score.probability}


def _timings(started: float) -> dict[str, float]:
    return {"total_ms": elapsed_ms(started)}
