"""The decision: policy, decision service, decision store, suspension, notifications, objections.

Depends on `features`, `models` and `explanations` only through small Protocols it declares.
"""
