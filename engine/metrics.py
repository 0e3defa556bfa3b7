"""Metrics for `/metrics`, rendered in the Prometheus text exposition format (version 0.0.4).

A handful of metric families is all the service needs, so they are written here rather than
brought in: `Counter` (monotonic, with labels), `Gauge` (set to a value, with labels) and
`Histogram` (fixed buckets, no labels). Every update takes the family's lock, so the request
threads, the watchers and a scrape may touch them at once. `Metrics` holds Arbiter's families;
`render()` writes them all in the order they were declared.

Imports nothing from the other Arbiter packages.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Decision latency in seconds: the service answers in milliseconds, a slow store in more.
SCORE_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip

Labels = tuple[str, ...]


class _Family:
    kind = "untyped"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help
        self.labels: Labels = tuple(labels)
        self._values: dict[Labels, float] = {}
        self._lock = threading.Lock()

    def _key(self, values: Sequence[str]) -> Labels:
        if len(values) != len(self.labels):
            raise ValueError(f"{self.name} takes the labels {self.labels}, got {tuple(values)}")
        return tuple(str(v) for v in values)

    def value(self, *labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            samples = sorted(self._values.items())
        lines = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for key, value in samples:
            lines.append(
                f"{self.name}{_labels(zip(self.labels, key, strict=True))} {_number(value)}"
            )
        return lines


class Counter(_Family):
    kind = "counter"

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: a counter only goes up (got {amount})")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def mirror(self, totals: Mapping[Labels, float]) -> None:
        """Take the totals of a counter kept elsewhere (e.g. the notifier's), replacing ours."""
        values = {self._key(k): float(v) for k, v in totals.items()}
        with self._lock:
            self._values = values


class Gauge(_Family):
    kind = "gauge"

    def set(self, *labels: str, value: float) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = value

    def replace(self, values: Mapping[Labels, float]) -> None:
        """All samples at once (e.g. the models serving now, the old versions dropped)."""
        fresh = {self._key(k): float(v) for k, v in values.items()}
        with self._lock:
            self._values = fresh


class Histogram:
    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: Sequence[float]) -> None:
        ordered = sorted(float(b) for b in buckets)
        if not ordered or len(set(ordered)) != len(ordered):
            raise ValueError(f"{name}: buckets must be distinct and not empty")
        self.name = name
        self.help = help
        self.buckets: tuple[float, ...] = tuple(b for b in ordered if not math.isinf(b))
        self._counts = [0] * len(self.buckets)  # per bucket, not cumulative
        self._count = 0
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self._count += 1
            self._sum += value
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    self._counts[i] += 1
                    break

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def render(self) -> list[str]:
        with self._lock:
            counts, count, total = list(self._counts), self._count, self._sum
        lines = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, n in zip(self.buckets, counts, strict=True):
            cumulative += n
            lines.append(f'{self.name}_bucket{{le="{_number(bound)}"}} {cumulative}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {count}')
        lines.append(f"{self.name}_sum {_number(total)}")
        lines.append(f"{self.name}_count {count}")
        return lines


class Metrics:
    """Arbiter's metrics. The service counts decisions and their latency and the errors of
    the dependencies it calls; the app sets the model info and mirrors the notifier's totals
    just before a scrape renders them."""

    def __init__(self) -> None:
        self.decisions = Counter(
            "arbiter_decisions_total", "Decisions made, by action (retries not counted).",
            ("action",),
        )  # fmt: skip
        self.score_seconds = Histogram(
            "arbiter_score_seconds", "Time to decide on one payment, in seconds.", SCORE_BUCKETS
        )
        self.model_info = Gauge(
            "arbiter_model_info", "The model versions serving (1), by alias.",
            ("alias", "name", "version"),
        )  # fmt: skip
        self.dependency_errors = Counter(
            "arbiter_dependency_errors_total",
            "Failed calls to a dependency: redis, store, model_load, account_model_load, "
            "challenger_model_load.",
            ("dependency",),
        )
        self.notifications = Counter(
            "arbiter_notifications_total",
            "Customer notification deliveries since the worker started, by outcome.",
            ("outcome",),
        )

        self.journal = Gauge(
            "arbiter_journal_decisions",
            "Decisions of the local journal (store down): pending, journaled and replayed since "
            "start.",
            ("state",),
        )

        self.group_commit = Counter(
            "arbiter_store_writes_total",
            "The decision writer's work since start: transactions committed and decisions in "
            "them (their ratio is the group commit's batch size).",
            ("what",),
        )

    def render(self) -> str:
        families: Iterable[_Family | Histogram] = (
            self.decisions, self.score_seconds, self.model_info, self.dependency_errors,
            self.notifications, self.journal, self.group_commit,
        )  # fmt: skip
        return "".join(line + "\n" for family in families for line in family.render())


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{name}="{_escape_value(value)}"' for name, value in pairs)
    return f"{{{inner}}}" if inner else ""


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def elapsed_ms(since: float) -> float:
    """Milliseconds since `since` (a `time.perf_counter()`), to the microsecond: a record's
    `timings`."""
    return round((time.perf_counter() - since) * 1000, 3)
