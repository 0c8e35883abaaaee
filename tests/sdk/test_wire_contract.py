"""The SDK's types against the wire contract, field by field, with no server: every TypedDict
of ``toonforge_client.types`` that mirrors a schema of the checked-in openapi/openapi.json
(generated from core/wire) has the schema's property names, the same basic JSON types
(nested schemas by name), the same nullability, and agrees on which fields may be left out;
the job statuses are the schema's enum; each operation's JSON answer is the SDK type its
``Client`` method says it returns.

Required and optional, on the wire: the server sends every field of a response (a field
with a default is still sent), so a response type leaves none out (no ``NotRequired``);
a request type leaves out exactly the fields the schema does not require. Optional in the
sense of "may be null" is ``| None`` in the SDK and a ``null`` alternative in the schema.
"""

from __future__ import annotations

import copy
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, NotRequired, Required, get_args, get_origin, get_type_hints

import pytest
from toonforge_client import Client
from toonforge_client import types as sdk

OPENAPI = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"

# SDK type -> the schema it mirrors.
RESPONSES: dict[type, str] = {
    sdk.Prediction: "Prediction",
    sdk.Style: "Style",
    sdk.StyleList: "StyleList",
    sdk.ClassifyResponse: "ClassifyResponse",
    sdk.GeneratedImage: "GeneratedImage",
    sdk.ImagesResponse: "ImagesResponse",
    sdk.ModelInfo: "ModelInfo",
    sdk.VersionSummary: "VersionSummary",
    sdk.ModelDetail: "ModelDetail",
    sdk.ActivateResponse: "ActivateResponse",
    sdk.DatasetMeta: "DatasetMeta",
    sdk.SkippedFile: "SkippedFile",
    sdk.SizeStats: "SizeStats",
    sdk.IntakeReport: "IntakeReport",
    sdk.IngestResult: "IngestResult",
    sdk.JobView: "JobView",
    sdk.JobTracking: "JobTracking",
    sdk.JobPage: "JobPage",
    sdk.MetricPoint: "MetricPoint",
    sdk.JobMetrics: "JobMetrics",
    sdk.SampleInfo: "SampleInfo",
    sdk.Health: "Health",
    sdk.KeyLimits: "KeyLimitsBody",
    sdk.KeyView: "KeyView",
    sdk.KeyCreated: "KeyCreated",
    sdk.ModelReadiness: "ModelReadiness",
    sdk.Readiness: "Readiness",
    sdk.ReloadStatus: "ReloadStatus",
    sdk.TensorSpec: "TensorSpec",
    sdk.GraphSpec: "GraphSpec",
    sdk.FileEntry: "FileEntry",
    sdk.ParityReport: "ParityReport",
    sdk.Lineage: "Lineage",
    sdk.VariantRecord: "VariantRecord",
    sdk.Manifest: "Manifest",
    sdk.ErrorBody: "ErrorBody",
    sdk.ErrorEnvelope: "ErrorEnvelope",
    # sweeps
    sdk.SweepEpoch: "SweepEpoch",
    sdk.SweepPoint: "SweepPoint",
    sdk.SweepView: "SweepView",
    sdk.SweepSummary: "SweepSummary",
    sdk.SweepPage: "SweepPage",
}
REQUESTS: dict[type, str] = {
    sdk.FinetuneRequest: "FinetuneRequest",
    sdk.ActivateRequest: "ActivateRequest",
    sdk.GenerateBody: "GenerateBody",
}
MIRRORS = {**RESPONSES, **REQUESTS}
# SDK TypedDicts with no schema to mirror, and why.
NOT_IN_DOCUMENT: dict[type, str] = {
    sdk.JobEvent: "sent as server-sent events (text/event-stream), not as a JSON schema",
}

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    return json.loads(OPENAPI.read_text())["components"]["schemas"]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return json.loads(OPENAPI.read_text())


# ----------------------------------------------------------------------------- shapes
# A type is described as (kind, nullable): kind is "string", "integer", "number",
# "boolean", "object", "any", "array[<kind>]", a mirrored schema's name, or "a|b" for a union.


def _union(kinds: set[str]) -> str:
    if "any" in kinds:
        return "any"
    return "|".join(sorted(kinds))


