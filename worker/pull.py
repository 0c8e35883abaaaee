"""``toonforge pull NAME``: download official weights from the catalogue (worker/catalogue.py),
prove they are the published files, then import them like ``toonforge import`` (strict load,
ONNX export, parity, publish).

Order of work, so that nothing unproven reaches the store:

1. every file's URL and expected sha256 is settled first (``--url``/``--sha256`` override
   the catalogue; ``TOONFORGE_PULL_BASE_URL`` mirrors the whole catalogue); a file with no
   known checksum and no ``--sha256`` is refused before any download;
2. each file is streamed into ``<cache>/<name>.part``; a cut download resumes there with an
   HTTP ``Range`` request (on the next try, or the next run); a progress bar goes to stderr;
3. the whole file's sha256 is checked; only a matching file is renamed to ``<cache>/<name>``
   (a mismatch deletes the ``.part``: a wrong file is not resumed);
4. only then is the store opened, and ``import_checkpoint`` runs its own checks before it
   writes anything.

A failure at steps 1-3 (wrong checksum, cut download, HTTP error, refused connection)
exits 1 with one line saying what and where, and leaves the store as it was.

Steps 2 and 3 are downloads.py. Entry point ``toonforge.admin: pull`` (``pull_command``);
``python -m worker.pull`` too.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import httpx

from core.errors import DomainError
from core.settings import Settings, get_settings
from worker.catalogue import CatalogueEntry, UnknownCatalogueEntry, catalogue, get_entry
from worker.downloads import PlannedFile, Progress, PullFailed, download, shown_url

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _check_url(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PullFailed(f"{what}: {url!r} is not an http(s) URL")
    return url


def _per_part(values: Sequence[str], entry: CatalogueEntry, flag: str) -> dict[str, str]:
    """``--url``/``--sha256`` values: ``VALUE`` is the first file's, ``PART=VALUE`` names the
    part (e.g. ``--sha256 netd=HEX`` for anime-faces)."""
    parts = [f.part for f in entry.files]
    out: dict[str, str] = {}
    for value in values:
        head, sep, tail = value.partition("=")
        if sep and head in parts and not head.startswith("http"):
            part, value = head, tail
        else:
            part = parts[0]
        if part in out:
            named = f"part {part!r}" if part else "the first file"
            raise PullFailed(f"{flag} given twice for {named} of {entry.name}")
        out[part] = value
    return out


def plan(entry: CatalogueEntry, *, urls: Sequence[str] = (), sha256s: Sequence[str] = (),
         base_url: str | None = None) -> list[PlannedFile]:
    """Every file of ``entry`` with its URL and expected checksum; refuses (before any
    download) a file whose checksum is not known and not given."""
    url_for = _per_part(urls, entry, "--url")
    sha_for = {p: v.strip().lower() for p, v in _per_part(sha256s, entry, "--sha256").items()}
    if base_url:
        _check_url(base_url, "TOONFORGE_PULL_BASE_URL")
    planned = []
    for f in entry.files:
        if f.part in url_for:
            url = _check_url(url_for[f.part], "--url")
        elif base_url:
            url = f"{base_url.rstrip('/')}/{f.filename}"
        else:
            url = f.url
        digest, prefix = f.sha256, f.sha256_prefix
        if f.part in sha_for:
            digest, prefix = sha_for[f.part], None
            if not _HEX64.match(digest):
                raise PullFailed(f"--sha256 for {f.filename}: {digest!r} is not a sha256"
                                 " (64 hex digits)")
        if digest is None and prefix is None:
            flag = "--sha256 HEX" if f.part == entry.files[0].part else f"--sha256 {f.part}=HEX"
            raise PullFailed(
                f"{f.filename} ({entry.name}) has no published sha256, so it cannot be"
                f" verified: pass {flag}, the sha256 of a copy you trust"
                " (sha256sum FILE)")
        planned.append(PlannedFile(f.part, f.filename, url, digest, prefix,
                                   f.size if f.part not in url_for else None))
    return planned


# ----------------------------------------------------------------------------- command


def _list(stream: IO[str], base_url: str | None = None) -> int:
    """One line per entry, then one indented line per file: where it is downloaded from
    (``TOONFORGE_PULL_BASE_URL`` applied) and its checksum, so a user who must pass
    ``--sha256`` knows which file to fetch and check."""
    for e in catalogue():
        if all(f.sha256 for f in e.files):
            check = "sha256 pinned"
        else:
            check = "sha256 prefix pinned" if e.verified else "needs --sha256"
        files = ", ".join(f.filename for f in e.files)
        print(f"{e.name}\t{e.task}/{e.arch}\t-> {e.model}\t{check}\t{files}\t{e.description}",
              file=stream)
        for f in e.files:
            # The catalogue's public URLs in full (Google Drive's query is the file id); a
            # mirror's query may hold a token.
            url = shown_url(f"{base_url.rstrip('/')}/{f.filename}") if base_url else f.url
            digest = (f"sha256 {f.sha256}" if f.sha256 else
                      f"sha256 prefix {f.sha256_prefix}" if f.sha256_prefix else
                      "sha256 not published: --sha256" + (f" {f.part}=HEX" if f.part else
                                                          " HEX"))
            print(f"  {f.part or 'weights'}\t{url}\t{digest}"
                  + (f"\t{f.source}" if f.source else ""), file=stream)
    return 0


def build_parser() -> argparse.ArgumentParser:
    names = ", ".join(e.name for e in catalogue())
    p = argparse.ArgumentParser(
        prog="toonforge pull",
        description="Download official weights (sha256-verified, resumable) and import them"
                    f" into the local model store. Catalogue: {names}.",
        epilog="--url and --sha256 take VALUE for the first file or PART=VALUE (e.g."
               " --sha256 netd=HEX for anime-faces). Exit 1 when a download cannot be"
               " fetched or proven (the store is left as it was).")
    p.add_argument("name", nargs="?", help="catalogue entry (see --list)")
    p.add_argument("--list", action="store_true", help="print the catalogue and exit")
    p.add_argument("--model", help="store model to import into (default: the entry's)")
    p.add_argument("--activate", action="store_true", help="make the new version active")
    p.add_argument("--url", action="append", default=[], metavar="[PART=]URL",
                   help="fetch from this mirror or private copy instead")
    p.add_argument("--sha256", action="append", default=[], metavar="[PART=]HEX",
                   help="the file's sha256 (required where the catalogue pins none)")
    p.add_argument("--labels", help="class names, one per line (a classifier's labels)")
    p.add_argument("--store", help="model store directory (default: TOONFORGE_STORE_DIR; with"
                   " TOONFORGE_STORE_URL set, only this command's cache)")
    p.add_argument("--cache-dir", help="download cache (default: TOONFORGE_PULL_CACHE_DIR,"
                   " else <TOONFORGE_DATA_DIR>/downloads)")
    bars = p.add_mutually_exclusive_group()
    bars.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="draw the progress bar even when stderr is not a terminal")
    bars.add_argument("--no-progress", dest="progress", action="store_false",
                      help="never draw the progress bar")
    return p


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from core.plugins import WORKER_ENTRY_POINTS, import_modules
    from model_store.factory import open_model_store
    from model_store.store import validate_name
    from worker.cli import store_settings

    entry = get_entry(args.name)
    model = args.model or entry.model
    validate_name(model)
    if args.labels and not Path(args.labels).is_file():
        raise PullFailed(f"{args.labels} does not exist or is not a file")
    files = plan(entry, urls=args.url, sha256s=args.sha256, base_url=settings.pull_base_url)
    cache = Path(args.cache_dir or settings.pull_cache_dir or Path(settings.data_dir) /
                 "downloads")
    enabled = sys.stderr.isatty() if args.progress is None else args.progress
    progress = Progress(sys.stderr, enabled)
    timeout = httpx.Timeout(settings.pull_timeout_s)
    with httpx.Client(follow_redirects=True, timeout=timeout) as client:
        paths = {f.part: download(f, cache, client, progress, attempts=settings.pull_attempts)
                 for f in files}

    # Verified: now, and only now, the store (import_checkpoint checks before it writes).
    import_modules(settings.worker_plugins, WORKER_ENTRY_POINTS)
    from worker.importer import import_checkpoint, parity_summary

    style = None if entry.style is None else {"style": {
        "name": entry.style, "licence": entry.licence,
        "source": f"toonforge pull {entry.name}: {entry.files[0].url}"}}
    manifest = import_checkpoint(
        open_model_store(store_settings(settings, args.store), create=True),
        task=entry.task, arch=entry.arch, parts=paths, model=model,
        labels=Path(args.labels) if args.labels else None, activate=args.activate,
        extra=style)
    state = "active" if args.activate else "inactive"
    print(f"pulled {entry.name}: imported {manifest.ref} ({manifest.task}/{manifest.arch},"
          f" {state}); {parity_summary(manifest)}")
    return 0


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if not args.list and not args.name:
        parser.error("name a catalogue entry (toonforge pull --list shows them)")
    settings = settings or get_settings()
    if args.list:
        return _list(sys.stdout, settings.pull_base_url)
    try:
        return _run(args, settings)
    except KeyboardInterrupt:
        print("toonforge: interrupted; a partial download is kept and the next pull resumes"
              " it", file=sys.stderr)
        return 130
    except (PullFailed, UnknownCatalogueEntry, DomainError, ValueError, KeyError,
            RuntimeError, OSError) as exc:
        # Download, checksum, strict-load, parity and store errors name the problem; a
        # traceback would only hide it.
        print(f"toonforge: error: {exc}", file=sys.stderr)
        return 1


def pull_command(argv: list[str]) -> int:
    """``toonforge pull ...`` (entry point ``toonforge.admin: pull``)."""
    return main(argv)


if __name__ == "__main__":
    sys.exit(main())
