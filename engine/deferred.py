"""Contributions of allow decisions, derived when first asked for.

Exact TreeSHAP costs about fifty predictions, so the hot path spends it only on adverse
decisions. An allow decision keeps what is needed to derive its contributions exactly later:
the feature values it was scored with and the model name and version. `DeferredContributions`
derives them on the first read of the decision (`GET /v1/decisions/{id}`), with that exact model
version from the registry (not whatever is champion now), checks that they reproduce the
recorded margin, and stores them beside the record (`decision_contributions`, hash-bound to it;
the record itself never changes). Later reads get the stored values.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Any, Protocol

from engine.errors import EngineError
from engine.ports import ScorerLike
from engine.records import StoredDecision

log = logging.getLogger("arbiter.deferred")

# A margin re-derived from the same features with the same model matches to rounding.
MARGIN_TOLERANCE = 1e-9


class ContributionsMismatch(EngineError):
    code = "contributions_mismatch"


class _Model(Protocol):
    @property
    def scorer(self) -> ScorerLike: ...


class _Store(Protocol):
    def get_decision(self, decision_id: str) -> StoredDecision: ...
    def store_contributions(
        self, decision_id: str, contributions: dict[str, float], base_value: float
    ) -> Any: ...


class DeferredContributions:
    def __init__(self, store: _Store, load_version: Callable[[str, str], _Model]) -> None:
        """`load_version(name, version)`: that exact model version, ready to score."""
        self.store = store
        self.load_version = load_version
        self._models: dict[tuple[str, str], _Model] = {}
        self._lock = threading.Lock()

    def decision(self, decision_id: str) -> StoredDecision:
        """The stored decision, with its contributions derived and stored first if needed."""
        stored = self.store.get_decision(decision_id)
        record = stored.record
        if (
            stored.contributions is not None
            or record.raw_margin is None
            or record.model_name is None
            or record.model_version is None
        ):
            return stored
        try:
            model = self.model(record.model_name, record.model_version)
            derived = model.scorer.contributions(model.scorer.vector(record.features))
        except Exception as exc:  # the registry or the artifact: the record is still served
            log.warning("decision %s: contributions not derived: %s", decision_id, exc)
            return stored
        margin = derived.base + sum(derived.values.values())
        if not math.isclose(margin, record.raw_margin, rel_tol=0, abs_tol=MARGIN_TOLERANCE):
            raise ContributionsMismatch(
                f"decision {decision_id}: model {record.model_name} v{record.model_version} "
                f"gives margin {margin!r} from the stored features, the record says "
                f"{record.raw_margin!r}"
            )
        self.store.store_contributions(decision_id, derived.values, derived.base)
        return self.store.get_decision(decision_id)

    def model(self, name: str, version: str) -> _Model:
        """That exact model version, loaded once and kept: also what a `Verifier` is given as
        its `load_version`, so both share one copy of each version."""
        with self._lock:
            if (name, version) not in self._models:
                self._models[(name, version)] = self.load_version(name, version)
            return self._models[(name, version)]
