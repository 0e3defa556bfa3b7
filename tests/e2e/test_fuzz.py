"""Fuzzing the served API from its own OpenAPI description (schemathesis, bounded examples):
whatever a caller sends, no server error, and every answer is one the description admits (its
status codes, content types and body schemas). A real uvicorn process on real Redis and
SQLite, with the session's champion, called with an admin key (test_authorization.py covers the
keys themselves)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from tests.conftest import TEST_REDIS_URL
from tests.integration.conftest import ACCOUNT_NAME, NAME
from tests.server import Server

pytestmark = pytest.mark.integration
EXAMPLES = 30  # per operation: enough to find the cheap mistakes, cheap enough for every run


@pytest.fixture(scope="module")
def fuzzed(models, tmp_path_factory, redis_server):
    live = Server(
        tmp_path_factory.mktemp("fuzz"), tracking_uri=models.tracking_uri, model_name=NAME,
        redis_url=TEST_REDIS_URL, account_model_name=ACCOUNT_NAME,
    ).wait("/healthz")  # fmt: skip
    yield live
    live.stop()


# The description the app serves, built at import (schemathesis parametrizes at collection);
# the first test checks the running server serves exactly this one.
DESCRIPTION = create_app().openapi()
schema = schemathesis.openapi.from_dict(DESCRIPTION)


def test_the_server_serves_the_description_fuzzed_here(fuzzed):
    with fuzzed.client("") as anonymous:
        assert anonymous.get("/openapi.json").json() == DESCRIPTION


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))  # fmt: skip
def test_no_input_makes_a_server_error_or_an_undescribed_answer(case, fuzzed):
    case.call_and_validate(
        base_url=fuzzed.url, headers={"Authorization": f"Bearer {fuzzed.keys['admin']}"},
        checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                response_schema_conformance],
    )  # fmt: skip
