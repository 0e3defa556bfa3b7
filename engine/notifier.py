"""The outbox's delivery worker: customer notifications to a webhook, retried with backoff.

`Notifier.run_once(now)` claims the due entries (leased, so several workers in several
processes never hold the same entry at once), hands each to `send`, and marks it delivered, or
failed and due again after `Backoff.delay_ms(attempt)`, or dead once `max_attempts` attempts
have failed. Nothing is deleted: a dead entry stays in the outbox for `arbiter notify status`.
Delivery is at least once; receivers deduplicate by the `Idempotency-Key` header (the entry's
id). See docs/notifications.md.

`send(notification)` returns when the receiver has the notification and raises anything else
when it does not; `WebhookSender` is the HTTP one. The worker knows nothing of settings: the
CLI (`arbiter notify run`) and the app factory build it from them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import httpx

from engine.outbox import Notification
from engine.store import now_ms

log = logging.getLogger("arbiter.notifier")

Send = Callable[[Notification], None]
_MAX_BODY_IN_ERROR = 200
_LEASE_MARGIN_MS = 30_000
DEFAULT_BATCH = 20


class NotificationStore(Protocol):
    """What the worker needs of `engine.store.DecisionStore`."""

    def pending_notifications(
        self, now_ms: int, limit: int = 100, *, lease_ms: int = 30_000
    ) -> list[Notification]: ...

    def mark_delivered(self, notification_id: int, *, at: int | None = None) -> None: ...

    def mark_failed(
        self, notification_id: int, error: str, next_attempt_at: int, dead: bool
    ) -> None: ...


class DeliveryFailed(Exception):
    """The receiver did not take the notification (its answer, or why there was none)."""


@dataclass(frozen=True)
class Backoff:
    """Delay before the next attempt: `base_s * 2**attempt`, at most `cap_s` (no jitter:
    entries failing together were claimed together and are retried in one batch anyway)."""

    base_s: float
    cap_s: float = 3600.0

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError(f"backoff needs 0 < base ({self.base_s}) <= cap ({self.cap_s})")

    def delay_ms(self, attempt: int) -> int:
        """After failed attempt number `attempt` + 1 (`attempt` failures before it)."""
        exponent = min(attempt, 62)  # 2**62 s is past any cap; avoids float overflow
        return int(min(self.base_s * 2.0**exponent, self.cap_s) * 1000)


class RunCounts(NamedTuple):
    """What one `run_once` did with the entries it claimed."""

    delivered: int
    retried: int
    dead: int

    @property
    def claimed(self) -> int:
        return self.delivered + self.retried + self.dead


class DeliveryCounters:
    """Totals since the worker started, for `/metrics` (monotonic counters)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.delivered = 0
        self.failed = 0  # every failed attempt, including those that made an entry dead
        self.dead = 0

    def add(self, counts: RunCounts) -> None:
        with self._lock:
            self.delivered += counts.delivered
            self.failed += counts.retried + counts.dead
            self.dead += counts.dead

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"delivered": self.delivered, "failed": self.failed, "dead": self.dead}


