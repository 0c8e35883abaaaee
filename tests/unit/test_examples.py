"""service/examples.py: the generic examples of the OpenAPI document show the first
registered task, read from its spec, and a task registered later (a plugin) changes none of
them; the document is the same on every build."""

from __future__ import annotations

import json
from typing import Any

from core.wire import FinetuneRequest, JobView, Manifest
from service.app import create_app
from service.examples import example_task
from service.unserved import import_hint
from tasks import register_task, task_specs, unregister_task
from tests.api.toy_task import SPEC as TOY
from tests.api.toy_task import TASK as TOY_TASK


def _document() -> dict[str, Any]:
    return create_app().openapi()


def _example(document: dict[str, Any], path: str, method: str, status: str = "200") -> Any:
    answer = document["paths"][path][method]["responses"][status]
    return answer["content"]["application/json"]["example"]


def test_the_example_task_is_the_first_registered_one() -> None:
    first = task_specs()[0]
    subject = example_task()
    assert (subject.name, subject.model) == (first.name, first.default_model)
    assert subject.known == tuple(spec.name for spec in task_specs())
    assert subject.arch in first.archs
    assert set(subject.graphs) == {role for role, io in first.graphs.items() if not io.optional}


def test_the_examples_name_it_and_are_valid_requests_and_answers() -> None:
    subject = example_task()
    document = _document()
    manifest = Manifest.model_validate(
        _example(document, "/models/{name}/versions/{version}", "get"))
    assert (manifest.task, manifest.model) == (subject.name, subject.model)
    job = JobView.model_validate(_example(document, "/jobs/{job_id}", "get"))
    assert job.task == subject.name
    body = document["paths"]["/jobs/finetune"]["post"]["requestBody"]["content"][
        "application/json"]["example"]
    request = FinetuneRequest.model_validate(body)
    # The example's hyper-parameters are ones the task accepts.
    spec = next(s for s in task_specs() if s.name == request.task)
    spec.hyperparameters.model_validate(request.hyperparameters)
    # The 503 example is the message the server builds for this task.
    messages = json.dumps(document)
    assert import_hint(subject.name, subject.model) in messages


def test_a_task_registered_later_changes_no_example() -> None:
    before = _document()
    register_task(TOY)
    try:
        assert example_task().name != TOY_TASK
        after = _document()
    finally:
        unregister_task(TOY_TASK)
    # The hyper-parameter union and the task enums list the new task; the examples do not.
    for path, operations in before["paths"].items():
        for method, operation in operations.items():
            assert json.dumps(operation.get("x-codeSamples")) == json.dumps(
                after["paths"][path][method].get("x-codeSamples")), (path, method)
            for status, answer in operation.get("responses", {}).items():
                example = answer.get("content", {}).get("application/json", {}).get("example")
                if example is not None and "task_not_found" not in json.dumps(example):
                    assert example == after["paths"][path][method]["responses"][status][
                        "content"]["application/json"]["example"], (path, method, status)
    assert _document() == before
