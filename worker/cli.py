"""The server-side admin commands: ``toonforge import`` (convert a checkpoint into a store
version) and ``toonforge store`` (list, show, activate, roll back versions in the configured
store; ``push`` copies a local directory store into the configured S3 store).

They plug into the client's ``toonforge`` command (toonforge_client/cli.py) through the
entry-point group ``toonforge.admin`` (``import_command``, ``store_command``); ``python -m
worker.cli [--store DIR] import|store ...`` runs them directly. It imports torch lazily,
only for ``import``, so listing and activating stay quick.

Plugin families (``TOONFORGE_TASK_PLUGINS`` / ``TOONFORGE_WORKER_PLUGINS``, core/plugins.py)
are imported first: task specs at start, worker modules (nets, which need torch) when
``import`` looks up its architecture.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from core.errors import DomainError
from core.plugins import TASK_ENTRY_POINTS, WORKER_ENTRY_POINTS, import_modules
from core.settings import Settings, get_settings
from model_store.factory import is_remote, open_dataset_store, open_model_store, store_location
from model_store.notify import notifier_from_settings
from model_store.store import ModelStore
from tasks import list_tasks


def store_settings(settings: Settings, store: str | None) -> Settings:
    """``settings`` with ``--store DIR`` as ``store_dir``: the directory store itself, or
    with ``TOONFORGE_STORE_URL`` set, this command's working directory and cache."""
    return settings if store is None else settings.model_copy(update={"store_dir": Path(store)})


def _store(args: argparse.Namespace, *, create: bool) -> ModelStore:
    # Only ``import`` makes a store; reading commands refuse a directory that does not exist
    # (StoreMissing names TOONFORGE_STORE_DIR and --store) instead of creating an empty one.
    # The backend is the settings' (a directory, or S3: model_store/factory.py).
    settings = store_settings(args.settings, args.store)
    # Activations are announced to the API replicas when Redis is set (model_store/notify.py).
    return open_model_store(settings, create=create,
                            notifier=notifier_from_settings(settings, role="cli"))


def _parts(args: argparse.Namespace, part_flags: list[str]) -> dict[str, Path]:
    """The arch's checkpoint parts from the command line: the first is ``--weights``, each
    further part P is ``--P FILE``."""
    from worker.nets.checkpoints import ImportRefused
    from worker.nets.registry import get_arch

    arch = get_arch(args.arch, args.task)
    if Path(args.weights).is_dir():  # a release folder as published
        if part_flags:
            raise ImportRefused(f"--weights {args.weights} is a release folder: its files are"
                                f" found by name, so {' '.join(part_flags)} has no place")
        return arch.release_parts(Path(args.weights))
    first, *others = arch.official_parts
    flags = argparse.ArgumentParser(prog=f"toonforge import --arch {args.arch}")
    for part in others:
        flags.add_argument(f"--{part}", dest=part)
    extra = flags.parse_args(part_flags)
    missing = [part for part in others if getattr(extra, part) is None]
    if missing:
        wanted = " ".join(f"--{p} FILE" for p in missing)
        raise ImportRefused(f"{args.arch} needs {len(others) + 1} files: --weights FILE {wanted}")
    return {first: Path(args.weights), **{p: Path(getattr(extra, p)) for p in others}}


def _cmd_import(args: argparse.Namespace) -> int:
    import_modules(args.settings.worker_plugins, WORKER_ENTRY_POINTS)
    from worker.importer import import_checkpoint, parity_summary

    parts = _parts(args, args.part_flags)  # refused flags write nothing, not even a store
    if args.style is not None and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", args.style):
        raise SystemExit(f"toonforge: error: --style {args.style!r}: lowercase letters,"
                         " digits and dashes, at most 32")
    manifest = import_checkpoint(
        _store(args, create=True),
        task=args.task,
        arch=args.arch,
        parts=parts,
        model=args.model,
        labels=Path(args.labels) if args.labels else None,
        activate=args.activate,
        extra=None if args.style is None else {"style": {
            "name": args.style, "licence": args.licence or "not stated at import",
            "source": "toonforge import of " + ", ".join(p.name for p in parts.values())}},
    )
    state = "active" if args.activate else "inactive"
    print(f"imported {manifest.ref} ({manifest.task}/{manifest.arch}, {state});"
          f" {parity_summary(manifest)}")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    """``toonforge store push DIR``: every model version (manifests, blobs, the active
    pointer and its history) and every dataset of the directory store at DIR, into the
    S3 store that TOONFORGE_STORE_URL names."""
    from model_store.migrate import push_local_store
    from model_store.s3_datasets import S3DatasetStore
    from model_store.s3_models import S3ModelStore

    settings = store_settings(args.settings, args.store)
    if not is_remote(settings):
        raise SystemExit("toonforge: error: store push copies a local store into the S3 store:"
                         " set TOONFORGE_STORE_URL=s3://bucket/prefix first")
    source = Path(args.name)
    if not (source / "models").is_dir() and not (source / "datasets").is_dir():
        raise SystemExit(f"toonforge: error: {source} is not a store directory (it has"
                         " neither models/ nor datasets/)")
    models, datasets = open_model_store(settings), open_dataset_store(settings)
    assert isinstance(models, S3ModelStore) and isinstance(datasets, S3DatasetStore)
    summary = push_local_store(source, models, datasets)
    print(f"pushed {source} to {store_location(settings)}")
    for what, items in summary.as_dict().items():
        print(f"  {what.replace('_', ' ')}: {len(items)}"
              + (f" ({', '.join(items)})" if items else ""))
    return 1 if summary.corrupt_files or summary.versions_conflicting else 0


