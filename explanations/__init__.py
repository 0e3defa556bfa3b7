"""TreeSHAP contributions, reason codes, rationale documents and their verification.

Imports nothing from the other Arbiter packages.
"""
