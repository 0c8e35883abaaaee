"""Downloading one official-weights file for ``toonforge pull`` (pull.py): streamed into
``<cache>/<name>.part``, resumed with an HTTP ``Range`` request after a cut, checked against
its sha256 and only then renamed into place; a progress bar on stderr.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import httpx

from model_store.manifest import sha256_file

_CHUNK = 1 << 16


class PullFailed(RuntimeError):
    """A download could not be fetched or proven; the store was not touched."""


@dataclass(frozen=True)
class PlannedFile:
    """One file to fetch: where from, and the checksum it must have."""

    part: str
    filename: str
    url: str
    sha256: str | None
    sha256_prefix: str | None
    size: int | None


def shown_url(url: str) -> str:
    """``url`` for messages: scheme, host and path (a query may hold a signed token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class Progress:
    """A one-line progress bar on stderr (a terminal), or a start and an end line."""

    def __init__(self, stream: IO[str], enabled: bool) -> None:
        self.stream, self.enabled = stream, enabled
        self.name, self.done, self.start, self.last = "", 0, 0.0, 0.0
        self.total: int | None = None

    def begin(self, name: str, url: str, done: int, total: int | None) -> None:
        self.name, self.total, self.done = name, total, done
        self.start = self.last = time.monotonic()
        resume = f", resuming at {done:,} bytes" if done else ""
        if not self.enabled:
            print(f"downloading {name} from {shown_url(url)}{resume}", file=self.stream)

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self.last >= 0.1:
            self.last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self.start, 1e-6) / 1e6
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            line = (f"\r{self.name} [{bar:<30}] {frac:4.0%} {self.done / 1e6:.1f}/"
                    f"{self.total / 1e6:.1f} MB {rate:.1f} MB/s")
        else:
            line = f"\r{self.name} {self.done / 1e6:.1f} MB {rate:.1f} MB/s"
        self.stream.write(line)
        self.stream.flush()

    def end(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()


def _cut_message(f: PlannedFile, have: int, total: int | None, tries: int, part: Path) -> str:
    of = f" of {total:,}" if total else ""
    return (f"download of {f.filename} from {shown_url(f.url)} was cut off at {have:,}{of}"
            f" bytes after {tries} tr{'y' if tries == 1 else 'ies'}; the bytes so far are kept"
            f" in {part} and the next pull resumes from there")


@dataclass
class _State:
    """What one file's download knows so far (kept across tries and a try's exception)."""

    have: int = 0  # bytes in the .part
    total: int | None = None  # the file's full size, once a server said it


def _fetch_once(client: httpx.Client, f: PlannedFile, part: Path, progress: Progress,
                state: _State) -> None:
    """One GET into ``part`` (a Range request when it holds bytes already), updating
    ``state``. Transport errors propagate."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with client.stream("GET", f.url, headers=headers) as r:
        if r.status_code == 416 and have:
            # Nothing left to send: the .part may be whole already (verified next).
            state.have = state.total = have
            return
        if r.status_code == 206 and have:
            match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", r.headers.get("content-range", ""))
            if not match or int(match.group(1)) != have:
                raise PullFailed(f"{shown_url(f.url)} answered a range request with"
                                 f" {r.headers.get('content-range')!r}, not bytes {have}-")
            total = int(match.group(2)) if match.group(2) != "*" else None
            mode = "ab"
        elif r.status_code == 200:
            have, mode = 0, "wb"  # no range support: start again
            length = r.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise PullFailed(f"download of {f.filename} failed: {shown_url(f.url)} answered"
                             f" HTTP {r.status_code} {r.reason_phrase}".rstrip())
        state.have, state.total = have, total or state.total
        progress.begin(f.filename, f.url, have, state.total or f.size)
        try:
            with part.open(mode) as out:
                for chunk in r.iter_bytes(_CHUNK):
                    out.write(chunk)
                    state.have += len(chunk)
                    progress.advance(len(chunk))
        finally:
            progress.end()


def download(f: PlannedFile, cache: Path, client: httpx.Client, progress: Progress, *,
             attempts: int = 3) -> Path:
    """``f`` as a verified file in ``cache`` (downloaded, resumed, or already there)."""
    cache.mkdir(parents=True, exist_ok=True)
    final, part = cache / f.filename, cache / f"{f.filename}.part"
    if final.exists():
        if _matches(sha256_file(final), f):
            print(f"{f.filename}: already downloaded, checksum verified ({final})",
                  file=progress.stream)
            return final
        final.unlink()
    state, tries = _State(), 0
    while tries < attempts:
        tries += 1
        try:
            _fetch_once(client, f, part, progress, state)
        except httpx.ConnectError as exc:
            raise PullFailed(f"cannot download {f.filename}: {_connect_reason(exc, f.url)}"
                             ) from exc
        except httpx.ConnectTimeout as exc:
            raise PullFailed(f"cannot download {f.filename}: no connection to"
                             f" {shown_url(f.url)} within the timeout"
                             " (TOONFORGE_PULL_TIMEOUT_S)") from exc
        except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            state.have = part.stat().st_size if part.exists() else 0
            if tries >= attempts:
                raise PullFailed(_cut_message(f, state.have, state.total or f.size, tries,
                                              part) + f" ({type(exc).__name__})") from exc
            continue
        except httpx.HTTPError as exc:
            raise PullFailed(f"download of {f.filename} from {shown_url(f.url)} failed:"
                             f" {type(exc).__name__}: {exc}") from exc
        if state.total is None or state.have >= state.total:
            break
    else:
        raise PullFailed(_cut_message(f, state.have, state.total, tries, part))
    got = sha256_file(part)
    if not _matches(got, f):
        part.unlink()
        want = f.sha256 or f"{f.sha256_prefix}..."
        raise PullFailed(f"checksum mismatch for {f.filename} from {shown_url(f.url)}:"
                         f" sha256 {got}, expected {want}; the download was deleted and"
                         " nothing was imported")
    os.replace(part, final)
    print(f"{f.filename}: {final.stat().st_size:,} bytes, sha256 {got} verified",
          file=progress.stream)
    return final


def _matches(digest: str, f: PlannedFile) -> bool:
    if f.sha256 is not None:
        return digest == f.sha256
    return f.sha256_prefix is not None and digest.startswith(f.sha256_prefix)


def _connect_reason(exc: httpx.ConnectError, url: str) -> str:
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    text = str(exc).lower()
    if "refused" in text:
        return f"connection to {where} refused"
    if "name" in text or "resolve" in text or "nodename" in text:
        return f"cannot resolve {parts.hostname}"
    return f"cannot connect to {where} ({exc})"
