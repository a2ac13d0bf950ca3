"""File processors: `copy`, `compress` and `rotate`.

The file work runs in a worker thread so a large copy never stalls scheduling. The thread checks a
cancel flag between chunks: on stop or timeout it stops within one chunk and removes its partial
output. Outputs are written under a temporary name and renamed into place when complete, so a
reader never sees half a file. Each processor puts its output path in the context as `output`,
which the next file processor (or `upload`) uses when it is not given a path of its own.
"""

from __future__ import annotations

import asyncio
import bz2
import contextlib
import errno
import glob
import gzip
import lzma
import os
import re
import secrets
import shutil
import stat
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from pydantic import Field, StrictBool, StrictInt, StrictStr, model_validator

from taskd.processor import Context, Duration, ProcessorOptions, ProcessorType, StepFailed

CHUNK = 1 << 20
T = TypeVar("T")


class Cancelled(Exception):
    """Raised inside a worker thread when the step was stopped."""


async def in_thread(work: Callable[[threading.Event], T]) -> T:
    """Run `work(cancel)` in a thread; on cancellation set `cancel` and wait for it to wind down."""
    cancel = threading.Event()
    future = asyncio.get_running_loop().run_in_executor(None, work, cancel)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        cancel.set()
        with contextlib.suppress(BaseException):
            await future
        raise


FAILS_UNTIL_IT_EXISTS = "the step fails, and is not retried, unless it appears"


def missing_source(path: str | None, option: str, base_dir: Path, outcome: str = FAILS_UNTIL_IT_EXISTS) -> list[str]:
    """A warning when `path` (not a template, not the previous step's output) does not exist now."""
    if not path or "{" in path:
        return []
    resolved = (base_dir / Path(path).expanduser()).resolve()
    if resolved.exists() or resolved.is_symlink():
        return []
    return [f"{option} {resolved} does not exist (yet): {outcome}"]


def explain(exc: OSError, action: str) -> StepFailed:
    """An OSError as a step failure an operator can act on."""
    where = exc.filename or ""
    if exc.errno == errno.ENOSPC:
        return StepFailed(f"{action}: no space left on device ({where})")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StepFailed(f"{action}: permission denied: {where}")
    if exc.errno == errno.ENOENT:
        return StepFailed(f"{action}: no such file or directory: {where}")
    return StepFailed(f"{action}: {exc.strerror or exc}: {where}")


def partial_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial-{secrets.token_hex(4)}")


