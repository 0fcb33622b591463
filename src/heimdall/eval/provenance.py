"""A model's training provenance against an evaluation store: overlap refused, generalisation stated.

A figure measured on sessions the model trained on, or chose its checkpoint and
temperature on, is not a test figure; a figure measured in the model's own training
world says nothing about terrain it never saw. ``heimdall evaluate`` therefore
compares what the model's metadata records about its training (written by
:func:`heimdall.models.train.build_model`: ``world_seed`` — a seed, a range
``"lo-hi"`` or ``"random"`` —, ``network`` / ``network_name``, ``world``,
``train_seed_base``, ``dataset_uri`` / ``dataset_hash``, ``val_dataset_uri`` /
``val_dataset_hash``) with the store's metadata and per-session columns
(``world_seed``, ``network_id``, ``session_seed``, content digests).

Overlaps (each refused unless ``--allow-overlap``; the message names it):

- the store's content hash is the training or the validation set's;
- the store shares sessions (equal per-session content digests) with the training
  or validation store, when that store can be opened;
- the store holds sessions drawn from the model's on-the-fly training stream: the
  TRAIN stream (or, for stores written before named streams, the stream every set
  shared), a training world seed and network, and a session seed in the training
  range ``train_seed_base`` … ``train_seed_base + TRAIN_SEED_STRIDE − 1``. Stored sets
  written by ``heimdall simulate`` use the STORED stream (:mod:`heimdall.sim.seeds`),
  which no training stream shares whatever the seeds, so they never overlap this way.

Generalisation, stated in the report's ``provenance`` key and the table header:

- ``worlds``: ``"in-world"`` (the store's world seeds, network and world parameters are
  the model's training world), ``"training family"`` (world seeds in the training
  range and networks of the training network family: the same statistics, terrain
  drawn afresh), ``"unseen world"`` (a world seed outside the training seeds, other
  world parameters, or another network: a world's terrain is drawn over its network's
  area, so a new network is new terrain) or ``"partly in-world"``;
- ``network``: ``"training network"``, ``"training family"`` or ``"unseen network"``
  (with the distance of the store's network from the model's reference point, the
  origin of its input frame; docs/TRAINING.md).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError
from heimdall.models.config import TRAIN_SEED_STRIDE
from heimdall.network.family import NetworkFamily, Region, load_network_family
from heimdall.network.geodesy import LocalFrame
from heimdall.sim.family import FAMILY_PREFIX, WorldSeeds

#: Store metadata ``session_stream`` of sets written by ``heimdall simulate``.
STORED_STREAM = "stored"
#: ``session_stream`` of sets whose sessions were drawn on the training stream.
TRAIN_STREAM = "train"
#: Stores written before named streams: one stream served stored sets and training.
LEGACY_STREAM = "shared (before named streams)"


@dataclass(frozen=True)
class ModelProvenance:
    """What a model's metadata says about its training data (module docstring).

    ``known`` is False for a model without provenance metadata (nothing can be checked).
    ``stream`` is ``"train"`` for on-the-fly training, ``"stored"`` for a stored training set.
    """

    known: bool
    world_seeds: WorldSeeds | None = None
    network: str | None = None
    network_family: str | None = None
    family_region: Region | None = None
    stream: str | None = None
    train_seed_base: int | None = None
    world: dict[str, Any] | None = None
    train_uri: str | None = None
    train_hash: str | None = None
    val_uri: str | None = None
    val_hash: str | None = None
    ref_lat: float | None = None
    ref_lon: float | None = None

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> ModelProvenance:
        """Read the provenance from model metadata (missing keys: unknown)."""
        seed_text = metadata.get("world_seed")
        train_uri = metadata.get("dataset_uri")
        if seed_text is None and not metadata.get("dataset_hash"):
            return cls(
                known=False, ref_lat=_float(metadata.get("ref_lat")), ref_lon=_float(metadata.get("ref_lon"))
            )
        try:
            seeds = WorldSeeds.parse(seed_text) if seed_text is not None else None
        except HeimdallError:
            seeds = None
        family = _family_name(metadata)
        base = metadata.get("train_seed_base")
        return cls(
            known=True,
            world_seeds=seeds,
            network=None
            if family
            else metadata.get("network_name") or (metadata.get("network") or {}).get("name"),
            network_family=family,
            family_region=_family_region(metadata) if family else None,
            stream=TRAIN_STREAM if base is not None else STORED_STREAM,
            train_seed_base=None if base is None else int(base),
            world=metadata.get("world"),
            train_uri=train_uri,
            train_hash=metadata.get("dataset_hash"),
            val_uri=metadata.get("val_dataset_uri"),
            val_hash=metadata.get("val_dataset_hash"),
            ref_lat=_float(metadata.get("ref_lat")),
            ref_lon=_float(metadata.get("ref_lon")),
        )

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for the report."""
        if not self.known:
            return {"known": False}
        return {
            "known": True,
            "world_seeds": None if self.world_seeds is None else self.world_seeds.text,
            "network": self.network,
            "network_family": self.network_family,
            "stream": self.stream,
            "train_seed_range": None
            if self.train_seed_base is None
            else [self.train_seed_base, self.train_seed_base + TRAIN_SEED_STRIDE - 1],
            "train": {"uri": self.train_uri, "content_hash": self.train_hash},
            "val": {"uri": self.val_uri, "content_hash": self.val_hash},
        }


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _family_source(metadata: dict[str, Any]) -> str | None:
    """What followed ``family:`` in the training data source (a packaged name or a YAML path), if any."""
    fam = metadata.get("network_family")
    if isinstance(fam, dict) and fam.get("name"):
        return str(fam["name"])
    if isinstance(fam, str) and fam:
        return fam.removeprefix(FAMILY_PREFIX)
    uri = str(metadata.get("dataset_uri") or "")
    if uri.startswith("sim://"):  # sim://<network or family:NAME>?world_seed=…&seed_base=…
        source = unquote(uri.removeprefix("sim://").split("?", 1)[0])
        if source.startswith(FAMILY_PREFIX):
            return source.removeprefix(FAMILY_PREFIX)
    return None


