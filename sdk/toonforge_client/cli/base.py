"""What every command shares: the declarative command table's types (``Command``, ``arg``),
the run context, output helpers, exit codes, and the usage error."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from toonforge_client.client import Client
from toonforge_client.errors import ApiError
from toonforge_client.progress import Bar

EXIT_OK = 0
EXIT_API = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_JOB = 4
EXIT_WAIT_TIMEOUT = 5
EXIT_INTERRUPTED = 130

MODEL_HELP = "NAME or NAME@VERSION"
TASK_HELP = "a task the server knows (cartoonize, matte, classify, generate, autoencode, ...)"


class UsageError(Exception):
    """A problem with the command line or local inputs: exit 2."""


@dataclass
class Ctx:
    """One run of a command: its parsed arguments and the client to the server."""

    args: argparse.Namespace
    client: Client

    @property
    def json(self) -> bool:
        return bool(self.args.json)

    def bar(self, total: float | None, label: str, unit: str = "") -> Bar:
        return Bar(total, label=label, unit=unit, enabled=self.args.progress)


Handler = Callable[[Ctx], int]


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Arg:
    """One ``add_argument(*flags, **options)``."""

    flags: tuple[str, ...]
    options: Mapping[str, Any]


def arg(*flags: str, **options: Any) -> Arg:
    return Arg(flags, options)


@dataclass(frozen=True)
class Command:
    """A row of the command table: a command (or an action of one), what ``--help`` says,
    what it takes, and what runs it. A command with ``actions`` runs one of them instead."""

    name: str
    help: str
    run: Handler | None = None
    args: tuple[Arg, ...] = ()
    actions: tuple[Command, ...] = ()
    description: str | None = None


# ----------------------------------------------------------------------------- output


def out(text: str = "") -> None:
    print(text, flush=True)


def err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def dump(value: Any) -> None:
    out(json.dumps(value, indent=2, default=str))


def table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        out("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def describe_api_error(exc: ApiError) -> str:
    text = f"{exc.code}: {exc.message}"
    report = (exc.details or {}).get("report")
    if isinstance(report, dict) and report.get("problems"):
        text += "".join(f"\n  - {p}" for p in report["problems"])
    return text


def parse_model(value: str | None) -> tuple[str | None, int | None]:
    """``name`` or ``name@n``."""
    if not value:
        return None, None
    name, at, version = value.partition("@")
    if at and not version.isdigit():
        raise UsageError(f"--model {value!r}: use NAME or NAME@VERSION")
    return name or None, int(version) if at else None
