"""Simulator, dataset building, training, evaluation, MLflow logging and promotion.

May import `features`, `models` and `explanations`; nothing but the CLI wiring imports it.

Modules, in the order a training runs (`docs/training.md`):
    config    -- the training config (config/training.yaml), validated
    labels    -- which events are scored and which were fraud, within the label maturity
    dataset   -- features of the scored events, the time-ordered split with maturity gaps, the
                 stored holdout
    model     -- LightGBM, deterministic, early-stopped on the validation window
    distributed -- the same model boosted on a Dask cluster (lightgbm.dask), from Parquet
    baseline  -- the logistic regression the model is reported beside
    evaluate  -- ranking, workload, per-scenario, expected-loss and calibration numbers
    explain   -- SHAP summary; quantiles of the training population stored with the model
    plots     -- the run's figures (matplotlib, Agg)
    tracking  -- the MLflow run, the logged model, registration with the alias `challenger`
    registry  -- reading versions, aliases, models and holdouts back
    promote   -- the gate that moves the alias `champion`
    pipeline  -- one training end to end, with progress reporting
    simulator -- the seeded world of the platform (a package of its own)

Errors: `training.errors` (TrainingError and subclasses, each with a stable `code`).
"""
