"""``toonforge``: the command-line client of a toonforge server (docs/CLI.md).

Exit codes:  0 ok · 1 the server refused (prints ``code: message``) · 2 usage (bad arguments,
missing input files) · 3 cannot reach the server (refused, unreachable, timed out) · 4 the
job failed or was cancelled · 5 gave up waiting (--wait-timeout) · 130 interrupted (Ctrl-C).

The commands are a table (``COMMANDS``: name, help, arguments, handler; see ``base.Command``)
that ``build_parser`` turns into argparse. Server admin commands (``import``, ``store``) are
plugins: the server distribution declares them in the entry-point group ``toonforge.admin``;
a client-only install has none.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from toonforge_client import __version__
from toonforge_client._calls import API_KEY_ENV, DEFAULT_URL, URL_ENV
from toonforge_client.cli import datasets, inference, jobs, models, sweeps
from toonforge_client.cli.base import (
    EXIT_API,
    EXIT_CONNECTION,
    EXIT_INTERRUPTED,
    EXIT_JOB,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_WAIT_TIMEOUT,
    Command,
    Ctx,
    UsageError,
    describe_api_error,
    err,
)
from toonforge_client.client import Client
from toonforge_client.errors import ApiError, ToonforgeConnectionError

__all__ = [
    "ADMIN_GROUP", "COMMANDS", "EXIT_API", "EXIT_CONNECTION", "EXIT_INTERRUPTED", "EXIT_JOB",
    "EXIT_BROKEN_PIPE", "EXIT_OK", "EXIT_USAGE", "EXIT_WAIT_TIMEOUT", "UsageError",
    "admin_commands",
    "build_parser", "main",
]

COMMANDS: tuple[Command, ...] = (*inference.COMMANDS, datasets.COMMAND, jobs.FINETUNE,
                                 jobs.JOBS, models.COMMAND, sweeps.COMMAND)

ADMIN_GROUP = "toonforge.admin"
# Help lines for the admin commands the server ships (any other plugin gets a generic line).
ADMIN_HELP = {
    "import": "convert an official checkpoint into a store version (server install)",
    "store": "list, show, activate or roll back versions in the local store (server install)",
    "keys": "create, list or revoke API keys in the jobs database (server install)",
    "pull": "download official weights and import them into the store (server install)",
}
# What installs each admin command: store and keys are torch-free (the server package);
# import and pull read PyTorch checkpoints (its worker extra).
ADMIN_INSTALL = {"store": "pip install toonforge", "keys": "pip install toonforge",
                 "import": "pip install 'toonforge[worker]' (with PyTorch)",
                 "pull": "pip install 'toonforge[worker]' (with PyTorch)"}
ADMIN_HINT = ("server admin commands (import, pull, store, keys) run on the machine that holds"
              " the model store and come with the server package: pip install toonforge"
              " (store, keys), pip install 'toonforge[worker]' (import, pull: with PyTorch)")
# Exit status when the reader of our output went away (`toonforge jobs show ID | head`):
# what a process killed by SIGPIPE reports, without a traceback.
EXIT_BROKEN_PIPE = 141
EPILOG = ("exit codes: 0 ok, 1 the server refused (code: message), 2 usage, 3 cannot reach the"
          " server, 4 job failed or cancelled, 5 --wait-timeout passed, 130 interrupted.")
# Global options that take a value (to find the command word before argparse runs).
_VALUE_OPTIONS = {"--url", "--timeout", "--api-key"}


# ----------------------------------------------------------------------------- plugins


def admin_commands() -> dict[str, Any]:
    """name -> entry point of the group ``toonforge.admin`` (loaded only when run)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ADMIN_GROUP)}


