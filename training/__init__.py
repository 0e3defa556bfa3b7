"""Simulator, dataset building, training, evaluation, MLflow logging and promotion.

May import `features`, `models` and `explanations`; nothing but the CLI wiring imports it.
"""
