"""The objection outcome's words: never untrue about the account the customer holds."""

from __future__ import annotations

import pytest

from engine.notices import objection_outcome


def told(subject: str, action: str, outcome: str, new_action: str | None = None,
         **account: object) -> str:  # fmt: skip
    return objection_outcome(
        subject_type=subject, action=action, outcome=outcome, note="Checked.",
        new_action=new_action, reasons=["The account sent many SMS."], remedies="REMEDIES",
        **account,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.parametrize(
    ("subject", "action", "outcome", "new_action"),
    [
        ("account", "suspend_account", "overturned", None),
        ("account", "suspend_account", "modified", "allow"),
        ("account", "suspend_account", "modified", "review"),
        ("payment", "decline", "overturned", None),
        ("payment", "suspend_account", "modified", "decline"),
    ],
)
def test_an_account_still_suspended_is_never_called_active(subject, action, outcome, new_action):
    text = told(subject, action, outcome, new_action, still_suspended=True, suspended_by="d-9")
    assert "active" not in text and "make the payment again" not in text
    assert "remains suspended by decision d-9" in text
    unnamed = told(subject, action, outcome, new_action, still_suspended=True)
    assert "remains suspended, which" in unnamed and "decision None" not in unnamed


def test_words_for_each_subject_once_the_account_is_free():
    assert "Your account is active again." in told("account", "suspend_account", "overturned")
    assert told("account", "review", "overturned").endswith("The account decision is withdrawn.")
    assert "make the payment again" in told("payment", "decline", "overturned")
    modified = told("payment", "decline", "modified", "review")
    assert "the payment is now held for a manual review" in modified
    assert "The reasons the decision rests on: The account sent many SMS." in modified
    assert told("account", "review", "modified", "allow").startswith(
        "A reviewer changed the decision: the account is now active."
    )
