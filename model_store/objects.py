"""An S3-compatible object store (AWS S3, MinIO, Ceph RGW...) through boto3.

The model and dataset stores use it when ``TOONFORGE_STORE_URL`` is ``s3://bucket/prefix``
(docs/DEPLOY.md). Everything the stores need from S3 is here, and nothing more:

- plain reads, listings and deletes under the URL's prefix;
- **conditional writes**: ``put(..., if_absent=True)`` (``If-None-Match: *``) creates a key
  only if nobody else has, and ``put(..., if_match=etag)`` replaces it only if it is still
  the version that was read. A loser gets ``Conflict`` and re-reads; that is how pointers
  move without a lock server (AWS S3 since 2024, MinIO, moto);
- **content-addressed blobs**: ``blobs/sha256/<hex>``, uploaded with the SHA-256 checksum
  so the server refuses a transfer that was damaged on the way, and downloaded into a
  temporary file that is hashed before it gets its final name.

Why boto3: it is the reference S3 client, every S3-compatible server tests against it, and
its ``put_object`` speaks the conditional-write headers and checksums directly. fsspec/s3fs
would add an async layer (aiobotocore) and a file-system abstraction whose rename is a copy;
obstore is younger and lacks ``If-Match`` on older servers.

boto3 is an optional dependency (the ``s3`` extra); it is imported only when an S3 URL is
configured, so the default install needs nothing of it.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from model_store.errors import StoreError

BLOB_PREFIX = "blobs/sha256/"
CHUNK = 1024 * 1024


class Conflict(StoreError):
    """A conditional write lost: the key exists (``if_absent``) or changed (``if_match``)."""

    code = "store_conflict"
    http_status = 409


class ObjectStoreUnavailable(StoreError):
    """The object store could not be reached or refused the request."""

    code = "store_unavailable"
    http_status = 503


class BlobCorrupt(StoreError):
    code = "version_corrupt"
    http_status = 409


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or "some/prefix/" (always ends with "/" when not empty)

    @classmethod
    def parse(cls, url: str) -> S3Location:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"store URL must look like s3://bucket[/prefix], not {url!r}")
        prefix = parsed.path.strip("/")
        return cls(parsed.netloc, f"{prefix}/" if prefix else "")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def blob_key(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return f"{BLOB_PREFIX}{sha256}"


class ObjectStore:
    """Keys are relative to the location's prefix (``models/anime/active.json``)."""

    def __init__(self, location: S3Location, *, endpoint_url: str | None = None,
                 region: str = "us-east-1", client: Any | None = None) -> None:
        self.location = location
        if client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError as exc:  # pragma: no cover - the extra is part of dev
                raise StoreError("an s3:// store needs boto3: pip install 'toonforge[s3]'"
                                 ) from exc
            # Standard retries (with backoff) for throttling and 5xx; a dead endpoint fails
            # within seconds rather than hanging a request.
            client = boto3.client(
                "s3", endpoint_url=endpoint_url, region_name=region,
                config=Config(retries={"max_attempts": 4, "mode": "standard"},
                              connect_timeout=3, read_timeout=30,
                              s3={"addressing_style": "path"} if endpoint_url else None),
            )
        self.client = client

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None,
                 region: str = "us-east-1") -> ObjectStore:
        return cls(S3Location.parse(url), endpoint_url=endpoint_url, region=region)

    # ----- helpers
    def _key(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad object key {key!r}")
        return f"{self.location.prefix}{key}"

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code", "")
            if status == 412 or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise Conflict(f"{what}: changed by another writer") from None
            raise ObjectStoreUnavailable(f"the object store refused {what} ({code or status})"
                                         ) from None
        except BotoCoreError as exc:
            raise ObjectStoreUnavailable(f"the object store is unreachable ({what}):"
                                         f" {type(exc).__name__}") from None

    @staticmethod
    def _missing(exc: Exception) -> bool:
        response = getattr(exc, "response", None) or {}
        code = response.get("Error", {}).get("Code", "")
        return code in ("NoSuchKey", "404", "NotFound")

    # ----- reads
    def get(self, key: str) -> bytes | None:
        found = self.get_tagged(key)
        return None if found is None else found[0]

    def get_tagged(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, or None when there is no such key."""
        from botocore.exceptions import ClientError

        try:
            with self._errors(f"reading {key}"):
                try:
                    response = self.client.get_object(Bucket=self.location.bucket,
                                                      Key=self._key(key))
                except ClientError as exc:
                    if self._missing(exc):
                        return None
                    raise
                return response["Body"].read(), response["ETag"]
        except Conflict:  # pragma: no cover - a GET has no precondition
            return None

    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None when there is no such key."""
        from botocore.exceptions import ClientError

        with self._errors(f"reading {key}"):
            try:
                head = self.client.head_object(Bucket=self.location.bucket, Key=self._key(key))
            except ClientError as exc:
                if self._missing(exc) or exc.response.get("ResponseMetadata", {}).get(
                        "HTTPStatusCode") == 404:
                    return None
                raise
            return int(head["ContentLength"])

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, size) of every object under ``prefix`` (keys relative to the location)."""
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self.location.prefix)
        with self._errors(f"listing {prefix}"):
            for page in paginator.paginate(Bucket=self.location.bucket,
                                           Prefix=self._key(prefix)):
                for item in page.get("Contents", []):
                    yield item["Key"][strip:], int(item["Size"])

    def children(self, prefix: str) -> builtins.list[str]:
        """The names one level below ``prefix`` ("models/" -> ["anime", "matte"])."""
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        paginator = self.client.get_paginator("list_objects_v2")
        full = self._key(prefix) if prefix else self.location.prefix
        names: set[str] = set()
        with self._errors(f"listing {prefix}"):
            for page in paginator.paginate(Bucket=self.location.bucket, Prefix=full,
                                           Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    names.add(common["Prefix"][len(full):].rstrip("/"))
                for item in page.get("Contents", []):
                    names.add(item["Key"][len(full):])
        return sorted(n for n in names if n)

    # ----- writes
    def put(self, key: str, data: bytes, *, if_match: str | None = None,
            if_absent: bool = False, content_type: str = "application/octet-stream") -> str:
        """Write ``data``; returns the new ETag. ``Conflict`` when a condition fails."""
        extra: dict[str, Any] = {}
        if if_absent:
            extra["IfNoneMatch"] = "*"
        if if_match is not None:
            extra["IfMatch"] = if_match
        with self._errors(f"writing {key}"):
            response = self.client.put_object(Bucket=self.location.bucket, Key=self._key(key),
                                              Body=data, ContentType=content_type, **extra)
        return str(response["ETag"])

    def upload_file(self, key: str, path: Path) -> None:
        """Upload a (possibly large) file; multipart above boto3's threshold."""
        with self._errors(f"writing {key}"):
            self.client.upload_file(str(path), self.location.bucket, self._key(key),
                                    ExtraArgs={"ChecksumAlgorithm": "SHA256"})

    def download_file(self, key: str, path: Path) -> None:
        """Download into ``path`` via a temporary file beside it (never half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        os.close(fd)
        try:
            with self._errors(f"reading {key}"):
                self.client.download_file(self.location.bucket, self._key(key), tmp)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def delete(self, key: str) -> None:
        with self._errors(f"deleting {key}"):
            self.client.delete_object(Bucket=self.location.bucket, Key=self._key(key))

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many."""
        keys = [key for key, _ in self.list(prefix)]
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self._key(k)} for k in keys[start:start + 1000]]
            with self._errors(f"deleting {prefix}"):
                self.client.delete_objects(Bucket=self.location.bucket,
                                           Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    # ----- content-addressed blobs
    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        found = self.size(blob_key(sha256))
        return found is not None and (size is None or found == size)

    def put_blob(self, path: Path, sha256: str | None = None) -> str:
        """Upload ``path`` as ``blobs/sha256/<hex>`` unless it is there already; returns the
        hex digest. Blobs are immutable, so two writers of the same bytes cannot clash."""
        digest = sha256 or sha256_of(path)
        if not self.has_blob(digest, path.stat().st_size):
            with self._errors(f"writing blob {digest[:12]}"):
                self.client.upload_file(
                    str(path), self.location.bucket, self._key(blob_key(digest)),
                    ExtraArgs={"ChecksumAlgorithm": "SHA256",
                               "ChecksumSHA256": base64.b64encode(bytes.fromhex(digest)
                                                                  ).decode()}
                    if path.stat().st_size < 8 * 1024 * 1024 else
                    {"ChecksumAlgorithm": "SHA256"},
                )
        return digest

    def get_blob(self, sha256: str, path: Path) -> None:
        """Download blob ``sha256`` to ``path``, hashed before it gets its name: a blob
        whose bytes do not match its address raises ``BlobCorrupt`` and leaves nothing."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        os.close(fd)
        try:
            with self._errors(f"reading blob {sha256[:12]}"):
                self.client.download_file(self.location.bucket, self._key(blob_key(sha256)),
                                          tmp)
            if sha256_of(Path(tmp)) != sha256:
                raise BlobCorrupt(f"stored blob {sha256[:12]} does not match its sha256")
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (tests, MinIO first start)."""
        from botocore.exceptions import ClientError

        with self._errors("creating the bucket"):
            try:
                self.client.head_bucket(Bucket=self.location.bucket)
            except ClientError:
                self.client.create_bucket(Bucket=self.location.bucket)