class Notifier:
    def __init__(
        self,
        store: NotificationStore,
        send: Send,
        *,
        max_attempts: int,
        backoff: Backoff,
        batch: int = DEFAULT_BATCH,
        lease_ms: int = 120_000,
    ) -> None:
        """`lease_ms` must outlast a batch of slow deliveries (`batch` times the sender's
        timeout), else another worker takes an entry still being sent and delivers it twice."""
        if max_attempts < 1 or batch < 1 or lease_ms < 1:
            raise ValueError(
                f"max_attempts ({max_attempts}), batch ({batch}) and lease_ms ({lease_ms}) "
                "must be positive"
            )
        self.store = store
        self.send = send
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.batch = batch
        self.lease_ms = lease_ms
        self.counters = DeliveryCounters()

    def close(self) -> None:
        """Release the sender's connections, if it holds any."""
        if isinstance(self.send, WebhookSender):
            self.send.close()

    def run_once(self, now_ms: int) -> RunCounts:
        """Deliver up to `batch` due entries, as of `now_ms`; what became of them. Once half
        the lease is spent (slow receivers), the rest of the batch is left to its lease: taken
        again when it ends, never sent while another worker may hold it."""
        delivered = retried = dead = 0
        began = time.monotonic()
        for notification in self.store.pending_notifications(
            now_ms, self.batch, lease_ms=self.lease_ms
        ):
            spent_ms = int((time.monotonic() - began) * 1000)
            if spent_ms > self.lease_ms // 2:
                log.warning("notification batch took %d ms of its %d ms lease: the rest waits "
                            "for the lease to end", spent_ms, self.lease_ms)  # fmt: skip
                break
            try:
                self.send(notification)
            except Exception as exc:  # any failure to deliver is recorded and retried
                error = str(exc) if isinstance(exc, DeliveryFailed) else _describe(exc)
                gives_up = notification.attempts + 1 >= self.max_attempts
                # From when it failed (in whole seconds), not from the batch's start: after a
                # slow batch, an early failure's wait is not spent already.
                failed_at = now_ms + int(time.monotonic() - began) * 1000
                next_at = failed_at + self.backoff.delay_ms(notification.attempts)
                self.store.mark_failed(notification.id, error, next_at, dead=gives_up)
                if gives_up:
                    dead += 1
                    log.error(
                        "notification %d dead after %d attempts: %s",
                        notification.id, notification.attempts + 1, error,
                    )  # fmt: skip
                else:
                    retried += 1
                    log.warning("notification %d failed, retry at %d: %s",
                                notification.id, next_at, error)  # fmt: skip
            else:
                self.store.mark_delivered(notification.id, at=now_ms)
                delivered += 1
        counts = RunCounts(delivered, retried, dead)
        self.counters.add(counts)
        return counts

    def drain(self, now_ms: int) -> RunCounts:
        """`run_once` until no entry is due at `now_ms` (failed ones are due later)."""
        total = RunCounts(0, 0, 0)
        while True:
            counts = self.run_once(now_ms)
            total = RunCounts(*(a + b for a, b in zip(total, counts, strict=True)))
            if counts.claimed < self.batch:
                return total

    def run_forever(
        self, stop: threading.Event, interval: float = 1.0, clock: Callable[[], int] = now_ms
    ) -> None:
        """Deliver what is due every `interval` seconds (at once while batches come full),
        until `stop` is set. A failing store is logged and tried again; it never ends the loop."""
        while not stop.is_set():
            try:
                counts = self.run_once(clock())
            except Exception:
                log.exception("notification delivery failed; trying again in %.1f s", interval)
                counts = RunCounts(0, 0, 0)
            if counts.claimed < self.batch:
                stop.wait(interval)


class WebhookSender:
    """POSTs a notification's payload as JSON to `url`; 2xx is delivered, anything else (or no
    whole answer within `timeout_s`) raises `DeliveryFailed`. Redirects are not followed.
    httpx's timeout bounds each phase (connect, write, each read), so an answer whose body
    drips in is also cut, as it comes, once `timeout_s` have passed since the request began
    (its status line and headers are bounded per read only)."""

    def __init__(self, url: str, *, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._client = httpx.Client(timeout=timeout_s, headers={"User-Agent": "arbiter-notifier/1"})

    def __call__(self, notification: Notification) -> None:
        headers = {
            "Idempotency-Key": str(notification.id),
            "X-Arbiter-Event": notification.kind,
            "X-Arbiter-Attempt": str(notification.attempts + 1),
        }
        deadline = time.monotonic() + self.timeout_s
        try:
            with self._client.stream(
                "POST", self.url, json=notification.payload, headers=headers
            ) as response:
                head = bytearray()
                for chunk in response.iter_bytes():
                    if len(head) < _MAX_BODY_IN_ERROR:
                        head += chunk[: _MAX_BODY_IN_ERROR - len(head)]
                    if time.monotonic() > deadline:
                        raise DeliveryFailed(
                            f"no whole answer within {self.timeout_s:g} s (HTTP "
                            f"{response.status_code}, its body still coming)"
                        )
        except httpx.HTTPError as exc:
            raise DeliveryFailed(_describe(exc)) from exc
        if not response.is_success:
            body = head.decode("utf-8", "replace").strip()
            raise DeliveryFailed(f"HTTP {response.status_code}: {body}".rstrip(": "))

    def close(self) -> None:
        self._client.close()


def webhook_notifier(
    store: NotificationStore,
    url: str,
    *,
    timeout_s: float,
    max_attempts: int,
    backoff_s: float,
    batch: int = DEFAULT_BATCH,
) -> Notifier:
    """A `Notifier` POSTing to `url`, its lease long enough for a batch of timeouts;
    `close()` it to release its connections."""
    lease = int(batch * timeout_s * 1000) + _LEASE_MARGIN_MS
    return Notifier(
        store, WebhookSender(url, timeout_s=timeout_s), max_attempts=max_attempts,
        backoff=Backoff(backoff_s), batch=batch, lease_ms=lease,
    )  # fmt: skip


class NotifierThread:
    """`Notifier.run_forever` in a daemon thread (the app's lifespan); `stop()` ends the loop,
    waits for the delivery in flight and closes the notifier."""

    def __init__(self, notifier: Notifier, *, interval: float = 1.0) -> None:
        self.notifier = notifier
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=notifier.run_forever, args=(self._stop, interval),
            name="arbiter-notifier", daemon=True,
        )  # fmt: skip

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the loop to end and wait for the delivery in flight; False if it is still
        running after `timeout` (it is a daemon: it does not keep the process alive)."""
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        self.notifier.close()
        return True


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc) or 'no detail'}"
