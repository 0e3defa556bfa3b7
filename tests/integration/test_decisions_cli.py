"""`arbiter decisions verify-chain` and `migrate` on a real SQLite decision store."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from cli import decisions as decisions_cmds
from engine.records import DecisionRecord
from engine.store import DecisionStore
from tests.integration.test_decision_store import decision, execute


@pytest.fixture
def arbiter(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'arbiter.db'}"
    monkeypatch.setenv("ARBITER_DATABASE_URL", url)
    app = typer.Typer()
    app.command("noop")(lambda: None)  # a second command keeps `decisions` a sub-command
    decisions_cmds.register(app)

    def run(*args: str):
        result = CliRunner().invoke(app, ["decisions", *args])
        return result.exit_code, " ".join(result.output.split())

    run.url = url
    return run


def _fill(url: str, n: int) -> list[DecisionRecord]:
    store = DecisionStore(url)
    try:
        return [
            store.append_decision(decision(i), suspend=False, notification=None).record
            for i in range(n)
        ]
    finally:
        store.close()


def test_verify_chain_says_the_chain_is_intact(arbiter):
    assert arbiter("migrate") == (0, "the decision store's schema is up to date")
    assert arbiter("verify-chain") == (0, "the chain is empty: no decision is stored")
    _fill(arbiter.url, 3)

    code, out = arbiter("verify-chain")

    assert code == 0
    assert out.startswith("the chain of 3 records is intact; head ")


def test_verify_chain_names_the_first_broken_record_and_exits_1(arbiter):
    arbiter("migrate")
    records = _fill(arbiter.url, 3)
    execute(arbiter.url, "UPDATE decisions SET score = 0.5 WHERE decision_id = :id",
            id=records[1].decision_id)  # fmt: skip

    code, out = arbiter("verify-chain")

    assert code == 1
    assert f"chain broken at decision {records[1].decision_id} (seq 2): hash does not match" in out


def test_verify_chain_refuses_a_missing_or_unmigrated_store(arbiter, tmp_path):
    code, out = arbiter("verify-chain")
    assert (code, out) == (2, f"no decision store at {tmp_path / 'arbiter.db'} "
                              "(ARBITER_DATABASE_URL)")  # fmt: skip
    bare = DecisionStore(arbiter.url)
    bare.is_writable()  # creates the file, not the schema
    bare.close()
    assert arbiter("verify-chain") == (
        2, "the decision store has no schema: run `arbiter decisions migrate`",
    )  # fmt: skip
