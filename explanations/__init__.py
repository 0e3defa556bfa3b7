"""Explanations: reason codes, rationale documents and what would have changed a decision.

Layer: below the engine and training; imports nothing from the other Arbiter packages (it takes
plain arguments: decision records as JSON, the training distribution, thresholds, the model as a
`margin_of` callable). Modules:

* `wording`: the template grammar of customer texts and values written for a person (units).
* `catalogue`: the versioned reason-code catalogue (`config/reasons.yaml`): feature families,
  their customer texts, rule texts, data categories; `InvalidCatalogue`.
* `counterfactual`: the smallest change of one family's features that would have changed an
  adverse outcome, found by asking the model; its customer and internal views.
* `rationale`: the rationale document of one decision (customer and internal parts).
"""
