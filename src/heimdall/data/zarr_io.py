"""IQ arrays of a shard as Zarr v3 on a local folder or an object store.

Each shard's IQ is one Zarr v3 array int16 (B, R, T, 2) stored as a single
Zarr shard object with one inner chunk per session (random access to one
session is one ranged read), compressed with Blosc zstd level 1 after byte
shuffle (about 0.55 of the raw size on simulated IQ; docs/DATA.md) and
followed by a CRC-32C of the compressed bytes, checked on every read (a few
ms per 100 MB; arrays written before it existed are read without it).

Reading refuses a damaged array by name (:class:`~heimdall.errors.HeimdallError`):
a shard object that is missing or empty (zarr would return its fill value,
zeros, as if it were data) is found from the object's size when the array is
first opened (one stat or HEAD request); a chunk that does not decode (bad
index or payload checksum, Blosc error) when it is read.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import fsspec
import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec
from zarr.core.sync import sync

from heimdall.data.fs import is_remote, s3_options
from heimdall.data.paths import check_tree_inside
from heimdall.errors import HeimdallError


class ZarrIO:
    """Reads and writes shard IQ arrays under one dataset URI.

    Parameters
    ----------
    uri
        Dataset URI (decides local vs object store).
    fs
        The dataset's (synchronous) fsspec filesystem.
    storage_options
        Options the object-store filesystem was opened with.
    root
        The local store folder: arrays are opened only when no symbolic link below them
        leaves it (docs/DATA.md "Safe paths"). None: no check (object stores have no links).

    """

    def __init__(
        self,
        uri: str,
        fs: fsspec.AbstractFileSystem,
        storage_options: dict[str, Any],
        root: str | None = None,
    ) -> None:
        self._remote = is_remote(uri)
        self._root = None if self._remote else root
        self._protocol = uri.split("://", 1)[0] if self._remote else "file"
        self._storage_options = storage_options
        self._afs: Any = None
        self._arrays: dict[str, zarr.Array] = {}

    def _store(self, path: str, read_only: bool) -> Any:
        if not self._remote:
            return zarr.storage.LocalStore(path, read_only=read_only)
        if self._afs is None:
            if self._protocol in ("s3", "s3a"):
                import s3fs

                self._afs = s3fs.S3FileSystem(
                    asynchronous=True, skip_instance_cache=True, **s3_options(self._storage_options)
                )
            else:
                cls = fsspec.get_filesystem_class(self._protocol)
                self._afs = cls(asynchronous=True, skip_instance_cache=True, **self._storage_options)
        return zarr.storage.FsspecStore(self._afs, read_only=read_only, path=path)

    def write_iq(self, path: str, iq: np.ndarray) -> None:
        """Write ``iq`` (int16, (B, R, T, 2)) as a new Zarr array at ``path``."""
        b, r, t, two = iq.shape
        arr = zarr.create_array(
            store=self._store(path, read_only=False),
            shape=iq.shape,
            dtype="int16",
            chunks=(1, r, t, two),
            shards=(b, r, t, two),
            compressors=[BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"), Crc32cCodec()],
            fill_value=0,
            overwrite=True,
            config={"write_empty_chunks": True},  # all-zero IQ is stored too: absence means damage
        )
        arr[...] = iq

    def read_iq(self, path: str, rows: np.ndarray | None = None) -> np.ndarray:
        """All sessions of the array at ``path``, or the sorted session ``rows`` of it.

        Raises
        ------
        HeimdallError
            The array is missing, or one of its stored objects is missing, empty or does
            not decode (message names ``path``, which names the shard).

        """
        arr = self._arrays.get(path)
        if arr is None:
            if self._root is not None:
                check_tree_inside(self._root, path, source=path, field="Zarr array entry")
            store = self._store(path, read_only=True)
            try:
                arr = zarr.open_array(store=store, mode="r")
            except (FileNotFoundError, KeyError, ValueError) as exc:
                raise HeimdallError(f"{path}: IQ array missing or corrupt ({exc})") from None
            _check_objects(arr, store, path)
            if len(self._arrays) > 256:
                self._arrays.clear()
            self._arrays[path] = arr
        try:
            if rows is None:
                return np.asarray(arr[...])
            # contiguous runs of the sorted rows as slices: much faster in zarr than orthogonal indexing
            rows = np.asarray(rows, dtype=np.int64)
            breaks = np.flatnonzero(np.diff(rows) != 1) + 1
            runs = np.split(rows, breaks)
            return np.concatenate([np.asarray(arr[int(r[0]) : int(r[-1]) + 1]) for r in runs])
        except FileNotFoundError as exc:  # removed since the array was opened
            raise HeimdallError(f"{path}: IQ chunk missing ({exc})") from None
        except (ValueError, RuntimeError, TypeError, IndexError, EOFError) as exc:
            # checksum mismatch, Blosc error, an index pointing outside the object ...
            raise HeimdallError(f"{path}: IQ chunk corrupt ({type(exc).__name__}: {exc})") from None

    def close(self) -> None:
        """Close the object-store client session, if one was opened."""
        afs, self._afs = self._afs, None
        self._arrays.clear()
        client = getattr(afs, "_s3", None)
        if client is None:
            return
        from zarr.core.sync import sync

        try:
            sync(client.__aexit__(None, None, None), timeout=5.0)
        except Exception:
            pass

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _check_objects(arr: zarr.Array, store: Any, path: str) -> None:
    """Refuse an array one of whose stored objects (one per Zarr shard) is missing or empty.

    Zarr reads either as the fill value (zeros), which would pass for data. One size
    query per object (a stat locally, a HEAD request on an object store).
    """
    grid = arr.shards or arr.chunks
    counts = [math.ceil(n / g) for n, g in zip(arr.shape, grid, strict=True)]
    for coords in itertools.product(*(range(c) for c in counts)):
        key = arr.metadata.encode_chunk_key(coords)
        try:
            size = sync(store.getsize(key))
        except FileNotFoundError:
            raise HeimdallError(f"{path}: IQ chunk missing ({key}): the shard is damaged") from None
        except OSError as exc:
            raise HeimdallError(f"{path}: cannot read IQ chunk {key} ({exc})") from None
        if size == 0:
            raise HeimdallError(f"{path}: IQ chunk is empty ({key}, 0 bytes): the shard is damaged")
