"""ONNX tensors stored in external files: checked to stay in the model's folder, then inlined.

An ONNX tensor may keep its data outside the model file
(``TensorProto.data_location == EXTERNAL``; ``external_data`` entries
``location``, ``offset``, ``length``; ONNX IR specification, "External Tensor
Data"). The location is a name relative to the model file's folder, read from
the model itself, so it is checked like every other name taken from a file
(docs/DATA.md "Safe paths"):

- a model loaded from a local path: every location must resolve inside the
  model's folder (no absolute path, no ``..``, no symbolic link leaving it);
  the data are read by Heimdall and inlined, and onnxruntime gets a
  self-contained model from memory (it never resolves a path itself);
- a model loaded from bytes, a URI or the registry has no folder of its own:
  external data are refused (onnxruntime would otherwise look for the file
  relative to the working directory).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from heimdall.data.fs import is_remote
from heimdall.data.paths import resolve_inside
from heimdall.errors import HeimdallError

if TYPE_CHECKING:
    from onnx import GraphProto, ModelProto, NodeProto, TensorProto


def _graph_tensors(graph: GraphProto, where: str) -> Iterator[tuple[str, TensorProto]]:
    """Every TensorProto of ``graph`` and of its subgraphs, with a label naming it."""
    for t in graph.initializer:
        yield f"{where}initializer {t.name!r}", t
    for s in graph.sparse_initializer:
        yield f"{where}sparse initializer {s.values.name!r}", s.values
        yield f"{where}sparse initializer {s.values.name!r} indices", s.indices
    for node in graph.node:
        yield from _node_tensors(node, where)


def _node_tensors(node: NodeProto, where: str) -> Iterator[tuple[str, TensorProto]]:
    from onnx import AttributeProto

    for attr in node.attribute:
        label = f"{where}node {node.name or node.op_type!r} attribute {attr.name!r}"
        sparse = [attr.sparse_tensor] if attr.type == AttributeProto.SPARSE_TENSOR else attr.sparse_tensors
        tensors = [attr.t] if attr.type == AttributeProto.TENSOR else list(attr.tensors)
        tensors += [t for s in sparse for t in (s.values, s.indices)]
        yield from ((label, t) for t in tensors)
        graphs = [attr.g] if attr.type == AttributeProto.GRAPH else attr.graphs
        for g in graphs:
            yield from _graph_tensors(g, f"{label} subgraph: ")


def _all_tensors(model: ModelProto) -> Iterator[tuple[str, TensorProto]]:
    yield from _graph_tensors(model.graph, "")
    for fn in model.functions:
        for node in fn.node:
            yield from _node_tensors(node, f"function {fn.name!r} ")


def model_folder(spec: str) -> Path | None:
    """The local folder of the model at ``spec`` (a ``.onnx`` file or a folder holding ``model.onnx``).

    None for object-store URIs and registry names (no local folder to resolve names in).
    """
    if is_remote(spec) or spec.startswith("models:/"):
        return None
    path = Path(spec.removeprefix("file://")).expanduser()
    return path if path.is_dir() else path.parent


def inline_external_data(model_bytes: bytes, source: str, folder: Path | None) -> bytes:
    """A self-contained serialised model: external tensor data checked, read and inlined.

    Parameters
    ----------
    model_bytes
        The serialised ONNX model as read.
    source
        Where it came from (file, URI, registry name), named in errors.
    folder
        The model file's local folder; None when the model has none (bytes, URI, registry).

    Returns
    -------
    bytes
        ``model_bytes`` unchanged when no tensor is external (or the bytes are not an ONNX
        model, which onnxruntime then reports), else the model with the data inlined.

    Raises
    ------
    HeimdallError
        External data in a model without a folder; a ``location`` that is absolute, has a
        ``..`` segment or leaves the folder through a symbolic link; a missing or short file.

    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(model_bytes)
    except (DecodeError, ValueError, RuntimeError):
        return model_bytes
    external = [
        (label, t) for label, t in _all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL
    ]
    if not external:
        return model_bytes
    for label, tensor in external:
        entries = {e.key: e.value for e in tensor.external_data}
        field = f"external_data location of {label}"
        if folder is None:
            raise HeimdallError(
                f"{source}: field {field!r} names {entries.get('location')!r}, an external data file; "
                f"a model loaded from memory, a URI or the registry must be self-contained; refused"
            )
        path = resolve_inside(folder, entries.get("location"), source=source, field=field)
        tensor.raw_data = _read_range(path, entries, source, field)
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
    try:
        return model.SerializeToString()
    except ValueError as exc:  # protobuf refuses messages over 2 GiB
        raise HeimdallError(f"{source}: model with inlined external data is too large ({exc})") from None


def _read_range(path: Path, entries: dict[str, str], source: str, field: str) -> bytes:
    """``length`` bytes at ``offset`` of ``path`` (external_data entries; default: to the end)."""
    try:
        offset = int(entries.get("offset", 0))
        length = int(entries["length"]) if "length" in entries else None
    except ValueError:
        raise HeimdallError(f"{source}: {field}: offset / length are not integers ({entries})") from None
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read() if length is None else f.read(length)
    except OSError as exc:
        raise HeimdallError(f"{source}: {field}: cannot read {str(path)!r} ({exc.strerror})") from None
    if length is not None and len(data) != length:
        raise HeimdallError(
            f"{source}: {field}: {str(path)!r} holds {len(data)} bytes at offset {offset}, not {length}"
        )
    return data