def _cmd_store(args: argparse.Namespace) -> int:
    if args.action == "push":
        return _cmd_push(args)
    store = _store(args, create=False)
    if args.action == "list":
        for m in store.list_models():
            print(f"{m.name}\t{m.task}\tactive={m.active}\tversions={m.versions}")
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


STORE_HELP = ("model store directory (default: TOONFORGE_STORE_DIR); with TOONFORGE_STORE_URL"
              " set, only this command's working directory and cache")
PARTS_EPILOG = """\
An architecture whose official checkpoint has several files takes the first as --weights and
each further part P as --P FILE (the part names are the architecture's official parts)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toonforge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", help=STORE_HELP)
    # Also after the command (``toonforge import --store DIR``), where the client CLI passes
    # it; SUPPRESS keeps a value given before the command.
    store_option = argparse.ArgumentParser(add_help=False)
    store_option.add_argument("--store", default=argparse.SUPPRESS, help=STORE_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    imp = sub.add_parser("import", parents=[store_option], epilog=PARTS_EPILOG,
                         help="convert an official checkpoint into a store version")
    imp.add_argument("--task", required=True, choices=list_tasks())
    imp.add_argument("--arch", required=True)
    imp.add_argument("--weights", required=True,
                     help="the (first) checkpoint file, or a release folder as published"
                          " (architectures with a release layout)")
    imp.add_argument("--model", required=True, help="model name (a line of versions)")
    imp.add_argument("--labels", help="class names, one per line, where the arch needs them")
    imp.add_argument("--activate", action="store_true", help="make the new version active")
    imp.add_argument("--style", help="the style name the version serves (GET /styles,"
                     " ?style=); lowercase letters, digits and dashes")
    imp.add_argument("--licence", help="the weights' licence, shown with the style")
    imp.set_defaults(func=_cmd_import)

    # Named "store", not "models": ``toonforge models`` is the HTTP client's command.
    store = sub.add_parser("store", parents=[store_option],
                           help="list, show, activate or roll back versions in the store;"
                           " push a local store into the S3 store")
    store.add_argument("action", choices=["list", "show", "activate", "rollback", "push"])
    store.add_argument("name", nargs="?", help="the model NAME (push: the local store DIR)")
    store.add_argument("version", nargs="?", type=int)
    store.set_defaults(func=_cmd_store)
    return parser


def import_command(argv: list[str]) -> int:
    """``toonforge import ...`` (entry point ``toonforge.admin: import``)."""
    return main(["import", *argv])


def store_command(argv: list[str]) -> int:
    """``toonforge store ...`` (entry point ``toonforge.admin: store``)."""
    return main(["store", *argv])


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    settings = settings or get_settings()
    # Before the parser: --task offers the registered tasks, plugins included.
    import_modules(settings.task_plugins, TASK_ENTRY_POINTS)
    parser = build_parser()
    args, part_flags = parser.parse_known_args(argv)
    if part_flags and args.command != "import":
        parser.error(f"unrecognized arguments: {' '.join(part_flags)}")
    args.settings, args.part_flags = settings, part_flags
    if args.command == "store" and args.action != "list" and not args.name:
        what = "a local store DIR" if args.action == "push" else "a model NAME"
        print("toonforge: error: store", args.action, "needs", what, file=sys.stderr)
        return 2
    try:
        rc: int = args.func(args)
        return rc
    except (DomainError, ValueError, KeyError, RuntimeError) as exc:
        # ImportRefused, CheckpointMismatch, UnknownArch, ParityFailed, store errors: the
        # message names the problem; a traceback would only hide it.
        print(f"toonforge: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