def _command_word(argv: Sequence[str]) -> int | None:
    """Index of the first word that is not a global option (or its value)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return i + 1 if i + 1 < len(argv) else None
        if arg.startswith("-"):
            i += 2 if arg in _VALUE_OPTIONS else 1
            continue
        return i
    return None


def run_admin(name: str, entry: Any, argv: list[str]) -> int:
    try:
        func = entry.load()
    except Exception as exc:  # a broken server install: say which plugin
        return _fail(EXIT_USAGE, f"the admin command {name!r} ({entry.value}) cannot load:"
                     f" {exc!r}")
    return int(func(argv) or 0)


# ----------------------------------------------------------------------------- parser


def _global_options(sub: bool) -> argparse.ArgumentParser:
    """Options every command takes; on subcommands they only override what was given."""
    p = argparse.ArgumentParser(add_help=False)
    d = argparse.SUPPRESS if sub else None
    p.add_argument("--url", default=d, help=f"server URL (default: ${URL_ENV}, else"
                   f" {DEFAULT_URL})")
    p.add_argument("--api-key", default=d, metavar="KEY",
                   help=f"API key, sent as Authorization: Bearer (default: ${API_KEY_ENV})")
    p.add_argument("--timeout", type=float, default=d if sub else 120.0,
                   help="seconds to wait for each answer (default 120)")
    p.add_argument("--json", action="store_true", default=d if sub else False,
                   help="print JSON instead of text")
    bars = p.add_mutually_exclusive_group()
    bars.add_argument("--progress", dest="progress", action="store_true",
                      default=d, help="show progress bars even when stderr is not a terminal")
    bars.add_argument("--no-progress", dest="progress", action="store_false", default=d,
                      help="never show progress bars")
    return p


def _add_command(sub: Any, command: Command, parents: list[argparse.ArgumentParser]) -> None:
    """One row of the table as a sub-parser (its actions as sub-parsers of that)."""
    p = sub.add_parser(command.name, help=command.help, parents=parents,
                       description=command.description or command.help)
    for a in command.args:
        p.add_argument(*a.flags, **a.options)
    if command.actions:
        actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
        for action in command.actions:
            _add_command(actions, action, parents)
    else:
        p.set_defaults(func=command.run)


def build_parser(admin: Sequence[str] = (),
                 commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    """argparse for ``commands``, plus a placeholder line per installed admin command."""
    parser = argparse.ArgumentParser(
        prog="toonforge", parents=[_global_options(False)],
        epilog=EPILOG if admin else f"{EPILOG}  {ADMIN_HINT}.",
        description="Client of a toonforge server: inference on files and folders, datasets,"
                    " fine-tune jobs, models.")
    parser.add_argument("--version", action="version",
                        version=f"toonforge-client {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parents = [_global_options(True)]
    for command in commands:
        _add_command(sub, command, parents)
    for name in admin:  # the plugin parses its own arguments (main hands them over)
        sub.add_parser(name, help=ADMIN_HELP.get(name, f"server admin command ({name})"),
                       add_help=False)
    return parser


# ----------------------------------------------------------------------------- main


def _fail(code: int, message: str) -> int:
    err(f"toonforge: error: {message}")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # inside the try: a closed pipe fails here, not at exit
        return code
    except BrokenPipeError:
        # Python's advice: point stdout at devnull so the interpreter's last flush is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    admin = admin_commands()
    i = _command_word(argv)
    if i is not None and argv[i] in admin:
        return run_admin(argv[i], admin[argv[i]], argv[i + 1:])
    if i is not None and argv[i] in ADMIN_HELP:
        return _fail(EXIT_USAGE, f"'{argv[i]}' is not installed here: it is a server admin"
                     " command, run on the machine that holds the model store; install it"
                     f" with {ADMIN_INSTALL[argv[i]]}")
    args = build_parser(sorted(admin)).parse_args(argv)
    try:
        with Client(args.url, timeout=args.timeout, api_key=args.api_key) as client:
            code: int = args.func(Ctx(args, client))  # set by each subcommand's parser
            return code
    except UsageError as exc:
        return _fail(EXIT_USAGE, str(exc))
    except ApiError as exc:
        hint = (f" (set --api-key or {API_KEY_ENV})"
                if exc.status_code in (401, 403) else "")
        return _fail(EXIT_API, describe_api_error(exc) + hint)
    except ToonforgeConnectionError as exc:
        return _fail(EXIT_CONNECTION, f"{exc} (set --url or {URL_ENV})")
    except BrokenPipeError:
        raise  # our reader went away: main() ends quietly
    except OSError as exc:  # a local file we could not read or write
        return _fail(EXIT_USAGE, str(exc))
    except KeyboardInterrupt:
        err("toonforge: interrupted")
        return EXIT_INTERRUPTED
