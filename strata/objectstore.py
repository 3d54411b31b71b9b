"""Object storage behind one small interface: an S3 bucket/prefix or a local folder.

The source location and the data lake are both ``ObjectStore`` instances, chosen by URL
(``s3://bucket/prefix`` or a folder path). Keys are always relative to the store's prefix and
use ``/`` separators, so the pipelines never care which implementation they talk to.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from strata.errors import ConfigError, StrataError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from strata.settings import Settings


class ObjectChanged(StrataError):
    """The object under a key is no longer the version asked for (replaced meanwhile)."""


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its key (relative to the store), size and content identity."""

    key: str
    size: int
    etag: str
    last_modified: datetime


class ObjectStore(Protocol):
    url: str

    def exists(self) -> bool:
        """The location itself (bucket or folder) exists: an empty one is not an error, a
        missing one (a typo in its URL) is."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def put(self, key: str, data: bytes) -> ObjectInfo: ...

    def get(self, key: str, etag: str | None = None) -> bytes:
        """The object's bytes; with ``etag``, only while it is still that version (else
        :class:`ObjectChanged`), so bytes are never recorded under another version's identity."""
        ...

    def stat(self, key: str) -> ObjectInfo: ...

    def open(self, key: str) -> IO[bytes]: ...

    def delete(self, key: str) -> None: ...


def _clean_key(key: str) -> str:
    key = key.lstrip("/")
    if not key or any(part in ("", ".", "..") for part in key.split("/")):
        raise StrataError(f"invalid object key {key!r}")
    return key


class S3Store:
    """A bucket and prefix on S3 or any S3-compatible endpoint (boto3)."""

    def __init__(self, client: S3Client, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")

    def _full(self, key: str) -> str:
        key = _clean_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def exists(self) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("404", "NoSuchBucket", "NotFound"):
                return False
            raise StrataError(f"cannot read the bucket of {self.url}: {code} ({exc})") from exc
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix.lstrip("/")):
            for obj in page.get("Contents", []):
                yield ObjectInfo(
                    key=obj["Key"][len(base) :],
                    size=obj["Size"],
                    etag=obj["ETag"].strip('"'),
                    last_modified=obj["LastModified"],
                )

    def put(self, key: str, data: bytes) -> ObjectInfo:
        response = self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data)
        return ObjectInfo(
            key=key,
            size=len(data),
            etag=response["ETag"].strip('"'),
            last_modified=datetime.now(UTC),
        )

    def get(self, key: str, etag: str | None = None) -> bytes:
        from botocore.exceptions import ClientError

        condition = {"IfMatch": etag} if etag is not None else {}
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self._full(key), **condition  # type: ignore[arg-type]
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                raise ObjectChanged(f"{self.url}/{key} is no longer ETag {etag}") from exc
            raise
        return response["Body"].read()

    def stat(self, key: str) -> ObjectInfo:
        head = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        return ObjectInfo(
            key=key,
            size=head["ContentLength"],
            etag=head["ETag"].strip('"'),
            last_modified=head["LastModified"],
        )

    def open(self, key: str) -> IO[bytes]:
        return self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._full(key))


class LocalStore:
    """A folder on the local file system; the ETag is the MD5 of the content, as S3 gives it."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_clean_key(key).split("/"))

    def exists(self) -> bool:
        return self.root.is_dir()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.exists():
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith(".strata-tmp-"):
                    continue
                path = Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                yield self._info(key, path)

    def _info(self, key: str, path: Path) -> ObjectInfo:
        stat = path.stat()
        return ObjectInfo(
            key=key,
            size=stat.st_size,
            etag=_md5_file(path),
            last_modified=datetime.fromtimestamp(stat.st_mtime, UTC),
        )

    def stat(self, key: str) -> ObjectInfo:
        return self._info(key, self._path(key))

    def put(self, key: str, data: bytes) -> ObjectInfo:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # write-then-rename: a reader never sees half an object, as with S3
        fd, tmp = tempfile.mkstemp(prefix=".strata-tmp-", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
        stat = path.stat()
        return ObjectInfo(
            key=key,
            size=stat.st_size,
            etag=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            last_modified=datetime.fromtimestamp(stat.st_mtime, UTC),
        )

    def get(self, key: str, etag: str | None = None) -> bytes:
        data = self._path(key).read_bytes()
        if etag is not None and hashlib.md5(data, usedforsecurity=False).hexdigest() != etag:
            raise ObjectChanged(f"{self.url}/{key} is no longer ETag {etag}")
        return data

    def open(self, key: str) -> IO[bytes]:
        return self._path(key).open("rb")

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigError(f"{url!r} is not an s3://bucket/prefix URL")
    return parts.netloc, parts.path.strip("/")


def is_s3_url(url: str) -> bool:
    return urlsplit(url).scheme == "s3"


def s3_client(settings: Settings) -> S3Client:
    """The one boto3 client factory: embedded SeaweedFS or the configured endpoint."""
    import boto3
    from botocore.config import Config

    from strata.services import s3_connection

    endpoint, access_key, secret_key = s3_connection(settings)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=settings.s3_region,
        config=Config(
            retries={"max_attempts": 5, "mode": "standard"},
            s3={"addressing_style": "path"},
            max_pool_connections=16,
        ),
    )


def s3_failure(exc: BaseException) -> str | None:
    """One line for an S3 client failure (no endpoint, no credentials, a refusal), found on
    ``exc`` or the exceptions it was raised from; None when it is not one (then the caller's
    traceback stays)."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
    )

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, NoCredentialsError):
            return (
                "S3: no credentials: set STRATA_S3_ACCESS_KEY_ID and STRATA_S3_SECRET_ACCESS_KEY"
                " (or STRATA_S3_SECRET_ACCESS_KEY_FILE), or AWS credentials the usual way"
            )
        if isinstance(seen, EndpointConnectionError):
            return (
                f"S3: {seen} (an external endpoint is STRATA_S3_ENDPOINT_URL; the embedded one"
                " starts with `strata up`)"
            )
        if isinstance(seen, BotoCoreError | ClientError):
            return f"S3: {seen}"
        seen = seen.__cause__
    return None


def open_store(url: str, settings: Settings, client: S3Client | None = None) -> ObjectStore:
    """The store behind a location URL (``s3://bucket/prefix``, ``file://…`` or a folder)."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        bucket, prefix = split_s3_url(url)
        return S3Store(client or s3_client(settings), bucket, prefix)
    if parts.scheme == "file":
        return LocalStore(Path(parts.path))
    if parts.scheme == "":
        return LocalStore(Path(url))
    raise ConfigError(f"unsupported location {url!r}: use s3://bucket/prefix or a folder")
