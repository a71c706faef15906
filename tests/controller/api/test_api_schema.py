"""Property-based tests of the HTTP API against its own OpenAPI document (schemathesis).

The real server (:func:`serverkit.serve_demo`: uvicorn on 127.0.0.1, the demo site's runtime
on loopback Modbus simulators, the embedded chain, SQLite) is started once for this module,
so the operator actions schemathesis generates (pause, resume, exclusions) never reach the
other API tests. The schema is loaded from the live server's ``/openapi.json`` and every
operation is exercised with schemathesis' default checks (``not_a_server_error``,
``status_code_conformance``, ``content_type_conformance``, ``response_schema_conformance``,
``response_headers_conformance``, ``negative_data_rejection``, ``ignored_auth``, ...) as
each role (a prosumer, the operator, the auditor) and anonymously.

Two operations are left out of the generated runs and covered by explicit tests in
``test_api_server.py`` instead:

* ``GET .../events`` (server-sent events: the response never ends, so a generated call
  would hang): ``test_events_stream_receives_a_published_event``;
* ``POST .../auth/signout`` (it would end the very session the run is using):
  ``test_sign_out_ends_the_session``.

The runs are deterministic (``derandomize=True``, no example database) and bounded by
:data:`MAX_EXAMPLES` per operation and role. :func:`test_the_harness_catches_a_broken_route`
shows the same checks fail on a copy of the app with deliberately broken routes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from hypothesis import HealthCheck, settings
from pydantic import BaseModel, ConfigDict
from schemathesis.core.failures import FailureGroup
from serverkit import AUDITOR, OPERATOR, Api, serve_demo

from controller.api import create_app

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

MAX_EXAMPLES = 20
"""Generated cases per operation and role (keeps the module to about 2 minutes on 2 cores)."""

ROLES: dict[str, str | None] = {
    "prosumer": "alice",
    "operator": OPERATOR,
    "auditor": AUDITOR,
    "anonymous": None,
}
EXCLUDED = r"/events$|/auth/signout$"

SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with serve_demo(tmp_path_factory.mktemp("api_schema")) as api:
        yield api


@pytest.fixture(scope="module")
def live_schema(served: Api) -> Any:
    return schemathesis.openapi.from_url(f"{served.base}/openapi.json")


schema = schemathesis.pytest.from_fixture("live_schema").exclude(path_regex=EXCLUDED)


@pytest.fixture(autouse=True)
def node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """Compatibility shim: schemathesis 4.32's ``from_fixture`` tests read and rewrite the
    test item's private ``_nodeid`` (to name each operation in reports), which pytest 9.2 no
    longer has (``nodeid`` is a read-only property over ``_id``). Give the item the attribute
    so the lazy schema runs; pytest's own ids are untouched."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


def conformance_test(role: str) -> Any:
    """The schemathesis test of every operation as ``role`` (one pytest item per role)."""
    who = ROLES[role]

    @schema.parametrize()
    @SETTINGS
    def test(case: Any, served: Api) -> None:
        # a negative case that leaves out the security header must go out without it (as
        # schemathesis' own auth providers do), else it is a valid call expected to fail
        headers = {}
        if who is not None and not case.operation.schema.is_security_param_negated(case):
            headers["Authorization"] = f"Bearer {served.token(who)}"
        case.call_and_validate(headers=headers)

    return test


test_every_operation_as_a_prosumer = conformance_test("prosumer")
test_every_operation_as_the_operator = conformance_test("operator")
test_every_operation_as_the_auditor = conformance_test("auditor")
test_every_operation_anonymously = conformance_test("anonymous")


def test_the_excluded_operations_exist_and_are_tested_elsewhere(served: Api) -> None:
    """The exclusion names real paths (a renamed route must not silently drop out)."""
    with served.client() as http:
        paths = http.get(f"{served.base}/openapi.json").json()["paths"]
    prefix = "/v1/sites/{site}"
    assert f"{prefix}/events" in paths
    assert f"{prefix}/auth/signout" in paths
    kept = [p for p in paths if not re.search(EXCLUDED, p)]
    assert len(kept) == len(paths) - 2


# ------------------------------------------------------------------------- the harness fails
class Reading(BaseModel):
    """A response model the broken route violates."""

    model_config = ConfigDict(extra="forbid")

    energy_wh: int


def broken_app(served: Api) -> FastAPI:
    """A copy of the real app with two deliberately broken routes added."""
    app = create_app(served.service)

    @app.get("/broken/server-error", response_model=Reading)
    def server_error() -> JSONResponse:
        return JSONResponse({"code": "boom", "reason": "deliberate"}, status_code=500)

    @app.get("/broken/schema-violation", response_model=Reading)
    def schema_violation() -> JSONResponse:
        # bypasses the response model's validation: the body is not a Reading
        return JSONResponse({"energy_wh": "a lot", "extra": True})

    return app


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/broken/server-error", "Server error"),
        ("/broken/schema-violation", "Response violates schema"),
    ],
)
def test_the_harness_catches_a_broken_route(served: Api, path: str, expected: str) -> None:
    broken = schemathesis.openapi.from_asgi("/openapi.json", broken_app(served))
    case = broken[path]["GET"].Case()
    with pytest.raises(FailureGroup) as caught:
        case.call_and_validate()
    titles = [failure.title for failure in caught.value.exceptions]
    assert expected in titles, titles
    # the real routes of the same copy pass the same checks
    broken["/health"]["GET"].Case().call_and_validate()


@pytest.fixture(scope="module")
def broken_schema(served: Api) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", broken_app(served))


broken_routes = schemathesis.pytest.from_fixture("broken_schema").include(path_regex="^/broken/")


@broken_routes.parametrize()
@SETTINGS
def test_the_pytest_integration_fails_on_broken_routes(case: Any) -> None:
    """The same pytest integration and default checks as the role runs, on the broken copy:
    every valid (positive) generated call to a broken route fails with the fault's check."""
    expected = {
        "/broken/server-error": "Server error",
        "/broken/schema-violation": "Response violates schema",
    }[case.operation.path]
    if case.meta is None or case.meta.generation.mode is not schemathesis.GenerationMode.POSITIVE:
        # negative cases (another method -> 405, a malformed Content-Type) never reach the fault
        case.call_and_validate()
        return
    with pytest.raises(FailureGroup) as caught:
        case.call_and_validate()
    assert expected in [failure.title for failure in caught.value.exceptions]
