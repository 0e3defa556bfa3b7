"""Domain errors of training, evaluation, registration and promotion; they know nothing of HTTP
or of the command line (the CLI prints `message` and exits non-zero).

    TrainingError
    ├── InvalidTrainingConfig  a training config entry that does not validate (names the entry)
    ├── NoLabels               the log has no scored events, no label events, or no positives
    ├── SingleClass            a split window holds only one class (names the window)
    ├── WindowTooShort         the mature part of the log cannot hold the split and its gaps
    └── ModelNotFound          no such registered model, version or alias

Errors of the log itself (empty, unreadable, unsorted) are `features.errors.InvalidEventLog`.
"""

from __future__ import annotations


class TrainingError(Exception):
    code = "training_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidTrainingConfig(TrainingError):
    code = "invalid_training_config"


class NoLabels(TrainingError):
    code = "no_labels"


class SingleClass(TrainingError):
    code = "single_class"


class WindowTooShort(TrainingError):
    code = "window_too_short"


class ModelNotFound(TrainingError):
    code = "model_not_found"
