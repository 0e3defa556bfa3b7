"""The ML model: loading from the MLflow registry and the fast single-row scorer.

Imports nothing from the other Arbiter packages.
"""
