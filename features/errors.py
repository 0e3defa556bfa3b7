"""Domain errors of the features package; they know nothing of HTTP."""

from __future__ import annotations


class FeatureError(Exception):
    code = "feature_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidEvent(FeatureError):
    code = "invalid_event"

    def __init__(self, message: str, *, event_id: str | None = None, field: str | None = None):
        super().__init__(message)
        self.event_id = event_id
        self.field = field


class InvalidSpec(FeatureError):
    code = "invalid_spec"


class InvalidEventLog(FeatureError):
    code = "invalid_event_log"


class FeatureStoreUnavailable(FeatureError):
    code = "feature_store_unavailable"