def remove(path: Path) -> None:
    """Delete a file, link or directory tree; missing is fine."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def copy_stream(src: IO[bytes], dst: IO[bytes], cancel: threading.Event) -> int:
    total = 0
    while chunk := src.read(CHUNK):
        if cancel.is_set():
            raise Cancelled
        dst.write(chunk)
        total += len(chunk)
    return total


def _copy_file(src: Path, dst: Path, cancel: threading.Event) -> int:
    with src.open("rb") as reader, dst.open("wb") as writer:
        size = copy_stream(reader, writer, cancel)
    shutil.copystat(src, dst)
    return size


def copy_tree(src: Path, dst: Path, cancel: threading.Event) -> tuple[int, int]:
    """Copy a file or a directory tree (symlinks as links), keeping modes and mtimes.
    Returns (files, bytes)."""
    if src.is_symlink() or not src.is_dir():
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
            return 1, 0
        return 1, _copy_file(src, dst, cancel)
    files = size = 0
    dst.mkdir()
    directories: list[tuple[Path, Path]] = [(src, dst)]
    for root, dirnames, filenames in os.walk(src):
        base = Path(root)
        target = dst / base.relative_to(src)
        for name in sorted(dirnames):
            if (base / name).is_symlink():
                os.symlink(os.readlink(base / name), target / name)
                files += 1
                dirnames.remove(name)
                continue
            (target / name).mkdir()
            directories.append((base / name, target / name))
        for name in sorted(filenames):
            if cancel.is_set():
                raise Cancelled
            path = base / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                os.symlink(os.readlink(path), target / name)
            elif stat.S_ISREG(mode):
                size += _copy_file(path, target / name, cancel)
            else:
                continue  # sockets, fifos, devices are not copied
            files += 1
    for source_dir, target_dir in reversed(directories):  # after the files, which touch directory mtimes
        shutil.copystat(source_dir, target_dir)
    return files, size


PRODUCT_ATTRIBUTE = "user.taskd.task"
"""Extended attribute naming the task whose run produced a file or directory."""


def produced_by(path: Path) -> str | None:
    """The task that produced `path` (None: not taskd, or a file system without user xattrs)."""
    try:
        return os.getxattr(path, PRODUCT_ATTRIBUTE, follow_symlinks=False).decode()
    except (OSError, UnicodeDecodeError):
        return None


def place(work: Callable[[Path], T], target: Path, overwrite: bool, task_id: str | None = None) -> T:
    """Build `target` under a temporary name with `work(tmp)`, then rename it into place.

    An existing target is replaced when `overwrite` is set, or when an earlier run of the same
    task produced it (it carries the task's id in an extended attribute): a job whose product has
    a fixed name replaces its own previous product, and nothing else, run after run.
    """
    exists = target.exists() or target.is_symlink()
    if exists and not overwrite and (task_id is None or produced_by(target) != task_id):
        raise StepFailed(
            f"{target} already exists and no earlier run of this task produced it; set overwrite: true to replace it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(target)
    try:
        result = work(tmp)
        if task_id is not None and not tmp.is_symlink():
            with contextlib.suppress(OSError):  # without user xattrs, only overwrite: true replaces it
                os.setxattr(tmp, PRODUCT_ATTRIBUTE, task_id.encode())
        if exists:
            remove(target)
        os.replace(tmp, target)
        return result
    except BaseException:
        remove(tmp)
        raise


async def run_file_work(ctx: Context, action: str, work: Callable[[threading.Event], T]) -> T:
    try:
        return await in_thread(work)
    except OSError as exc:
        raise explain(exc, action) from None
    except Cancelled:  # the thread saw the flag before the task saw its cancellation
        raise asyncio.CancelledError from None


# -- copy ----------------------------------------------------------------------------------------


class CopyOptions(ProcessorOptions):
    source: StrictStr | None = Field(None, description="file or directory; default: the previous step's output")
    destination: StrictStr = Field(
        description="target path; into it when it is an existing directory and the source a file"
    )
    overwrite: StrictBool = Field(
        False, description="replace an existing destination (one this task produced is always replaced)"
    )

    def warnings(self, base_dir: Path) -> list[str]:
        return missing_source(self.source, "source", base_dir)


class CopyProcessor:
    def __init__(self, options: CopyOptions) -> None:
        self.options = options

    async def run(self, ctx: Context) -> Mapping[str, Any]:
        o = ctx.render(self.options)
        source = ctx.input_path(o.source, "source")
        target = ctx.resolve(o.destination)
        if not source.exists() and not source.is_symlink():
            raise StepFailed(f"source {source} does not exist", permanent=True)
        if source.is_dir() and (target == source or source in target.parents):
            raise StepFailed(f"refusing to copy directory {source} into itself ({target})", permanent=True)
        if target.is_dir() and not source.is_dir():
            target = target / source.name
        started = time.monotonic()
        files, size = await run_file_work(
            ctx,
            f"copy {source} to {target}",
            lambda cancel: place(lambda tmp: copy_tree(source, tmp, cancel), target, o.overwrite, ctx.task_id),
        )
        ctx.info(f"copied {source} to {target}: {files} file(s), {size} bytes in {time.monotonic() - started:.2f}s")
        return {
            "output": str(target),
            "copy": {"source": str(source), "destination": str(target), "files": files, "bytes": size},
        }


# -- compress ------------------------------------------------------------------------------------

Algorithm = Literal["gzip", "bzip2", "xz"]
SUFFIX = {"gzip": ".gz", "bzip2": ".bz2", "xz": ".xz"}
TAR_MODE = {"gzip": "w:gz", "bzip2": "w:bz2", "xz": "w:xz"}


class CompressOptions(ProcessorOptions):
    path: StrictStr | None = Field(None, description="file or directory; default: the previous step's output")
    algorithm: Algorithm = Field(
        "gzip", description="gzip, bzip2 or xz (a directory becomes a .tar.gz/.tar.bz2/.tar.xz)"
    )
    destination: StrictStr | None = Field(None, description="archive path; default: the source plus .gz, .tar.gz, ...")
    level: StrictInt | None = Field(None, ge=0, le=9, description="compression level")
    remove_source: StrictBool = Field(False, description="delete the source after a successful compression")
    overwrite: StrictBool = Field(False, description="replace an existing archive")

    def warnings(self, base_dir: Path) -> list[str]:
        return missing_source(self.path, "path", base_dir)


class _Reader:
    """A file wrapper whose reads stop when the step is cancelled."""

    def __init__(self, raw: IO[bytes], cancel: threading.Event) -> None:
        self._raw = raw
        self._cancel = cancel

    def read(self, size: int = -1) -> bytes:
        if self._cancel.is_set():
            raise Cancelled
        return self._raw.read(size)


def _open_compressed(path: Path, algorithm: str, level: int | None) -> IO[bytes]:
    if algorithm == "gzip":
        return gzip.open(path, "wb", compresslevel=9 if level is None else level)  # type: ignore[return-value]
    if algorithm == "bzip2":
        return bz2.open(path, "wb", compresslevel=9 if level is None else max(level, 1))
    return lzma.open(path, "wb", preset=6 if level is None else level)


def _walk(root: Path) -> Iterator[Path]:
    yield root
    for base, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [*dirnames, *sorted(filenames)]:
            yield Path(base) / name


def _compress(source: Path, tmp: Path, algorithm: str, level: int | None, cancel: threading.Event) -> tuple[int, int]:
    if not source.is_dir():
        with source.open("rb") as reader, _open_compressed(tmp, algorithm, level) as writer:
            return 1, copy_stream(reader, writer, cancel)
    files = size = 0
    kwargs: dict[str, Any] = (
        {} if level is None else ({"preset": level} if algorithm == "xz" else {"compresslevel": max(level, 1)})
    )
    with tarfile.open(tmp, TAR_MODE[algorithm], **kwargs) as tar:  # type: ignore[call-overload]
        for path in _walk(source):
            if cancel.is_set():
                raise Cancelled
            arcname = str(Path(source.name) / path.relative_to(source))
            info = tar.gettarinfo(path, arcname)
            if info is None:  # a socket or similar: not archivable
                continue
            if info.isfile():
                with path.open("rb") as raw:
                    tar.addfile(info, _Reader(raw, cancel))
                files += 1
                size += info.size
            else:
                tar.addfile(info)
    return files, size


class CompressProcessor:
    def __init__(self, options: CompressOptions) -> None:
        self.options = options

    async def run(self, ctx: Context) -> Mapping[str, Any]:
        o = ctx.render(self.options)
        source = ctx.input_path(o.path, "path")
        if not source.exists():
            raise StepFailed(f"{source} does not exist", permanent=True)
        suffix = (".tar" if source.is_dir() else "") + SUFFIX[o.algorithm]
        target = ctx.resolve(o.destination) if o.destination else source.with_name(source.name + suffix)
        if source.is_dir() and (target == source or source in target.parents):
            raise StepFailed(f"refusing to write the archive {target} inside the directory it archives", permanent=True)
        started = time.monotonic()

        def work(cancel: threading.Event) -> tuple[int, int]:
            return place(
                lambda tmp: _compress(source, tmp, o.algorithm, o.level, cancel), target, o.overwrite, ctx.task_id
            )

        files, size_in = await run_file_work(ctx, f"compress {source}", work)
        size_out = target.stat().st_size
        ctx.info(
            f"compressed {source} ({files} file(s), {size_in} bytes) to {target} ({size_out} bytes, "
            f"{o.algorithm}) in {time.monotonic() - started:.2f}s"
        )
        if o.remove_source:
            await run_file_work(ctx, f"remove {source}", lambda cancel: remove(source))
            ctx.info(f"removed {source}")
        return {
            "output": str(target),
            "compress": {
                "source": str(source),
                "output": str(target),
                "algorithm": o.algorithm,
                "files": files,
                "bytes_in": size_in,
                "bytes_out": size_out,
            },
        }


# -- rotate --------------------------------------------------------------------------------------


class RotateOptions(ProcessorOptions):
    pattern: StrictStr = Field(description="glob of the files to rotate, e.g. ../var/logs/*.log")
    keep: StrictInt | None = Field(None, ge=0, description="keep the newest N matching files")
    max_age: Duration | None = Field(None, description="delete matching files older than this")
    dry_run: StrictBool = Field(False, description="only log what would be deleted")

    def warnings(self, base_dir: Path) -> list[str]:
        fixed = re.split(r"[*?\[]", self.pattern, maxsplit=1)[0]  # the part before any wildcard
        folder = os.path.dirname(fixed) or "."
        return missing_source(folder, "pattern's directory", base_dir, "the step finds nothing to rotate until it does")

    @model_validator(mode="after")
    def _some_rule(self) -> RotateOptions:
        if self.keep is None and self.max_age is None:
            raise ValueError("give keep (newest N files), max_age (a duration), or both")
        return self


def select_for_deletion(
    files: list[tuple[Path, float]], keep: int | None, max_age: float | None, now: float
) -> tuple[list[Path], list[Path]]:
    """Split (path, mtime) pairs into (kept, deleted): beyond the newest `keep`, or older than `max_age`."""
    ordered = sorted(files, key=lambda item: (-item[1], str(item[0])))
    kept: list[Path] = []
    deleted: list[Path] = []
    for rank, (path, mtime) in enumerate(ordered):
        too_many = keep is not None and rank >= keep
        too_old = max_age is not None and now - mtime > max_age
        (deleted if too_many or too_old else kept).append(path)
    return kept, deleted


class RotateProcessor:
    def __init__(self, options: RotateOptions) -> None:
        self.options = options

    async def run(self, ctx: Context) -> Mapping[str, Any]:
        o = ctx.render(self.options)
        pattern = str(ctx.resolve(o.pattern)) if not Path(o.pattern).is_absolute() else o.pattern

        now = ctx.now().timestamp()

        def work(cancel: threading.Event) -> tuple[list[Path], list[Path]]:
            found = []
            for name in glob.glob(pattern, recursive=True):
                path = Path(name)
                with contextlib.suppress(FileNotFoundError):
                    info = path.lstat()
                    if stat.S_ISREG(info.st_mode):
                        found.append((path, info.st_mtime))
            kept, deleted = select_for_deletion(found, o.keep, o.max_age, now)
            if not o.dry_run:
                for path in deleted:
                    if cancel.is_set():
                        raise Cancelled
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
            return kept, deleted

        kept, deleted = await run_file_work(ctx, f"rotate {pattern}", work)
        verb = "would delete" if o.dry_run else "deleted"
        for path in deleted:
            ctx.info(f"{verb} {path}")
        ctx.info(f"rotate {o.pattern}: kept {len(kept)}, {verb} {len(deleted)}")
        return {
            "rotate": {
                "pattern": pattern,
                "kept": [str(p) for p in kept],
                "deleted": [str(p) for p in deleted],
                "dry_run": o.dry_run,
            }
        }


COPY = ProcessorType("copy", CopyOptions, "copy a file or directory tree (keeps mtimes)", CopyProcessor)
COMPRESS = ProcessorType("compress", CompressOptions, "gzip/bzip2/xz a file, or tar a directory", CompressProcessor)
ROTATE = ProcessorType(
    "rotate", RotateOptions, "keep the newest N files matching a glob, delete the rest", RotateProcessor
)
