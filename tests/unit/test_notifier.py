"""The delivery worker's backoff and its arguments, without a database or a receiver."""

from __future__ import annotations

import pytest

from engine.notifier import Backoff, Notifier, RunCounts


class NoStore:
    def pending_notifications(self, now_ms, limit=100, *, lease_ms=30_000):
        return []

    def mark_delivered(self, notification_id, *, at=None):
        raise AssertionError("nothing to mark")

    def mark_failed(self, notification_id, error, next_attempt_at, dead):
        raise AssertionError("nothing to mark")


def test_backoff_doubles_from_the_base_up_to_the_cap():
    backoff = Backoff(2, cap_s=60)
    assert [backoff.delay_ms(a) for a in range(7)] == [
        2000, 4000, 8000, 16000, 32000, 60000, 60000,
    ]  # fmt: skip
    assert backoff.delay_ms(10_000) == 60000  # no overflow however many attempts


def test_a_backoff_base_must_be_positive_and_below_the_cap():
    with pytest.raises(ValueError, match=r"backoff needs 0 < base \(0\) <= cap \(3600.0\)"):
        Backoff(0)
    with pytest.raises(ValueError, match=r"backoff needs 0 < base \(10\) <= cap \(5\)"):
        Backoff(10, cap_s=5)


def test_a_backoff_setting_past_the_cap_is_refused_with_the_settings_not_at_start(monkeypatch):
    # It passed the settings and then failed the service's start with a traceback.
    from pydantic import ValidationError

    from engine.settings import Settings

    monkeypatch.setenv("ARBITER_NOTIFY_BACKOFF_SECONDS", "7200")
    with pytest.raises(ValidationError, match=r"notify_backoff_seconds\n.*must be at most 3600"):
        Settings()
    monkeypatch.setenv("ARBITER_NOTIFY_BACKOFF_SECONDS", "3600")
    assert Backoff(Settings().notify_backoff_seconds).delay_ms(0) == 3_600_000


def test_a_notifier_refuses_non_positive_limits():
    with pytest.raises(ValueError, match=r"max_attempts \(0\), batch \(20\) .* must be positive"):
        Notifier(NoStore(), lambda _n: None, max_attempts=0, backoff=Backoff(1))


def test_an_empty_outbox_claims_nothing():
    notifier = Notifier(NoStore(), lambda _n: None, max_attempts=3, backoff=Backoff(1))
    assert notifier.run_once(0) == RunCounts(0, 0, 0)
    assert notifier.counters.snapshot() == {"delivered": 0, "failed": 0, "dead": 0}
