"""The contract as served: every operation named, documented with curl and examples, the
examples valid against the response models, and the checked-in openapi.json current."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.routing import APIRoute
from pydantic import TypeAdapter

from service.app import create_app

REPO = Path(__file__).resolve().parents[2]


def operations(schema: dict) -> list[dict]:
    return [op for ops in schema["paths"].values() for op in ops.values()]


def api_routes(routes: list) -> list[APIRoute]:
    """Every APIRoute, also inside included routers."""
    found = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found += api_routes(route.original_router.routes)
    return found


def keyed_only(schema: dict) -> dict:
    """The document without its anonymous alternatives (``{}`` in an operation's security:
    the scopes open on the server that wrote it)."""
    out = json.loads(json.dumps(schema))
    for op in operations(out):
        if "security" in op:
            op["security"] = [requirement for requirement in op["security"] if requirement]
    return out


def test_served_schema_is_the_checked_in_one(client) -> None:
    served = client.get("/openapi.json").json()
    checked_in = json.loads((REPO / "openapi" / "openapi.json").read_text())
    # The checked-in document is written with the default open scopes (infer); this
    # server opens every scope, so every operation with a scope may be called without a
    # key, and that is all that differs.
    assert keyed_only(served) == keyed_only(checked_in)
    for op in operations(served):
        assert "security" not in op or op["security"][0] == {}, op["operationId"]
    for op in operations(checked_in):
        scopes = {s for r in op.get("security", []) for s in r.get("bearer", [])}
        assert ({} in op.get("security", [])) == (scopes == {"infer"}), op["operationId"]


def test_every_operation_is_documented_with_examples(client) -> None:
    schema = client.get("/openapi.json").json()
    ids = [op["operationId"] for op in operations(schema)]
    assert len(ids) == len(set(ids)) and all("_" not in i or i.islower() for i in ids)
    for op in operations(schema):
        name = op["operationId"]
        assert op.get("summary") and op.get("description"), name  # the route docstring
        assert op["x-codeSamples"][0]["source"].startswith("curl"), name
        for status, response in op["responses"].items():
            json_body = response.get("content", {}).get("application/json")
            if status.startswith("2") and json_body is not None:
                assert "example" in json_body, (name, status)
            assert "HTTPValidationError" not in json.dumps(response), (name, status)
            envelope = (json_body or {}).get("schema", {}).get("$ref", "").endswith(
                "/ErrorEnvelope")
            if status[0] in "45" and envelope:
                example = json_body["example"]["error"]
                assert example["code"] in response["description"] or status == "500", (
                    name, status, example)


def test_examples_match_the_response_models() -> None:
    app = create_app()
    schema = app.openapi()
    routes = {r.operation_id: r for r in api_routes(app.routes)}
    checked = 0
    for op in operations(schema):
        route = routes[op["operationId"]]
        for status, response in op["responses"].items():
            example = response.get("content", {}).get("application/json", {}).get("example")
            if status.startswith("2") and example is not None and route.response_model:
                TypeAdapter(route.response_model).validate_python(example)
                checked += 1
    assert checked >= 15