def _family_name(metadata: dict[str, Any]) -> str | None:
    """The training network family's name (drawn networks are named ``<family>#<seed>``)."""
    name = str(metadata.get("network_name") or (metadata.get("network") or {}).get("name") or "")
    if "#" in name:
        return name.rpartition("#")[0]
    source = _family_source(metadata)
    return None if source is None else Path(source).name.removesuffix(".yaml").removesuffix(".yml")


def _family_region(metadata: dict[str, Any]) -> Region | None:
    """The training family's region, when the family can be loaded."""
    fam = metadata.get("network_family")
    if isinstance(fam, dict):
        try:
            return NetworkFamily.model_validate(fam).region
        except ValueError:
            return None
    source = _family_source(metadata) or _family_name(metadata)
    if source is None:
        return None
    try:
        return load_network_family(source).region
    except HeimdallError:
        return None


@dataclass
class StoreProvenance:
    """What an evaluation store holds: its identity, stream, worlds and networks."""

    uri: str
    content_hash: str
    stream: str
    world: dict[str, Any] | None
    world_seed: np.ndarray
    session_seed: np.ndarray
    network_id: np.ndarray
    digests: list[bytes]
    reference: tuple[float, float] | None

    @classmethod
    def from_store(cls, store: SessionStore, uri: str) -> StoreProvenance:
        """Read the store's metadata and per-session columns (no IQ is read)."""
        meta = store.metadata
        table = store.sessions_table()
        n = table.num_rows
        names = table.column_names
        network_id = (
            np.asarray(table.column("network_id").to_pylist(), dtype=str)
            if "network_id" in names
            else np.full(n, "", dtype=str)
        )
        fixed = (meta.get("network") or {}).get("name", "")
        network_id = np.where(network_id == "", fixed, network_id)
        return cls(
            uri=uri,
            content_hash=store.content_hash(),
            stream=str(meta.get("session_stream") or LEGACY_STREAM),
            world=meta.get("world"),
            world_seed=np.asarray(table.column("world_seed"), dtype=np.int64),
            session_seed=np.asarray(table.column("session_seed"), dtype=np.int64),
            network_id=network_id,
            digests=list(table.column("digest").to_pylist()),
            reference=_store_reference(meta),
        )