def wire_kind(node: dict[str, Any], schemas: dict[str, Any]) -> tuple[str, bool]:
    """What a JSON schema node accepts, as (kind, nullable)."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        target = schemas[name]
        if name in MIRRORS.values():
            return name, False
        return wire_kind(target, schemas)  # an enum, or an object the SDK keeps as a dict
    alternatives = node.get("anyOf") or node.get("oneOf")
    if alternatives:
        kinds, nullable = set(), False
        for alternative in alternatives:
            if alternative.get("type") == "null":
                nullable = True
                continue
            kind, null = wire_kind(alternative, schemas)
            kinds.add(kind)
            nullable |= null
        return _union(kinds), nullable
    kind = node.get("type")
    if kind is None and "const" in node:
        kind = _SCALARS[type(node["const"])]
    if kind is None and "enum" in node:
        kind = _union({_SCALARS[type(v)] for v in node["enum"]})
    if kind == "array":
        return f"array[{wire_kind(node.get('items', {}), schemas)[0]}]", False
    return (kind or "any"), False


def sdk_kind(hint: Any) -> tuple[str, bool]:
    """What an SDK annotation holds, as (kind, nullable)."""
    origin = get_origin(hint)
    if origin in (NotRequired, Required):
        return sdk_kind(get_args(hint)[0])
    if origin in (typing.Union, types.UnionType):
        members = [m for m in get_args(hint) if m is not type(None)]
        kinds = {sdk_kind(m)[0] for m in members}
        return _union(kinds), len(members) < len(get_args(hint))
    if origin is Literal:
        return _union({_SCALARS[type(v)] for v in get_args(hint)}), False
    if origin is list:
        return f"array[{sdk_kind(get_args(hint)[0])[0]}]", False
    if origin is dict or hint is dict:
        return "object", False
    if hint is Any:
        return "any", False
    if hint is sdk.ImageResult:  # a binary answer (an image), not JSON
        return "image", False
    if typing.is_typeddict(hint):
        assert hint in MIRRORS, f"{hint.__name__} is nested in a mirrored type: map it"
        return MIRRORS[hint], False
    return _SCALARS[hint], False


def leaves_out(hint: Any, total: bool) -> bool:
    origin = get_origin(hint)
    return origin is NotRequired or (not total and origin is not Required)


def mismatches(sdk_type: type, name: str, schemas: dict[str, Any], request: bool) -> list[str]:
    """Every way ``sdk_type`` differs from the schema ``name`` (empty when they agree)."""
    schema = schemas[name]
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    hints = get_type_hints(sdk_type, include_extras=True)
    problems = [f"{field}: only in the SDK" for field in sorted(hints.keys() - properties)]
    problems += [f"{field}: only in the schema" for field in sorted(properties.keys() - hints)]
    for field in sorted(hints.keys() & properties.keys()):
        ours, theirs = sdk_kind(hints[field]), wire_kind(properties[field], schemas)
        if ours[0] != theirs[0]:
            problems.append(f"{field}: SDK {ours[0]}, schema {theirs[0]}")
        if ours[1] != theirs[1]:
            problems.append(f"{field}: nullable in the {'SDK' if ours[1] else 'schema'} only")
        optional = leaves_out(hints[field], sdk_type.__total__)
        if optional and field in required:
            problems.append(f"{field}: the schema requires it, the SDK may leave it out")
        if request and not optional and field not in required:
            problems.append(f"{field}: the schema may leave it out, the SDK requires it")
    return problems


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize(("sdk_type", "name", "request_body"), [
    *((t, n, False) for t, n in RESPONSES.items()),
    *((t, n, True) for t, n in REQUESTS.items()),
], ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_sdk_type_mirrors_its_schema(sdk_type: type, name: str, request_body: bool,
                                     schemas: dict[str, Any]) -> None:
    assert name in schemas, f"openapi.json has no schema {name}"
    assert mismatches(sdk_type, name, schemas, request_body) == []


def test_every_sdk_typeddict_is_checked() -> None:
    defined = {v for v in vars(sdk).values()
               if typing.is_typeddict(v) and v.__module__ == sdk.__name__}
    assert defined - MIRRORS.keys() - NOT_IN_DOCUMENT.keys() == set()


def test_job_statuses_are_the_schema_enum(schemas: dict[str, Any]) -> None:
    status = schemas["JobView"]["properties"]["status"]
    enum = _enum(status, schemas)
    assert list(get_args(sdk.JobStatus)) == enum
    assert sdk.TERMINAL_STATUSES == {"succeeded", "failed", "cancelled"} <= set(enum)
    assert all(sdk.is_terminal(s) == (s in sdk.TERMINAL_STATUSES) for s in enum)


def test_builtin_tasks_are_the_documented_tasks(schemas: dict[str, Any]) -> None:
    enum = _enum(schemas["JobView"]["properties"]["task"], schemas)
    if enum is None:
        pytest.skip("the document lists no task enum (a task is any registered name)")
    assert set(get_args(sdk.Task)) == set(enum)


def test_each_json_answer_is_the_type_its_method_returns(document: dict[str, Any]) -> None:
    """The SDK type a ``Client`` method is annotated to return mirrors the schema the
    operation answers with (``list[T]`` for an array of it)."""
    checked = 0
    for path in document["paths"].values():
        for operation in path.values():
            for status, response in operation["responses"].items():
                body = (response.get("content") or {}).get("application/json")
                if not status.startswith("2") or body is None:
                    continue
                expected, _ = wire_kind(body["schema"], document["components"]["schemas"])
                method = getattr(Client, operation["operationId"])
                returned, _ = sdk_kind(get_type_hints(method)["return"])
                assert expected in returned.split("|"), (operation["operationId"], returned)
                checked += 1
    assert checked >= 15


def test_a_difference_on_either_side_is_caught(schemas: dict[str, Any]) -> None:
    """The check itself: a field added, made nullable, or retyped on one side is reported."""
    assert mismatches(sdk.ModelInfo, "ModelInfo", schemas, False) == []
    changed = copy.deepcopy(schemas)
    info = changed["ModelInfo"]
    info["properties"]["owner"] = {"type": "string"}
    info["properties"]["is_default"] = {"anyOf": [{"type": "boolean"}, {"type": "null"}]}
    info["properties"]["versions"] = {"type": "array", "items": {"type": "string"}}
    del info["properties"]["active"]
    assert mismatches(sdk.ModelInfo, "ModelInfo", changed, False) == [
        "active: only in the SDK",
        "owner: only in the schema",
        "is_default: nullable in the schema only",
        "versions: SDK array[integer], schema array[string]",
    ]
    request = copy.deepcopy(schemas)
    request["FinetuneRequest"]["required"].remove("base")
    assert mismatches(sdk.FinetuneRequest, "FinetuneRequest", request, True) == [
        "base: the schema may leave it out, the SDK requires it"]


def _enum(node: dict[str, Any], schemas: dict[str, Any]) -> list[Any] | None:
    if "$ref" in node:
        return _enum(schemas[node["$ref"].rsplit("/", 1)[-1]], schemas)
    for alternative in node.get("anyOf") or node.get("oneOf") or []:
        if (found := _enum(alternative, schemas)) is not None:
            return found
    return node.get("enum")
