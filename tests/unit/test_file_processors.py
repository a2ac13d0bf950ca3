"""copy, compress, rotate, upload and the checks against real files and a real S3-compatible
server (in-process)."""

from __future__ import annotations

import asyncio
import contextlib
import filecmp
import hashlib
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port
from support.files import ctx
from support.processors import build

from taskd.processor import StepFailed
from taskd.processors.files import select_for_deletion


def make_tree(root: Path) -> Path:
    data = root / "data"
    (data / "sub" / "deeper").mkdir(parents=True)
    (data / "a.txt").write_text("alpha\n" * 100)
    (data / "sub" / "b.bin").write_bytes(os.urandom(70_000))
    (data / "sub" / "deeper" / "c.txt").write_text("gamma")
    (data / "link").symlink_to("a.txt")
    old = time.time() - 86400 * 3
    os.utime(data / "a.txt", (old, old))
    return data


def same_tree(left: Path, right: Path) -> bool:
    compared = filecmp.dircmp(left, right)
    if compared.left_only or compared.right_only or compared.diff_files or compared.funny_files:
        return False
    return all(same_tree(left / d, right / d) for d in compared.common_dirs)


# -- copy ----------------------------------------------------------------------------------------


async def test_copy_a_tree_keeping_mtimes_and_links(tmp_path: Path) -> None:
    data = make_tree(tmp_path)
    c = ctx(tmp_path)
    out = await build("copy", source="data", destination="backup/{params.dest}").run(c)
    target = tmp_path / "backup" / "out"
    assert out["output"] == str(target) and out["copy"]["files"] == 4
    assert out["copy"]["bytes"] == 600 + 70_000 + 5
    assert same_tree(data, target)
    assert (target / "a.txt").stat().st_mtime == pytest.approx((data / "a.txt").stat().st_mtime)
    assert os.readlink(target / "link") == "a.txt"
    assert not list(tmp_path.glob("backup/.*partial*"))