def _store_reference(meta: dict[str, Any]) -> tuple[float, float] | None:
    """The store network's reference point (lat, lon), or its family region's centre."""
    net = meta.get("network") or {}
    ref = net.get("reference")
    if isinstance(ref, dict) and "lat" in ref:
        return float(ref["lat"]), float(ref["lon"])
    fam = meta.get("network_family")
    if isinstance(fam, dict) and isinstance(fam.get("region"), dict):
        r = fam["region"]
        return 0.5 * (r["lat_min"] + r["lat_max"]), 0.5 * (r["lon_min"] + r["lon_max"])
    return None


@dataclass
class ProvenanceCheck:
    """The comparison: overlaps (refused unless allowed) and the generalisation statement."""

    overlaps: list[str]
    worlds: str
    network: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    overlap_allowed: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The report's ``provenance`` key."""
        return {
            "summary": self.summary,
            "worlds": self.worlds,
            "network": self.network,
            "overlaps": list(self.overlaps),
            "overlap_allowed": self.overlap_allowed,
            **self.details,
        }


def _same_set_overlaps(
    model: ModelProvenance, store: StoreProvenance, storage_options: dict[str, Any] | None
) -> tuple[list[str], list[str]]:
    """Overlaps with the training / validation sets by content hash and per-session digests."""
    overlaps, notes = [], []
    mine = set(store.digests)
    for label, uri, digest in (
        ("training", model.train_uri, model.train_hash),
        ("validation", model.val_uri, model.val_hash),
    ):
        if digest and digest == store.content_hash:
            overlaps.append(f"store {store.uri} is the {label} set (content hash {digest[:16]}…)")
            continue
        if not uri or str(uri).startswith("sim://"):
            continue
        try:
            other = SessionStore.open(uri, storage_options)
            theirs = set(other.session_digests())
        except (HeimdallError, OSError) as exc:
            notes.append(f"{label} set {uri} cannot be opened ({exc}): sessions compared by hash only")
            continue
        shared = len(mine & theirs)
        if shared:
            overlaps.append(
                f"store {store.uri} shares {shared} of its {len(store.digests)} sessions "
                f"with the {label} set {uri}"
            )
    return overlaps, notes


def _network_seen(model: ModelProvenance, network_id: str) -> str:
    """``"training network"``, ``"training family"`` or ``"unseen network"`` for one network id."""
    if model.network is not None and network_id == model.network:
        return "training network"
    if model.network_family is not None and network_id.rpartition("#")[0] == model.network_family:
        return "training family"
    return "unseen network"


def _stream_overlaps(model: ModelProvenance, store: StoreProvenance) -> list[str]:
    """Sessions of the store that the model's on-the-fly training drew (same stream, world, network, seed)."""
    if model.train_seed_base is None or model.world_seeds is None or store.stream == STORED_STREAM:
        return []
    if model.world is not None and store.world is not None and model.world != store.world:
        return []
    base = model.train_seed_base
    in_range = (store.session_seed >= base) & (store.session_seed < base + TRAIN_SEED_STRIDE)
    in_seeds = (store.world_seed >= model.world_seeds.lo) & (store.world_seed <= model.world_seeds.hi)
    seen_net = np.array([_network_seen(model, n) != "unseen network" for n in store.network_id], dtype=bool)
    hit = in_range & in_seeds & seen_net
    if not hit.any():
        return []
    stream = "the TRAIN stream" if store.stream == TRAIN_STREAM else f"the {store.stream} stream"
    out = []
    for (world_seed, net), count in sorted(
        Counter(zip(store.world_seed[hit].tolist(), store.network_id[hit].tolist(), strict=True)).items()
    ):
        seeds = store.session_seed[hit & (store.world_seed == world_seed) & (store.network_id == net)]
        out.append(
            f"{count} sessions of world seed {world_seed} on {net} drawn from {stream} with session seeds "
            f"{int(seeds.min())}-{int(seeds.max())}, inside the model's on-the-fly training range "
            f"{base}-{base + TRAIN_SEED_STRIDE - 1}"
        )
    return out


