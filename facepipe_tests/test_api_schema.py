"""The HTTP API against its own OpenAPI spec: schemathesis generates requests from the spec (valid and
invalid), sends them to the app in-process, and checks every answer: no 5xx, a status the spec lists,
a body and content type the spec describes. Bounded: a few examples per route, explicit phases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings

from facepipe import settings as facepipe_settings
from facepipe.api import create_app
from facepipe.library import Library

EXAMPLES = 25
"""Generated requests per route: enough to reach each documented status, few enough for a shared 2-core box."""


@pytest.fixture(scope="module")
def app(knn) -> Iterator[FastAPI]:
    # The knn library is shared with other test modules: with a token set and none sent, the people
    # edits answer 401 (listed in the spec) and generated requests never rename, merge or undo there.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEPIPE_API_TOKEN", "schema-test-token")
        api = create_app("qdrant", library=Library.open(facepipe_settings.reload()))
    facepipe_settings.reload()
    yield api
    api.state.store.close()


def check_operation(operation) -> set[int]:
    """Generated requests to one route, each answer checked against the spec (schemathesis's checks);
    returns the statuses seen."""
    seen: set[int] = set()

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        phases=[Phase.explicit, Phase.generate],
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:
        # Schema-valid is not enough for an upload to be accepted: the spec says "a file", the route
        # wants a photo. Every other check holds: no 5xx, only listed statuses, bodies as described.
        response = case.call_and_validate(excluded_checks=[schemathesis.checks.positive_data_acceptance])
        seen.add(response.status_code)

    run()
    return seen


def test_every_route_answers_as_its_spec_says(app):
    # Loaded from the app in-process (ASGI); the pytest decorator form needs the app at import time.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"POST /api/search", "GET /api/images/{image_key}", "GET /api/faces/{face_id}/crop"} <= labels, labels
    failures, statuses = {}, {}
    for operation in operations:
        try:
            statuses[operation.label] = check_operation(operation)
        except (Exception, BaseExceptionGroup) as exc:  # every route is tried; all failures are shown together
            failures[operation.label] = str(exc)[:3000]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    # The generated requests reached the routes' answers, good and bad (not only validation errors).
    assert {400, 415} & statuses["POST /api/search"], statuses
    assert 200 in statuses["GET /api/people"] and 400 in statuses["GET /api/faces/{face_id}/crop"], statuses
