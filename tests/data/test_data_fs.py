"""Tests of heimdall.data.fs against a real local filesystem and a real S3 HTTP endpoint (moto_server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fsspec.implementations.local import LocalFileSystem

from heimdall.data.fs import is_remote, join, load_json_object, open_fs, s3_options
from heimdall.errors import HeimdallError


def test_local_path_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    fs, path = open_fs("sub/data")
    assert isinstance(fs, LocalFileSystem)
    assert path == str(tmp_path / "sub" / "data")
    _fs2, path2 = open_fs(f"file://{tmp_path}/x")
    assert path2 == str(tmp_path / "x")
    assert not is_remote("a/b") and is_remote("s3://b/p") and not is_remote("file:///a")


def test_s3_options_prefer_explicit_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://env:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "envkey")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-south-1")
    opts = s3_options({"endpoint": "http://opt:2", "key": "k"})
    assert opts["endpoint_url"] == "http://opt:2"
    assert opts["key"] == "k"
    assert opts["secret"] == "envsecret"
    assert opts["client_kwargs"] == {"region_name": "eu-south-1"}
    assert join("b/p/", "/x", "y") == "b/p/x/y"


def test_s3_roundtrip_through_real_endpoint(s3_bucket: str) -> None:
    fs, path = open_fs(f"s3://{s3_bucket}/some/prefix/")
    assert path == f"{s3_bucket}/some/prefix"
    fs.pipe(join(path, "hello.txt"), b"bytes over HTTP")
    fs2, _ = open_fs(f"s3://{s3_bucket}")
    assert fs2.cat(f"{s3_bucket}/some/prefix/hello.txt") == b"bytes over HTTP"


def test_s3_explicit_endpoint_option(
    s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    fs, path = open_fs(f"s3://{s3_bucket}/p", {"endpoint_url": s3_endpoint})
    fs.pipe(join(path, "a"), b"1")
    assert fs.cat(join(path, "a")) == b"1"


def test_missing_bucket_is_a_clear_error(s3_endpoint: str) -> None:
    with pytest.raises(HeimdallError, match=r"no such S3 bucket 'no-such-bucket'"):
        open_fs("s3://no-such-bucket/prefix")


def test_bad_s3_uris() -> None:
    with pytest.raises(HeimdallError, match="no bucket"):
        open_fs("s3:///prefix")
    with pytest.raises(HeimdallError, match="empty dataset path"):
        open_fs("")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(None, "metadata missing"), ("{not json", "corrupt metadata ("), ("[1, 2]", "not a JSON object")],
)
def test_load_json_object_errors_name_the_file(tmp_path, content: str | None, fragment: str) -> None:
    path = tmp_path / "metadata.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(HeimdallError) as err:
        load_json_object(path.read_text, str(path), "metadata")
    assert str(err.value).startswith(str(path)) and fragment in str(err.value)


def test_load_json_object_reads_objects(tmp_path) -> None:
    path = tmp_path / "ok.json"
    path.write_text('{"a": 1}')
    assert load_json_object(path.read_text, str(path)) == {"a": 1}
