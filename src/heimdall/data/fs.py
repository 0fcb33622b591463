"""Filesystems behind a dataset URI: local paths and ``s3://bucket/prefix`` (S3, MinIO).

:func:`open_fs` turns a URI into an fsspec filesystem and a path inside it.
For ``s3://`` the endpoint, credentials and region come from
``storage_options`` first, then from the usual environment variables
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``), so the same code talks to AWS, MinIO or a local
test endpoint without knowing which.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from heimdall.errors import HeimdallError

#: Short option names accepted for S3 and the s3fs keyword each maps to.
_S3_ALIASES: dict[str, str] = {
    "endpoint": "endpoint_url",
    "access_key": "key",
    "aws_access_key_id": "key",
    "secret_key": "secret",
    "aws_secret_access_key": "secret",
    "region": "region_name",
}


def is_remote(uri: str | Path) -> bool:
    """Whether ``uri`` names an object store (has a scheme other than ``file``)."""
    text = str(uri)
    return "://" in text and not text.startswith("file://")


def s3_options(storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Resolve s3fs keyword arguments from ``storage_options`` and the AWS_* environment.

    Parameters
    ----------
    storage_options
        ``endpoint_url`` (or ``endpoint``), ``key``, ``secret``, ``region_name`` (or
        ``region``), and any other :class:`s3fs.S3FileSystem` keyword.

    Returns
    -------
    dict
        Keywords for :class:`s3fs.S3FileSystem`; explicit options win over the environment.

    """
    opts: dict[str, Any] = {}
    for name, value in (storage_options or {}).items():
        opts[_S3_ALIASES.get(name, name)] = value
    region = (
        opts.pop("region_name", None) or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    )
    endpoint = opts.pop("endpoint_url", None) or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        opts["endpoint_url"] = endpoint
    if "key" not in opts and os.environ.get("AWS_ACCESS_KEY_ID"):
        opts["key"] = os.environ["AWS_ACCESS_KEY_ID"]
    if "secret" not in opts and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        opts["secret"] = os.environ["AWS_SECRET_ACCESS_KEY"]
    if region:
        client_kwargs = dict(opts.get("client_kwargs") or {})
        client_kwargs.setdefault("region_name", region)
        opts["client_kwargs"] = client_kwargs
    return opts


def open_fs(
    uri: str | Path, storage_options: dict[str, Any] | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return the filesystem holding ``uri`` and the path of ``uri`` inside it.

    Parameters
    ----------
    uri
        A local path (``data/train``, ``file:///abs``) or ``s3://bucket/prefix``.
    storage_options
        For S3: endpoint, credentials, region (see :func:`s3_options`); for other
        fsspec protocols passed to the filesystem unchanged. Ignored for local paths.

    Returns
    -------
    (filesystem, path)
        Local paths are made absolute; S3 paths are ``bucket/prefix`` without a trailing slash.

    Raises
    ------
    HeimdallError
        Malformed URI, unknown protocol, or an S3 bucket that does not exist or cannot be reached.

    """
    text = str(uri)
    if not is_remote(text):
        local = text.removeprefix("file://")
        if not local:
            raise HeimdallError("empty dataset path")
        return LocalFileSystem(), str(Path(local).expanduser().resolve())
    protocol, _, rest = text.partition("://")
    if protocol in ("s3", "s3a"):
        return _open_s3(text, rest, storage_options)
    try:
        fs, path = fsspec.core.url_to_fs(text, **(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise HeimdallError(f"{text}: unsupported storage URI ({exc})") from None
    return fs, path.rstrip("/")


def _open_s3(
    uri: str, rest: str, storage_options: dict[str, Any] | None
) -> tuple[fsspec.AbstractFileSystem, str]:
    import s3fs

    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise HeimdallError(f"{uri}: S3 URI has no bucket (expected s3://bucket/prefix)")
    opts = s3_options(storage_options)
    try:
        fs = s3fs.S3FileSystem(**opts)
    except TypeError as exc:
        raise HeimdallError(f"{uri}: bad storage option ({exc})") from None
    _check_bucket(fs, bucket, uri, opts.get("endpoint_url"))
    path = f"{bucket}/{prefix.strip('/')}" if prefix.strip("/") else bucket
    return fs, path


def _check_bucket(fs: fsspec.AbstractFileSystem, bucket: str, uri: str, endpoint: str | None) -> None:
    where = f" at {endpoint}" if endpoint else ""
    try:
        fs.call_s3("head_bucket", Bucket=bucket)  # type: ignore[attr-defined]
    except FileNotFoundError:
        raise HeimdallError(f"{uri}: no such S3 bucket {bucket!r}{where}") from None
    except PermissionError as exc:
        raise HeimdallError(f"{uri}: access to S3 bucket {bucket!r}{where} denied ({exc})") from None
    except OSError as exc:
        raise HeimdallError(f"{uri}: cannot reach S3 bucket {bucket!r}{where} ({exc})") from None
    except Exception as exc:  # botocore connection / credential errors are not OSErrors
        raise HeimdallError(
            f"{uri}: cannot reach S3 bucket {bucket!r}{where} ({type(exc).__name__}: {exc})"
        ) from None


def join(root: str, *parts: str) -> str:
    """Join path components with ``/`` (fsspec paths use forward slashes everywhere)."""
    return "/".join([root.rstrip("/"), *[p.strip("/") for p in parts if p]])


def parse_storage_options(endpoint_url: str | None = None, items: list[str] | None = None) -> dict[str, Any]:
    """Storage options from CLI flags: ``--endpoint-url`` and repeated ``KEY=VALUE`` pairs.

    Values ``true`` / ``false`` become booleans; everything else stays a string.
    """
    opts: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise HeimdallError(f"--storage-option {item!r}: expected KEY=VALUE")
        opts[key.strip()] = {"true": True, "false": False}.get(value.strip().lower(), value.strip())
    if endpoint_url:
        opts["endpoint_url"] = endpoint_url
    return opts


def load_json_object(read: Callable[[], bytes | str], source: str, what: str = "JSON") -> dict[str, Any]:
    """Parse a JSON object from ``read()``; a missing, corrupt or non-object file is a HeimdallError.

    Parameters
    ----------
    read
        Returns the file's content (raises FileNotFoundError when it does not exist).
    source
        The file's path or URI, named in errors.
    what
        What the file is (``"SigMF meta"``, ``"metadata"`` ...), named in errors.

    """
    try:
        obj = json.loads(read())
    except FileNotFoundError:
        raise HeimdallError(f"{source}: {what} missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HeimdallError(f"{source}: corrupt {what} ({exc})") from None
    if not isinstance(obj, dict):
        raise HeimdallError(f"{source}: corrupt {what} (not a JSON object)")
    return obj