def _classify_worlds(
    model: ModelProvenance, store: StoreProvenance, networks: dict[str, str]
) -> tuple[str, dict[str, Any]]:
    seeds = sorted(set(store.world_seed.tolist()))
    if model.world_seeds is None:
        return "unknown", {}
    same_params = model.world is None or store.world is None or model.world == store.world
    per_session_net = np.array([networks[n] for n in store.network_id], dtype=object)
    in_seeds = (store.world_seed >= model.world_seeds.lo) & (store.world_seed <= model.world_seeds.hi)
    seen = in_seeds & (per_session_net != "unseen network") & same_params
    detail = {
        "store_world_seeds": seeds[:20] + (["…"] if len(seeds) > 20 else []),
        "n_world_seeds": len(seeds),
        "world_parameters_match": bool(same_params),
        "sessions_in_training_worlds": int(seen.sum()),
    }
    if not seen.any():
        return "unseen world", detail
    if not seen.all():
        return "partly in-world", detail
    exact = model.world_seeds.fixed and bool(np.all(per_session_net == "training network"))
    return ("in-world" if exact else "training family"), detail


def _distance_km(model: ModelProvenance, store: StoreProvenance) -> float | None:
    if model.ref_lat is None or model.ref_lon is None or store.reference is None:
        return None
    e, n = LocalFrame(model.ref_lat, model.ref_lon).to_local_km(*store.reference)
    return float(np.hypot(e, n))


def check_provenance(
    metadata: dict[str, Any],
    store: SessionStore,
    uri: str,
    storage_options: dict[str, Any] | None = None,
) -> ProvenanceCheck:
    """Compare a model's training provenance with an evaluation store (module docstring).

    Parameters
    ----------
    metadata
        The model's metadata (checkpoint, ONNX or registry).
    store
        The evaluation store.
    uri
        Its URI, as messages name it.
    storage_options
        Object-store settings to open the training / validation stores.

    """
    model = ModelProvenance.from_metadata(metadata)
    sp = StoreProvenance.from_store(store, uri)
    nets = sorted(set(sp.network_id.tolist()))
    store_desc = {"uri": uri, "content_hash": sp.content_hash, "stream": sp.stream, "networks": nets[:20]}
    if not model.known:
        return ProvenanceCheck(
            [], "unknown", "unknown",
            "training provenance unknown (the model records no training data): overlap not checked",
            {"model": model.describe(), "store": store_desc},
        )  # fmt: skip
    overlaps, notes = _same_set_overlaps(model, sp, storage_options)
    overlaps += _stream_overlaps(model, sp)
    networks = {n: _network_seen(model, n) for n in nets}
    kinds = set(networks.values())
    network = kinds.pop() if len(kinds) == 1 else "partly unseen network"
    worlds, world_detail = _classify_worlds(model, sp, networks)
    distance = _distance_km(model, sp)
    trained_on = model.network or f"family {model.network_family}"
    seeds = model.world_seeds.text if model.world_seeds else "?"
    where = (
        f", {distance:.0f} km from the model's reference point"
        if distance is not None and network != "training network"
        else ""
    )
    summary = f"{worlds}, {network}{where} (trained on world seeds {seeds}, {trained_on})"
    if overlaps:
        summary = "OVERLAPS TRAINING: " + summary
    details = {
        "model": model.describe(),
        "store": store_desc,
        "store_network_distance_km": None if distance is None else round(distance, 1),
        **world_detail,
        "notes": notes,
    }
    if model.family_region is not None and sp.reference is not None:
        r = model.family_region
        lat, lon = sp.reference
        details["store_inside_family_region"] = bool(
            r.lat_min <= lat <= r.lat_max and r.lon_min <= lon <= r.lon_max
        )
    return ProvenanceCheck(overlaps, worlds, network, summary, details)


def enforce(check: ProvenanceCheck, uri: str, allow_overlap: bool) -> ProvenanceCheck:
    """Refuse an overlapping store (HeimdallError naming each overlap) unless ``allow_overlap``."""
    if check.overlaps and not allow_overlap:
        raise HeimdallError(
            f"--data {uri}: overlaps the model's training: "
            + "; ".join(check.overlaps)
            + ". Its figures would not be held-out test figures; evaluate on another set, or pass "
            "--allow-overlap to evaluate anyway (the report then says so)"
        )
    check.overlap_allowed = bool(check.overlaps)
    return check
