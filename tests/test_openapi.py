"""Schemathesis against the server's own OpenAPI document: no server error, and every answer
(status, content type, headers, body) is one the document says the server gives."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from swarm_discovery import __version__
from swarm_discovery.fronts.http.routes import openapi_document
from tests.conftest import FAST_EXPIRY
from tests.server import Server

EXAMPLES = 40  # per operation: about 700 requests in all, in well under a minute
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(Path(tmp_path_factory.mktemp("fuzzed")) / "data", args=FAST_EXPIRY)
    s.start()
    yield s
    s.stop()


# The document as the server builds it; the requests go to a real server.
SCHEMA = schemathesis.openapi.from_dict(msgspec.json.decode(openapi_document(__version__)))
# The watch stream never ends by itself, so each example would wait out its timeout: tests/test_changes.py
# covers it, including bad parameters.
OPERATIONS = {
    op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations()) if op.label != "GET /v1/watch"
}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_every_answer_is_documented_and_none_is_a_server_error(
    fuzzed_server: Server, label: str, mode: GenerationMode
) -> None:
    """Valid requests get documented answers; invalid ones (the wrong types, digits that are not
    ASCII, numbers too long, missing fields) get a documented 4xx, never a 500."""
    operation = OPERATIONS[label]
    if mode is GenerationMode.NEGATIVE and not (operation.query or operation.path_parameters or operation.body):
        pytest.skip("nothing to get wrong")
    checks = CHECKS if mode is GenerationMode.POSITIVE else CHECKS[:3]  # what a 4xx carries is ErrorBody

    @given(operation.as_strategy(mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def fuzz(case: schemathesis.Case) -> None:
        if case.query and "index" in case.query:
            case.query["wait"] = "0s"  # a blocking query would otherwise hold the test for up to 10 minutes
        response = case.call(base_url=fuzzed_server.url, timeout=30)
        if response.status_code == 431:
            return  # a request head over the limit: granian answers that itself, before the API
        case.validate_response(response, checks=checks)

    fuzz()
