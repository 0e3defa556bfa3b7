"""Rationale documents: why a decision was made, for the customer who objects and for the
people who answer them (GDPR Art. 15(1)(h), 22(3); docs/objections.md).

`Rationales.document(decision_id, actor=..., verify=...)` assembles, for a stored decision:
the record (an allow decision's contributions derived first, `engine.deferred`), the model
version that decided it (from the registry, whatever is champion today: its training
distribution says what is typical, and it answers the "what would have changed the outcome"
search), the thresholds of the policy version that applied (`policy_versions`), the
reason-code catalogue, and hands them to `explanations.rationale.build_rationale`. It adds how
and by when to object, the decision's objection cases and, with `verify`, a re-derivation of the
score and contributions with that exact model version (`engine.verification`). Every read is an
audit event (`rationale.read`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from engine import audit
from engine.database import writing
from engine.deferred import DeferredContributions
from engine.notices import OBJECTION_WINDOW_DAYS
from engine.objections import ObjectionDesk
from engine.ports import ScorerLike
from engine.records import StoredDecision
from engine.store import DecisionStore
from engine.verification import Verifier
from explanations.catalogue import Catalogue
from explanations.rationale import build_rationale, counterfactual_for
from features.events import format_ts

log = logging.getLogger("arbiter.rationales")
_DAY_MS = 86_400_000


class _Model(Protocol):
    @property
    def scorer(self) -> ScorerLike: ...
    @property
    def distribution(self) -> Mapping[str, Any] | None: ...


class Rationales:
    def __init__(
        self,
        store: DecisionStore,
        deferred: DeferredContributions,
        catalogue: Catalogue,
        *,
        desk: ObjectionDesk | None,
        clock: Callable[[], int],
    ) -> None:
        self.store = store
        self.deferred = deferred
        self.catalogue = catalogue
        self.desk = desk
        self.clock = clock
        self.verifier = Verifier(store, deferred.model)

    def document(self, decision_id: str, *, actor: str, verify: bool = False) -> dict[str, Any]:
        stored = self.deferred.decision(decision_id)
        document = self._build(stored)
        now = self.clock()
        document["objections"] = (
            [case.to_json(now) for case in self.desk.for_decision(decision_id)]
            if self.desk is not None
            else []
        )
        if verify:
            document["verification"] = dataclasses.asdict(self.verifier.verify(decision_id))
        with writing(self.store.database) as conn:
            audit.append(
                conn, actor=actor, action="rationale.read", subject_type="decision",
                subject_id=decision_id, account_id=stored.record.account_id, at=now,
                details={"verify": verify},
            )  # fmt: skip
        return document

    def customer_view(self, stored: StoredDecision) -> dict[str, Any]:
        """The customer part alone (an account export; the export is audited as a whole)."""
        customer: dict[str, Any] = self._build(stored)["customer"]
        return customer

    def data_categories(self) -> list[str]:
        return list(self.catalogue.model.data_categories.values())

    def _build(self, stored: StoredDecision) -> dict[str, Any]:
        record = stored.record
        decision = record.to_json()
        if decision.get("contributions") is None and stored.contributions is not None:
            decision["contributions"] = dict(stored.contributions)
            decision["base_value"] = stored.base_value
        model = self._model(record.model_name, record.model_version)
        thresholds = self._thresholds(record.policy_version, record.subject_type, record.segment)
        distribution = model.distribution if model is not None else None
        counterfactual = None
        if model is not None:
            scorer = model.scorer

            def margin_of(features: dict[str, Any]) -> float:
                return scorer.score(scorer.vector(features)).margin

            counterfactual = counterfactual_for(
                decision, margin_of, catalogue=self.catalogue, distribution=distribution,
                thresholds=thresholds,
            )  # fmt: skip
        document = build_rationale(
            decision, catalogue=self.catalogue, distribution=distribution,
            thresholds=thresholds, counterfactual=counterfactual,
        )  # fmt: skip
        if record.action != "allow":
            document["customer"]["how_to_object"] = (
                "You may object to this automated decision: contact support quoting decision "
                f"{record.decision_id}. A person who took no part in it will review it."
            )
            document["customer"]["object_by"] = format_ts(
                record.created_at + OBJECTION_WINDOW_DAYS * _DAY_MS
            )
        document["decided_at"] = format_ts(record.created_at)
        document["account_id"] = record.account_id
        document["payment_id"] = record.payment_id
        return document

    def _model(self, name: str | None, version: str | None) -> _Model | None:
        if name is None or version is None:
            return None
        try:
            model: _Model = self.deferred.model(name, version)  # type: ignore[assignment]
        except Exception as exc:  # the registry or the artifact: the rationale still answers
            log.warning("model %s v%s not loaded for a rationale: %s", name, version, exc)
            return None
        return model

    def _thresholds(
        self, version: str, subject_type: str, segment: str | None
    ) -> dict[str, float] | None:
        """The thresholds the decision was held against, from the policy version it recorded."""
        document = self.store.policy_document(version)
        if document is None:
            return None
        if subject_type == "account":
            chosen = (document.get("account") or {}).get("thresholds")
        else:
            chosen = document.get("thresholds")
            for entry in document.get("segments") or ():
                if entry.get("name") == segment:
                    chosen = entry.get("thresholds")
        return {k: float(v) for k, v in chosen.items()} if chosen else None
