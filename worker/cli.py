"""The server-side admin commands: ``toonforge import`` (convert a checkpoint into a store
version) and ``toonforge store`` (list, show, activate, roll back versions in the local store).

They plug into the client's ``toonforge`` command (toonforge_client/cli.py) through the
entry-point group ``toonforge.admin`` (``import_command``, ``store_command``); ``python -m
worker.cli [--store DIR] import|store ...`` runs them directly. It imports torch lazily,
only for ``import``, so listing and activating stay quick.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model_store.errors import StoreError
from model_store.store import ModelStore
from model_store.tasks import Task


def _store(args: argparse.Namespace) -> ModelStore:
    if args.store:
        return ModelStore(args.store)
    from service.config import get_settings

    return ModelStore(get_settings().store_dir)


def _cmd_import(args: argparse.Namespace) -> int:
    from worker.importer import import_checkpoint

    manifest = import_checkpoint(
        _store(args),
        task=Task(args.task),
        arch=args.arch,
        weights=Path(args.weights),
        netd=Path(args.netd) if args.netd else None,
        model=args.model,
        labels=Path(args.labels) if args.labels else None,
        activate=args.activate,
    )
    errors = ", ".join(f"{k}={v:.2e}" for k, v in manifest.parity.max_abs_error.items())
    state = "active" if args.activate else "inactive"
    print(f"imported {manifest.ref} ({manifest.task.value}/{manifest.arch}, {state});"
          f" parity passed: {errors} <= {manifest.parity.tolerance}")
    return 0


def _cmd_store(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.action == "list":
        for m in store.list_models():
            print(f"{m.name}\t{m.task.value}\tactive={m.active}\tversions={m.versions}")
    elif args.action == "show":
        if args.version is None:
            print(json.dumps(store.summary(args.name).__dict__, default=str, indent=2))
        else:
            print(store.manifest(args.name, args.version).model_dump_json(indent=2))
    elif args.action == "activate":
        if args.version is None:
            raise SystemExit("toonforge store activate NAME VERSION")
        previous = store.activate(args.name, args.version)
        print(f"{args.name}: active {previous} -> {args.version}")
    elif args.action == "rollback":
        print(f"{args.name}: rolled back to {store.rollback(args.name)}")
    return 0


STORE_HELP = "model store root (default: TOONFORGE_STORE_DIR)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toonforge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", help=STORE_HELP)
    # Also after the command (``toonforge import --store DIR``), where the client CLI passes
    # it; SUPPRESS keeps a value given before the command.
    store_option = argparse.ArgumentParser(add_help=False)
    store_option.add_argument("--store", default=argparse.SUPPRESS, help=STORE_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    imp = sub.add_parser("import", parents=[store_option],
                         help="convert an official checkpoint into a store version")
    imp.add_argument("--task", required=True, choices=[t.value for t in Task])
    imp.add_argument("--arch", required=True)
    imp.add_argument("--weights", required=True, help="checkpoint file (.pth, or .npz for dctnet)")
    imp.add_argument("--netd", help="dcgan only: the discriminator file (netd_200.pth)")
    imp.add_argument("--model", required=True, help="model name (a line of versions)")
    imp.add_argument("--labels", help="classify: one label per line (default: ImageNet-1k)")
    imp.add_argument("--activate", action="store_true", help="make the new version active")
    imp.set_defaults(func=_cmd_import)

    # Named "store", not "models": ``toonforge models`` is the HTTP client's command.
    store = sub.add_parser("store", parents=[store_option],
                           help="list, show, activate or roll back versions in the local store")
    store.add_argument("action", choices=["list", "show", "activate", "rollback"])
    store.add_argument("name", nargs="?")
    store.add_argument("version", nargs="?", type=int)
    store.set_defaults(func=_cmd_store)
    return parser


def import_command(argv: list[str]) -> int:
    """``toonforge import ...`` (entry point ``toonforge.admin: import``)."""
    return main(["import", *argv])


def store_command(argv: list[str]) -> int:
    """``toonforge store ...`` (entry point ``toonforge.admin: store``)."""
    return main(["store", *argv])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "store" and args.action != "list" and not args.name:
        print("toonforge: error: store", args.action, "needs a model NAME", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (StoreError, ValueError, KeyError, RuntimeError) as exc:
        # ImportRefused, CheckpointMismatch, UnknownArch, ParityFailed, store errors: the
        # message names the problem; a traceback would only hide it.
        print(f"toonforge: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
