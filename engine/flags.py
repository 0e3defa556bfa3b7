"""`FlagSync`: keeps Redis's suspension flags in step with the decision store.

The store is the truth about which accounts are suspended; the scoring hot path reads a copy,
one flag per suspended account beside the account's features (`DecisionService.flag_key`), in
the same Redis round trip as the features. The service sets a flag when a decision suspends
an account and re-sets it when it finds an account Redis knows nothing about suspended in the
store. What can still leave a flag missing or stale (Redis restarted with its data gone while
the account kept its features, a flag write that failed, a reinstatement done while Redis was
down) is repaired here: every `interval_s` seconds the flags of every suspended account are
written, and flags of accounts no longer suspended are removed (an index set in Redis lists
every flag, so no key scan is needed).
"""

from __future__ import annotations

import logging

from engine.errors import StoreError
from engine.poller import Watcher
from engine.service import DecisionService
from features.errors import FeatureStoreUnavailable

log = logging.getLogger("arbiter.flags")


class FlagSync(Watcher[int]):
    def __init__(self, service: DecisionService, *, interval_s: float) -> None:
        self.service = service
        self.last_error: str | None = None
        super().__init__(interval_s=interval_s, name="suspension-flag-sync")

    def _check(self) -> int | None:
        try:
            written = self.service.sync_flags(stale=self.service.flagged_accounts())
        except (FeatureStoreUnavailable, StoreError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            if message != self.last_error:
                log.warning("suspension flags not synced: %s", message)
            self.last_error = message
            return None
        self.last_error = None
        return written