async def test_copy_a_file_into_an_existing_directory_and_overwrite(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("one")
    (tmp_path / "dir").mkdir()
    await build("copy", source="f.txt", destination="dir").run(ctx(tmp_path))
    assert (tmp_path / "dir" / "f.txt").read_text() == "one"
    (tmp_path / "f.txt").write_text("two")
    # The same task replaces its own earlier product; another task does not, unless told to.
    await build("copy", source="f.txt", destination="dir").run(ctx(tmp_path))
    assert (tmp_path / "dir" / "f.txt").read_text() == "two"
    (tmp_path / "f.txt").write_text("three")
    refused = "already exists and no earlier run of this task produced it; set overwrite: true"
    with pytest.raises(StepFailed, match=refused):
        await build("copy", source="f.txt", destination="dir").run(ctx(tmp_path, task_id="other"))
    assert (tmp_path / "dir" / "f.txt").read_text() == "two"
    await build("copy", source="f.txt", destination="dir", overwrite=True).run(ctx(tmp_path, task_id="other"))
    assert (tmp_path / "dir" / "f.txt").read_text() == "three"
    (tmp_path / "dir" / "mine.txt").write_text("an operator's file")  # not produced by taskd at all
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(StepFailed, match=refused):
        await build("copy", source="mine.txt", destination="dir").run(ctx(tmp_path))
    assert (tmp_path / "dir" / "mine.txt").read_text() == "an operator's file"


async def test_copy_refuses_a_directory_into_itself_and_a_missing_source(tmp_path: Path) -> None:
    make_tree(tmp_path)
    with pytest.raises(StepFailed, match=r"refusing to copy directory .* into itself"):
        await build("copy", source="data", destination="data/sub/again").run(ctx(tmp_path))
    with pytest.raises(StepFailed, match=r"source .*nope does not exist"):
        await build("copy", source="nope", destination="x").run(ctx(tmp_path))
    with pytest.raises(StepFailed, match="no 'source' given and no earlier step produced an output"):
        await build("copy", destination="x").run(ctx(tmp_path))


async def test_stop_during_a_long_copy_removes_the_partial_output(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        f.truncate(3 * 1024**3)  # sparse: 3 GiB to copy, nothing on disk yet
    task = asyncio.create_task(build("copy", source="big.bin", destination="copy.bin").run(ctx(tmp_path)))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if list(tmp_path.glob(".copy.bin.partial-*")):
            break
    else:
        pytest.fail("the copy never started")
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin"]


# -- compress ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("algorithm", "suffix"), [("gzip", ".tar.gz"), ("bzip2", ".tar.bz2"), ("xz", ".tar.xz")])
async def test_compress_a_directory_from_the_previous_step(tmp_path: Path, algorithm: str, suffix: str) -> None:
    data = make_tree(tmp_path)
    c = ctx(tmp_path, output=str(data))
    out = await build("compress", algorithm=algorithm).run(c)
    archive = Path(out["output"])
    assert archive == tmp_path / f"data{suffix}" and out["compress"]["files"] == 3
    unpacked = tmp_path / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="tar")
    assert same_tree(data, unpacked / "data")


@pytest.mark.parametrize(("algorithm", "opener"), [("gzip", "gzip"), ("bzip2", "bz2"), ("xz", "lzma")])
async def test_compress_a_file_and_remove_the_source(tmp_path: Path, algorithm: str, opener: str) -> None:
    import importlib

    source = tmp_path / "log.txt"
    source.write_text("line\n" * 10_000)
    out = await build("compress", path="log.txt", algorithm=algorithm, remove_source=True).run(ctx(tmp_path))
    assert not source.exists() and out["compress"]["bytes_in"] == 50_000
    with importlib.import_module(opener).open(out["output"], "rt") as f:
        assert f.read() == "line\n" * 10_000


async def test_compress_failures(tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match="does not exist"):
        await build("compress", path="missing").run(ctx(tmp_path))
    make_tree(tmp_path)
    with pytest.raises(StepFailed, match="inside the directory it archives"):
        await build("compress", path="data", destination="data/x.tar.gz").run(ctx(tmp_path))


# -- rotate --------------------------------------------------------------------------------------


def test_selection_keeps_the_newest_and_the_young() -> None:
    now = 1000.0
    files = [(Path(f"f{i}"), now - i * 10) for i in range(6)]  # f0 newest
    assert select_for_deletion(files, keep=2, max_age=None, now=now) == (
        [Path("f0"), Path("f1")],
        [Path("f2"), Path("f3"), Path("f4"), Path("f5")],
    )
    kept, deleted = select_for_deletion(files, keep=None, max_age=25, now=now)
    assert kept == [Path("f0"), Path("f1"), Path("f2")] and len(deleted) == 3
    kept, deleted = select_for_deletion(files, keep=4, max_age=15, now=now)
    assert kept == [Path("f0"), Path("f1")] and len(deleted) == 4


async def test_rotate_deletes_exactly_what_it_should(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    now = time.time()
    for i in range(6):
        path = logs / f"app.{i}.log"
        path.write_text(str(i))
        os.utime(path, (now - i * 3600, now - i * 3600))
    (logs / "keep.txt").write_text("not matched")
    dry = await build("rotate", pattern="logs/*.log", keep=3, dry_run=True).run(ctx(tmp_path))
    assert len(dry["rotate"]["deleted"]) == 3 and len(list(logs.iterdir())) == 7
    out = await build("rotate", pattern="logs/*.log", keep=4, max_age="2h30m").run(ctx(tmp_path))
    assert sorted(p.name for p in logs.iterdir()) == ["app.0.log", "app.1.log", "app.2.log", "keep.txt"]
    assert len(out["rotate"]["deleted"]) == 3


# -- upload --------------------------------------------------------------------------------------


async def test_upload_to_a_local_directory(tmp_path: Path) -> None:
    archive = tmp_path / "data.tar.gz"
    archive.write_bytes(b"archive bytes")
    c = ctx(tmp_path, output=str(archive))
    out = await build("upload", destination=f"file://{tmp_path}/store/").run(c)
    assert (tmp_path / "store" / "data.tar.gz").read_bytes() == b"archive bytes"
    assert out["output"] == (tmp_path / "store" / "data.tar.gz").as_uri()
    archive.write_bytes(b"newer bytes")
    await build("upload", destination="store/").run(c)  # this task's own upload: replaced
    assert (tmp_path / "store" / "data.tar.gz").read_bytes() == b"newer bytes"
    with pytest.raises(StepFailed, match="no earlier run of this task produced it"):
        await build("upload", destination="store/").run(ctx(tmp_path, task_id="other", output=str(archive)))
    renamed = await build("upload", destination="store/{task.id}-{now:%Y}.tgz").run(c)
    assert renamed["output"].endswith(f"/store/backup-{time.strftime('%Y')}.tgz")


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """A real S3-compatible server (moto in server mode) on loopback."""
    boto3 = pytest.importorskip("boto3")
    server_module = pytest.importorskip("moto.server")
    port = free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="backups")
        yield {"endpoint": endpoint}
    with contextlib.suppress(Exception):
        server.stop()


async def test_upload_to_s3_with_multipart(tmp_path: Path, s3: dict[str, str]) -> None:
    import boto3

    payload = os.urandom(12 * 1024 * 1024)
    (tmp_path / "big.bin").write_bytes(payload)
    options = {
        "endpoint_url": s3["endpoint"],
        "multipart_threshold": 5 * 1024 * 1024,
        "multipart_chunksize": 5 * 1024 * 1024,
    }
    out = await build("upload", source="big.bin", destination="s3://backups/nightly/", **options).run(ctx(tmp_path))
    assert out["output"] == "s3://backups/nightly/big.bin" and out["upload"]["bytes"] == len(payload)
    client = boto3.client("s3", endpoint_url=s3["endpoint"])
    head = client.head_object(Bucket="backups", Key="nightly/big.bin")
    assert head["ETag"].strip('"').endswith("-3"), "12 MiB in 5 MiB parts is a 3-part upload"
    body = client.get_object(Bucket="backups", Key="nightly/big.bin")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(payload).digest()
    again = await build("upload", source="big.bin", destination="s3://backups/nightly/", **options).run(ctx(tmp_path))
    assert again["output"] == out["output"]  # the same task replaces its own object
    with pytest.raises(StepFailed, match="no earlier run of this task produced it"):
        await build("upload", source="big.bin", destination="s3://backups/nightly/", **options).run(
            ctx(tmp_path, task_id="other")
        )
    client.put_object(Bucket="backups", Key="nightly/theirs.bin", Body=b"someone else's")
    (tmp_path / "theirs.bin").write_bytes(b"ours")
    with pytest.raises(StepFailed, match="no earlier run of this task produced it"):
        await build("upload", source="theirs.bin", destination="s3://backups/nightly/", **options).run(ctx(tmp_path))


async def test_upload_a_directory_to_s3_and_an_unreachable_endpoint(
    tmp_path: Path, s3: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    make_tree(tmp_path)
    await build("upload", source="data", destination="s3://backups/trees/", endpoint_url=s3["endpoint"]).run(
        ctx(tmp_path)
    )
    keys = {
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3["endpoint"]).list_objects_v2(Bucket="backups", Prefix="trees/")[
            "Contents"
        ]
    }
    assert keys == {"trees/data/a.txt", "trees/data/link", "trees/data/sub/b.bin", "trees/data/sub/deeper/c.txt"}
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries would take seconds to give up
    with pytest.raises(StepFailed, match="upload to s3://backups/x failed"):
        await build("upload", source="data/a.txt", destination="s3://backups/x", endpoint_url=closed).run(ctx(tmp_path))


# -- checks --------------------------------------------------------------------------------------


async def test_check_disk_space_passes_and_fails_on_the_threshold(tmp_path: Path) -> None:
    out = await build("check_disk_space", path=".", threshold=100).run(ctx(tmp_path))
    disk = out["disk"]
    assert disk["path"] == str(tmp_path) and 0 < disk["percent"] <= 100 and disk["total"] > 0
    with pytest.raises(StepFailed, match=r"disk usage of .* is .*%, above the threshold of 0%"):
        await build("check_disk_space", threshold=0).run(ctx(tmp_path))
    with pytest.raises(StepFailed, match="cannot check disk space"):
        await build("check_disk_space", path="no/such/dir").run(ctx(tmp_path))


async def test_check_memory_reads_meminfo(tmp_path: Path) -> None:
    fake = tmp_path / "meminfo"
    fake.write_text("MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n")
    out = await build("check_memory", threshold=80, meminfo=str(fake)).run(ctx(tmp_path))
    assert out["memory"] == {"total": 1024000, "available": 256000, "percent": 75.0}
    with pytest.raises(StepFailed, match=r"memory usage is 75\.0%, above the threshold of 70%"):
        await build("check_memory", threshold=70, meminfo=str(fake)).run(ctx(tmp_path))
    fake.write_text("MemTotal: 1000 kB\n")
    with pytest.raises(StepFailed, match="cannot read memory figures"):
        await build("check_memory", meminfo=str(fake)).run(ctx(tmp_path))
    real = await build("check_memory", threshold=100).run(ctx(tmp_path))
    assert 0 < real["memory"]["percent"] < 100
