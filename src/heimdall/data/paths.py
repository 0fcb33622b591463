"""Names read from files resolve inside their own folder or store (docs/DATA.md "Safe paths").

Every file name the project takes from a file it reads (a SigMF ``core:streams``
name or ``core:dataset``, a store commit record's ``dir``, an ONNX tensor's
external-data ``location`` ...) goes through this module before anything is
opened, so a crafted file cannot make Heimdall read or write outside the folder
it was given:

- :func:`resolve_inside` for local folders: refuses an absolute name, a ``..``
  segment, and a name that leaves the folder once symbolic links are resolved;
- :func:`safe_key` for object-store keys (no symbolic links there): refuses a
  ``..`` segment, a leading ``/`` and a URI scheme;
- :func:`inside_store` picks one of the two for an fsspec filesystem.

Each refusal is a :class:`~heimdall.errors.HeimdallError` naming the file the
name came from and its field.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

import fsspec
from fsspec.implementations.local import LocalFileSystem

from heimdall.errors import HeimdallError

#: A URI scheme at the start of a name (``s3:``, ``file:``, ``http:``); a single letter is a drive.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


def _refuse(source: str, field: str, name: object, why: str) -> HeimdallError:
    return HeimdallError(f"{source}: field {field!r} names {name!r}, which {why}; refused")


def _check_name(name: object, *, source: str, field: str) -> str:
    """The checks shared by local names and object-store keys; returns the name."""
    if not isinstance(name, str) or not name:
        raise _refuse(source, field, name, "is not a non-empty file name")
    if "\x00" in name:
        raise _refuse(source, field, name, "contains a NUL character")
    if name.startswith(("/", "\\")) or PureWindowsPath(name).anchor or PurePosixPath(name).is_absolute():
        raise _refuse(source, field, name, "is an absolute path")
    if _SCHEME.match(name):
        raise _refuse(source, field, name, "is a URI, not a name inside the folder")
    if ".." in re.split(r"[/\\]", name):
        raise _refuse(source, field, name, "has a '..' segment")
    return name


def resolve_inside(root: str | Path, name: object, *, source: str, field: str) -> Path:
    """The path of ``name`` under the local folder ``root``, refused unless it stays inside.

    Symbolic links are resolved (in ``root``'s own path too), so a link that
    points out of the folder is refused like ``..``; links that stay inside are
    followed. The path need not exist yet (writes are checked the same way).

    Parameters
    ----------
    root
        The folder the name must stay in (the folder of the file that names it).
    name
        The relative name as read from the file.
    source
        The file the name was read from, named in the error.
    field
        The field of ``source`` that holds the name, named in the error.

    Returns
    -------
    Path
        The resolved absolute path, inside ``root``.

    Raises
    ------
    HeimdallError
        ``name`` is not a string, is empty, absolute, a URI, has a ``..`` segment,
        or resolves (following symbolic links) outside ``root``.

    """
    text = _check_name(name, source=source, field=field)
    base = Path(root).resolve()
    target = (base / text).resolve()
    if not target.is_relative_to(base):
        raise _refuse(source, field, name, f"resolves to {str(target)!r} outside {str(base)!r}")
    return target


def safe_key(root: str, name: object, *, source: str, field: str) -> str:
    """The object-store key ``root/name``, refused when ``name`` could leave ``root``.

    Object stores have no symbolic links; a key leaves its prefix only through a
    ``..`` segment (which some gateways normalise), a leading ``/`` or a scheme.

    Parameters
    ----------
    root
        The store's ``bucket/prefix``.
    name
        The relative key as read from the file.
    source, field
        The file and field the name came from, named in the error.

    Raises
    ------
    HeimdallError
        ``name`` is empty, starts with ``/``, carries a scheme or has a ``..`` segment.

    """
    text = _check_name(name, source=source, field=field)
    return "/".join([root.rstrip("/"), text.strip("/")])


def inside_store(fs: fsspec.AbstractFileSystem, root: str, name: object, *, source: str, field: str) -> str:
    """``name`` under the store ``root`` on ``fs``: :func:`resolve_inside` locally, else :func:`safe_key`."""
    if isinstance(fs, LocalFileSystem):
        return str(resolve_inside(root, name, source=source, field=field))
    return safe_key(root, name, source=source, field=field)


def check_tree_inside(root: str | Path, folder: str | Path, *, source: str, field: str) -> None:
    """Refuse when any entry below the local ``folder`` is a symbolic link resolving outside ``root``.

    Used before a library (Zarr) opens files below ``folder`` by names it builds itself.

    Raises
    ------
    HeimdallError
        A link below ``folder`` points outside ``root`` (names the link).

    """
    base = Path(root).resolve()
    top = Path(folder)
    entries = [top]
    for dirpath, dirnames, filenames in os.walk(top):  # does not descend into linked folders
        entries += [Path(dirpath, name) for name in [*dirnames, *filenames]]
    for entry in entries:
        if entry.is_symlink() and not entry.resolve().is_relative_to(base):
            where = str(entry.relative_to(top.parent))
            raise _refuse(
                source, field, where, f"is a symbolic link to {str(entry.resolve())!r} outside the store"
            )
