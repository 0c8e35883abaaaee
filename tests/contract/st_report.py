"""Run the schemathesis CLI against a live API and read its NDJSON report.

The CLI (not the pytest plugin) is used because it runs every phase schemathesis has
(examples, coverage, fuzzing, stateful) with one command a person can repeat by hand; the
NDJSON report it writes holds every generated case, the checks run on it and the exchange,
so the tests can count cases and add rules of their own over the same traffic.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# What the issue asks schemathesis to hold the API to.
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance")

# Internals that must never reach a client: object reprs, server paths, enum reprs, tracebacks.
LEAK = re.compile(r"object at 0x[0-9a-f]+|/tmp/|/work/|/root/|/home/|site-packages|Traceback"
                  r"|<[A-Z][A-Za-z]+\.[A-Z_]+: ")


@dataclass
class Exchange:
    operation: str  # "METHOD /template/{path}" as the spec names it
    method: str
    uri: str
    status: int | None
    body: bytes
    scenario: str  # schemathesis phase (+ coverage scenario)

    def brief(self) -> str:
        text = self.body[:300].decode("utf-8", "replace")
        return f"{self.method} {self.uri} -> {self.status} {text} [{self.scenario}]"


@dataclass
class Report:
    command: list[str]
    returncode: int
    output: str
    cases: int = 0
    failures: list[str] = field(default_factory=list)  # schemathesis's own check failures
    errors: list[str] = field(default_factory=list)  # schemathesis-side errors
    exchanges: list[Exchange] = field(default_factory=list)

    def statuses(self) -> dict[str, Counter[int | None]]:
        out: dict[str, Counter[int | None]] = {}
        for ex in self.exchanges:
            out.setdefault(ex.operation, Counter())[ex.status] += 1
        return out


def run_schemathesis(spec: Path, base_url: str, workdir: Path, *, max_examples: int,
                     seed: int, extra: list[str], timeout_s: float) -> Report:
    """``st run`` in ``workdir`` (its cache and report stay there, never in the repository)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ndjson = workdir / "report.ndjson"
    command = [sys.executable, "-m", "schemathesis.cli", "run", str(spec), "--url", base_url,
               "--checks", ",".join(CHECKS), "--max-examples", str(max_examples),
               "--seed", str(seed), "--generation-database", "none", "--no-color",
               # One worker: CPython 3.11's AST parser is not thread-safe and hypothesis parses
               # lambdas while describing strategies (it crashed a two-worker run once).
               "--workers", "1", "--report", "ndjson", "--report-ndjson-path", str(ndjson),
               # Hypothesis's health checks judge the generator's speed, not the API: on a
               # loaded CI machine "too slow" would fail a run that found nothing wrong.
               "--suppress-health-check", "all",
               *extra]
    proc = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    report = Report(command, proc.returncode, proc.stdout + proc.stderr)
    if ndjson.exists():
        _read(ndjson, report)
    return report


def _decode(content: Any) -> bytes:
    if isinstance(content, dict) and "$base64" in content:
        return base64.b64decode(content["$base64"])
    if isinstance(content, str):
        return content.encode()
    return b""


def _read(path: Path, report: Report) -> None:
    for line in path.read_text().splitlines():
        event = json.loads(line)
        kind = next(iter(event))
        body = event[kind]
        if kind in ("NonFatalError", "FatalError"):
            value = body.get("value", body)
            report.errors.append(f"{body.get('label', '')}: {value.get('type')}:"
                                 f" {value.get('message')}")
            continue
        if kind != "ScenarioFinished":
            continue
        recorder = body["recorder"]
        cases = recorder.get("cases", {})
        report.cases += len(cases)
        for case_id, checks in recorder.get("checks", {}).items():
            for check in checks:
                if check["status"] == "failure":
                    report.failures.append(f"{recorder['label']} {check['name']} (case {case_id})")
        for case_id, interaction in recorder.get("interactions", {}).items():
            value = cases.get(case_id, {}).get("value", {})
            phase = value.get("meta", {}).get("phase", {})
            scenario = phase.get("name", "?")
            if (phase.get("data") or {}).get("scenario"):
                scenario += f"/{phase['data']['scenario']}"
            request, response = interaction["request"], interaction.get("response")
            report.exchanges.append(Exchange(
                operation=f"{value.get('method', request['method'])} {value.get('path', '?')}",
                method=request["method"], uri=request["uri"],
                status=response["status_code"] if response else None,
                body=_decode(response.get("content")) if response else b"",
                scenario=scenario,
            ))


def documented_statuses(spec: dict[str, Any]) -> dict[str, set[int]]:
    """``"METHOD /path"`` -> the statuses its OpenAPI ``responses`` list."""
    out: dict[str, set[int]] = {}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method.startswith("x-") or method == "parameters":
                continue
            out[f"{method.upper()} {path}"] = {int(s) for s in operation["responses"]
                                               if s.isdigit()}
    return out


def undocumented(report: Report, spec: dict[str, Any]) -> list[str]:
    """Answers whose status the operation does not document.

    Stricter than schemathesis's ``status_code_conformance``, which its coverage phase does
    not apply to deliberately malformed requests (a multipart body without a boundary, a
    broken JSON body): the issue wants every status an operation can return documented.
    A 405 to a method the path does not have is no operation's answer and is left out.
    """
    documented = documented_statuses(spec)
    methods_by_path: dict[str, set[str]] = {}
    for key in documented:
        method, path = key.split(" ", 1)
        methods_by_path.setdefault(path, set()).add(method)
    bad: list[str] = []
    for ex in report.exchanges:
        if ex.status is None:
            continue
        path = ex.operation.split(" ", 1)[1]
        if ex.status == 405 and ex.method not in methods_by_path.get(path, set()):
            continue
        statuses = documented.get(ex.operation)
        if statuses is not None and ex.status not in statuses:
            bad.append(ex.brief())
    return bad


def not_enveloped(report: Report) -> list[str]:
    """4xx/5xx answers that are not ``{"error": {"code", "message", ...}}`` JSON."""
    bad = []
    for ex in report.exchanges:
        if ex.status is None or ex.status < 400:
            continue
        try:
            error = json.loads(ex.body)["error"]
            ok = isinstance(error["code"], str) and isinstance(error["message"], str)
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            bad.append(ex.brief())
    return bad


def leaks(report: Report) -> list[str]:
    """Error answers whose text shows server internals."""
    return [ex.brief() for ex in report.exchanges
            if ex.status is not None and ex.status >= 400
            and LEAK.search(ex.body.decode("utf-8", "replace"))]


def first(items: list[str], n: int = 8) -> str:
    """A readable sample of a long list (distinct entries first)."""
    distinct = list(dict.fromkeys(items))
    more = f"\n... and {len(items) - n} more" if len(items) > n else ""
    return "\n".join(distinct[:n]) + more
