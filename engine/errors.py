"""Domain errors of the engine; they carry a stable machine `code` and know nothing of HTTP.

    EngineError
    ├── InvalidDecisionRecord   a record the store cannot keep (bad subject, non-finite value)
    ├── InvalidAccountStatus    a status other than active or suspended
    ├── DecisionNotFound        no decision with that id (or payment id)
    ├── DecisionPurged          a decision whose content retention has removed (a tombstone)
    ├── NotificationNotFound    no outbox entry with that id
    ├── ContributionsConflict   different contributions for a decision that already has some
    ├── ModelNotLoaded          no model is loaded to score with (none promoted, or its load failed)
    ├── AccountNotFound         an account decision asked of an account nobody has seen
    ├── AccountSuspended        an account decision asked of an account suspended already
    ├── ObjectionNotFound       no objection case with that id
    ├── ObjectionConflict       no case can be opened (nothing adverse, one is open, unknown
    │                           jurisdiction)
    ├── InvalidTransition       a case transition not allowed from its status, or missing what
    │                           it needs (a note, an outcome)
    ├── SameReviewer            the person who opened a case tries to decide it
    ├── ObjectionsUnavailable   the objection desk is not configured (its config is invalid)
    ├── RationalesUnavailable   rationales cannot be written (the reason catalogue is invalid)
    ├── Unauthenticated         no API key, or one that is unknown or revoked
    ├── Forbidden               a key without a role the door asks for
    └── StoreError              the decision store failed a read or a write
        └── StoreUnavailable    it cannot be reached, is locked, read-only, or has no schema

The store translates SQLAlchemy's and the drivers' errors into these at its boundary
(`raise StoreUnavailable(...) from exc`); the driver's own words stay in `detail` and the
exception chain, for logs and the CLI, not for customers.
"""

from __future__ import annotations


class EngineError(Exception):
    code = "engine_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidDecisionRecord(EngineError):
    code = "invalid_decision_record"


class InvalidAccountStatus(EngineError):
    code = "invalid_account_status"


class DecisionNotFound(EngineError):
    code = "decision_not_found"

    def __init__(self, message: str, *, decision_id: str | None = None) -> None:
        super().__init__(message)
        self.decision_id = decision_id


class DecisionPurged(EngineError):
    code = "decision_purged"


class NotificationNotFound(EngineError):
    code = "notification_not_found"


class ContributionsConflict(EngineError):
    code = "contributions_conflict"


class ModelNotLoaded(EngineError):
    code = "model_not_loaded"


class AccountNotFound(EngineError):
    code = "account_not_found"


class AccountSuspended(EngineError):
    code = "account_suspended"

    def __init__(self, message: str, *, decision_id: str | None = None) -> None:
        super().__init__(message)
        self.decision_id = decision_id


class PaymentConflict(EngineError):
    """A payment_id scored before, sent again for another account or another amount: an
    idempotency key names one payment, so its first decision cannot answer this one."""

    code = "payment_conflict"

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class AccountNotSuspended(EngineError):
    """A reinstatement of an account that is not suspended (nothing to lift)."""

    code = "account_not_suspended"


class StoreError(EngineError):
    code = "store_error"

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class StoreUnavailable(StoreError):
    code = "store_unavailable"


class ObjectionNotFound(EngineError):
    code = "objection_not_found"


class ObjectionConflict(EngineError):
    code = "objection_conflict"


class InvalidTransition(EngineError):
    code = "invalid_transition"


class SameReviewer(EngineError):
    code = "same_reviewer"


class ObjectionsUnavailable(EngineError):
    code = "objections_unavailable"


class RationalesUnavailable(EngineError):
    code = "rationales_unavailable"


class Unauthenticated(EngineError):
    code = "unauthenticated"


class Forbidden(EngineError):
    code = "forbidden"
