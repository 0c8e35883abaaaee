"""``toonforge keys create|list|revoke``: manage API keys in the jobs database.

An admin command of the server install (entry point ``toonforge.admin: keys``): it works
on the database the API processes use (``TOONFORGE_DATABASE_URL``, else the SQLite file
under ``TOONFORGE_DATA_DIR``), not over HTTP, so it is how the first admin key is made.
Torch-free; ``python -m jobs.keys_cli ...`` runs it without the client.

    toonforge keys create --name ci --scopes infer,train [--rps 5 --burst 10 ...]
    toonforge keys list [--json] [--active]
    toonforge keys revoke KEY_ID

``create`` prints the key once (stdout; nothing else there, so ``KEY=$(toonforge keys
create ...)`` works); only its HMAC is stored. A revoked key stops working within
``TOONFORGE_API_KEY_CACHE_S`` (5 s) in every API process.
"""

from __future__ import annotations

import argparse
import json
import sys

from sqlalchemy.exc import SQLAlchemyError

from core.errors import DomainError
from core.settings import Settings, get_settings
from jobs.db import Database
from jobs.keys import SCOPES, ApiKey, KeyLimits, KeyStore


def _limit_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("per-key limits (default: the server's settings;"
                                      " 0: no limit)")
    group.add_argument("--rps", type=float, help="requests per second (token refill rate)")
    group.add_argument("--burst", type=int, help="requests at once after a quiet spell")
    group.add_argument("--max-running-jobs", type=int, help="jobs running at once")
    group.add_argument("--max-queued-jobs", type=int, help="jobs waiting in the queue")
    group.add_argument("--max-dataset-bytes", type=int, help="bytes of all its datasets")
    group.add_argument("--max-dataset-files", type=int, help="files of all its datasets")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="toonforge keys", description="Create, list and revoke API keys (in the jobs"
        " database the API uses: TOONFORGE_DATABASE_URL or TOONFORGE_DATA_DIR).")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="make a key and print it (once)")
    create.add_argument("--name", required=True, help="who or what uses it")
    create.add_argument("--scopes", required=True,
                        help=f"comma list of {', '.join(SCOPES)} (admin grants all)")
    create.add_argument("--json", action="store_true", help="print the key's record as JSON")
    _limit_flags(create)
    listing = sub.add_parser("list", help="every key (id, name, scopes, created, revoked)")
    listing.add_argument("--json", action="store_true", help="JSON lines")
    listing.add_argument("--active", action="store_true", help="leave out revoked keys")
    revoke = sub.add_parser("revoke", help="revoke a key (within seconds everywhere)")
    revoke.add_argument("key_id", metavar="KEY_ID", help="the id `keys list` shows")
    return parser


def _row(key: ApiKey) -> str:
    own = ", ".join(f"{k}={v}" for k, v in key.limits.as_dict().items() if v is not None)
    revoked = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
    return (f"{key.id}  {key.name}  {','.join(key.scopes)}  created"
            f" {key.created_at:%Y-%m-%d %H:%M}  {revoked}" + (f"  {own}" if own else ""))


def run(args: argparse.Namespace, store: KeyStore) -> int:
    if args.action == "create":
        limits = KeyLimits(rps=args.rps, burst=args.burst,
                           max_running_jobs=args.max_running_jobs,
                           max_queued_jobs=args.max_queued_jobs,
                           max_dataset_bytes=args.max_dataset_bytes,
                           max_dataset_files=args.max_dataset_files)
        key, plaintext = store.create(args.name, args.scopes.split(","), limits)
        if args.json:
            print(json.dumps({**key.as_dict(), "key": plaintext}, indent=2))
        else:
            print(plaintext)
        print(f"created key {key.id} ({key.name}; scopes {','.join(key.scopes)}). It is shown"
              " only now: store it safely. Send it as 'Authorization: Bearer <key>'.",
              file=sys.stderr)
    elif args.action == "list":
        keys = store.list(include_revoked=not args.active)
        for key in keys:
            print(json.dumps(key.as_dict()) if args.json else _row(key))
        if not keys and not args.json:
            print(f"no {'active ' if args.active else ''}API keys: toonforge keys create"
                  " --name NAME --scopes admin", file=sys.stderr)
    elif args.action == "revoke":
        key = store.revoke(args.key_id)
        print(f"revoked {key.id} ({key.name}) at {key.revoked_at:%Y-%m-%d %H:%M:%S} UTC;"
              " API processes refuse it within their key cache time", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings or get_settings()
    db = Database.from_settings(settings)
    try:
        db.create_schema()
        store = KeyStore.open(db.sessions, settings.api_key_secret)
        return run(args, store)
    except DomainError as exc:  # unknown scope or key id, bad name or limit
        print(f"toonforge: error: {exc.code}: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"toonforge: error: cannot use the jobs database ({type(exc).__name__}):"
              f" {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        db.dispose()


def keys_command(argv: list[str]) -> int:
    """``toonforge keys ...`` (entry point ``toonforge.admin: keys``)."""
    return main(argv)


if __name__ == "__main__":
    sys.exit(main())
