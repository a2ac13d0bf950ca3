"""`upload`: put a file or directory into a local directory or S3-compatible storage.

`destination` is a path or `file://` URL (a directory when it ends with `/` or exists as one), or
`s3://bucket/prefix` (a key prefix when it ends with `/` or names only the bucket). S3 needs the
optional extra `pip install 'taskd[s3]'` (boto3); credentials and region come from the options or
from the standard AWS environment and configuration files.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pydantic import Field, StrictBool, StrictInt, StrictStr, field_validator

from taskd.processor import Context, ProcessorOptions, ProcessorType, StepFailed
from taskd.processors.files import Cancelled, copy_tree, place, run_file_work


class UploadOptions(ProcessorOptions):
    source: StrictStr | None = Field(None, description="file or directory; default: the previous step's output")
    destination: StrictStr = Field(description="a path, file:///dir/, or s3://bucket/prefix/")
    overwrite: StrictBool = Field(
        False, description="replace what is already at the destination (this task's own uploads are always replaced)"
    )
    endpoint_url: StrictStr | None = Field(None, description="S3-compatible endpoint (MinIO, Ceph, ...)")
    region: StrictStr | None = Field(None, description="S3 region")
    access_key_id: StrictStr | None = Field(None, description="S3 access key (default: AWS environment)")
    secret_access_key: StrictStr | None = Field(None, description="S3 secret key (default: AWS environment)")
    session_token: StrictStr | None = Field(None, description="S3 session token")
    multipart_threshold: StrictInt = Field(
        8 * 1024 * 1024, ge=5 * 1024 * 1024, description="bytes above which S3 uploads go in parts"
    )
    multipart_chunksize: StrictInt = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024, description="bytes per S3 part")

    @field_validator("destination")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme = urlparse(value).scheme
        if scheme not in ("", "file", "s3"):
            raise ValueError(f"destination must be a path, file:// or s3:// URL, got {value!r}")
        if scheme == "s3":
            if not urlparse(value).netloc:
                raise ValueError(f"s3 destination needs a bucket: s3://bucket/prefix/, got {value!r}")
            if importlib.util.find_spec("boto3") is None:
                raise ValueError("s3:// destinations need boto3: pip install 'taskd[s3]'")
        return value


class UploadProcessor:
    def __init__(self, options: UploadOptions) -> None:
        self.options = options

    async def run(self, ctx: Context) -> Mapping[str, Any]:
        o = ctx.render(self.options)
        source = ctx.input_path(o.source, "source")
        if not source.exists():
            raise StepFailed(f"source {source} does not exist", permanent=True)
        started = time.monotonic()
        if urlparse(o.destination).scheme == "s3":
            url, files, size = await self._to_s3(ctx, o, source)
        else:
            url, files, size = await self._to_directory(ctx, o, source)
        ctx.info(f"uploaded {source} to {url}: {files} file(s), {size} bytes in {time.monotonic() - started:.2f}s")
        return {"output": url, "upload": {"source": str(source), "url": url, "files": files, "bytes": size}}

    async def _to_directory(self, ctx: Context, o: UploadOptions, source: Path) -> tuple[str, int, int]:
        parsed = urlparse(o.destination)
        raw = unquote(parsed.path) if parsed.scheme == "file" else o.destination
        target = ctx.resolve(raw)
        if raw.endswith("/") or target.is_dir():
            target = target / source.name
        files, size = await run_file_work(
            ctx,
            f"upload {source} to {target}",
            lambda cancel: place(lambda tmp: copy_tree(source, tmp, cancel), target, o.overwrite, ctx.task_id),
        )
        return target.as_uri(), files, size

    async def _to_s3(self, ctx: Context, o: UploadOptions, source: Path) -> tuple[str, int, int]:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        parsed = urlparse(o.destination)
        bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
        if not prefix or prefix.endswith("/"):
            base = f"{prefix}{source.name}"
        else:
            base = prefix
        pairs = _s3_pairs(source, base)
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=o.endpoint_url,
            region_name=o.region,
            aws_access_key_id=o.access_key_id,
            aws_secret_access_key=o.secret_access_key,
            aws_session_token=o.session_token,
        )
        config = TransferConfig(multipart_threshold=o.multipart_threshold, multipart_chunksize=o.multipart_chunksize)

        def work(cancel: threading.Event) -> int:
            def progress(_: int) -> None:
                if cancel.is_set():
                    raise Cancelled

            total = 0
            extra = {"Metadata": {S3_PRODUCT_KEY: ctx.task_id}}
            for path, key in pairs:
                if not o.overwrite:
                    owner = _owner(client, bucket, key, ClientError)
                    if owner is not None and owner != ctx.task_id:
                        raise StepFailed(
                            f"s3://{bucket}/{key} already exists and no earlier run of this task produced it; "
                            "set overwrite: true to replace it"
                        )
                client.upload_file(str(path), bucket, key, ExtraArgs=extra, Config=config, Callback=progress)
                total += path.stat().st_size
            return total

        try:
            size = await run_file_work(ctx, f"upload {source} to s3://{bucket}/{base}", work)
        except (BotoCoreError, ClientError) as exc:
            raise StepFailed(f"upload to s3://{bucket}/{base} failed: {exc}") from None
        except Exception as exc:  # s3transfer wraps errors raised in callbacks and threads
            if isinstance(exc, StepFailed):
                raise
            if _caused_by(exc, Cancelled):
                raise asyncio.CancelledError from None
            raise StepFailed(f"upload to s3://{bucket}/{base} failed: {type(exc).__name__}: {exc}") from None
        return f"s3://{bucket}/{base}", len(pairs), size


def _s3_pairs(source: Path, base: str) -> list[tuple[Path, str]]:
    """(file, key) for a file, or for every file under a directory (keys keep the tree's layout)."""
    if not source.is_dir():
        return [(source, base)]
    return [(p, f"{base}/{p.relative_to(source).as_posix()}") for p in sorted(source.rglob("*")) if p.is_file()]


S3_PRODUCT_KEY = "taskd-task"
"""Object metadata naming the task whose run uploaded the object."""


def _owner(client: Any, bucket: str, key: str, client_error: type[Exception]) -> str | None:
    """None when the object does not exist; else the task that uploaded it ("" for another writer)."""
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except client_error as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):  # type: ignore[attr-defined]
            return None
        raise
    return str(head.get("Metadata", {}).get(S3_PRODUCT_KEY, ""))


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


UPLOAD = ProcessorType("upload", UploadOptions, "upload a file or directory to a directory or S3", UploadProcessor)
