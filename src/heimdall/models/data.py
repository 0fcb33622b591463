"""Training data: on-the-fly simulated or stored sessions, as batches of model inputs.

On-the-fly training is endless and seeded: global batch g (counted over all epochs,
ranks and workers) is simulated with session seed ``train_seed_base + g``, sessions
0..batch_size−1, on the TRAIN random stream (:mod:`heimdall.sim.seeds`), which no
stored set or evaluation shares whatever the seeds. With a world family
(``world_seed`` a range or ``random``) or a network family (``family:<name>``) each
batch draws its world and network (:mod:`heimdall.sim.family`); every batch carries
each session's ``world_seed`` and ``network_key`` (:func:`network_key`). A
:class:`RankBatchSampler` gives rank ``k`` of ``W`` the global batches g ≡ k (mod W) of
each epoch, and the DataLoader hands each index to exactly one worker, so no two
workers or ranks ever draw the same session. Sessions with fewer than 3 online
receivers are dropped and counted (``n_dropped``). Validation and test sets are
always stored sets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from heimdall.data.session import SessionBatch
from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError
from heimdall.models.config import TrainConfig
from heimdall.network import Network
from heimdall.network.family import NetworkFamily
from heimdall.network.geodesy import LocalFrame
from heimdall.sim import World, WorldConfig, load_world
from heimdall.sim.family import Scenarios, WorldSeeds, parse_network_source
from heimdall.sim.seeds import Stream, generator

MIN_ONLINE = 3


def network_key(network_id: np.ndarray) -> np.ndarray:
    """A numeric id of each session's network: the first 63 bits of SHA-256 of its name; −1 if unknown.

    Tensors cannot hold strings; the key identifies ``network_id`` in a batch (int64, (B,)).
    """
    out = np.full(np.shape(network_id), -1, dtype=np.int64)
    for i, name in enumerate(np.asarray(network_id).reshape(-1)):
        if str(name):
            digest = hashlib.sha256(str(name).encode()).digest()
            out.reshape(-1)[i] = int.from_bytes(digest[:8], "big") >> 1
    return out


def batch_tensors(batch: SessionBatch, frame: LocalFrame, n_samples: int) -> dict[str, torch.Tensor]:
    """Model inputs plus truth of a batch as tensors; IQ stays int16 (converted on the device).

    Keys: ``iq`` int16 (B, R, n_samples, 2), ``rx_pos`` float32 (B, R, 3), ``rx_mask`` bool
    (B, R), ``center_freq_hz`` float32 (B,), ``truth_km`` float32 (B, 2) (NaN when unknown),
    ``session_seed`` / ``session_id`` / ``world_seed`` / ``network_key`` int64 (B,).
    """
    if batch.n_samples < n_samples:
        raise HeimdallError(f"captures have {batch.n_samples} samples, the model needs {n_samples}")
    mask = batch.online
    iq = batch.iq[:, :, :n_samples, :].copy()
    iq[~mask] = 0
    east, north = frame.to_local_km(np.nan_to_num(batch.rx_lat_deg), np.nan_to_num(batch.rx_lon_deg))
    pos = np.stack([east, north, np.nan_to_num(batch.rx_height_m)], axis=-1).astype(np.float32)
    pos[~mask] = 0.0
    te, tn = frame.to_local_km(batch.tx_lat_deg, batch.tx_lon_deg)
    return {
        "iq": torch.from_numpy(iq),
        "rx_pos": torch.from_numpy(pos),
        "rx_mask": torch.from_numpy(mask.astype(bool)),
        "center_freq_hz": torch.from_numpy(batch.center_freq_hz.astype(np.float32)),
        "truth_km": torch.from_numpy(np.stack([te, tn], axis=-1).astype(np.float32)),
        "session_seed": torch.from_numpy(batch.session_seed.astype(np.int64)),
        "session_id": torch.from_numpy(batch.session_id.astype(np.int64)),
        "world_seed": torch.from_numpy(batch.world_seed.astype(np.int64)),
        "network_key": torch.from_numpy(network_key(batch.network_id)),
    }


def keep_enough_online(batch: SessionBatch) -> tuple[SessionBatch, int]:
    """Sessions with at least 3 online receivers, and how many were dropped."""
    keep = np.flatnonzero(batch.online.sum(axis=1) >= MIN_ONLINE)
    return batch.select(keep), batch.n_sessions - keep.size


def iq_to_float(iq: torch.Tensor) -> torch.Tensor:
    """int16 IQ to float32 full-scale units (÷ 32768); float input passes through."""
    return iq.float() / 32768.0 if iq.dtype == torch.int16 else iq


@dataclass(frozen=True)
class WorldSpec:
    """What rebuilds the training worlds in a worker process (picklable).

    ``network`` is the fixed network (for a network family: its network of seed 0,
    whose local frame, the region's centre, every drawn network shares); ``world_seed``
    a seed, a range ``"0-99"`` or ``"random"``; ``network_family`` the family or None.
    """

    network: dict[str, Any]
    world: dict[str, Any]
    world_seed: int | str
    network_family: dict[str, Any] | None = None

    def build(self) -> World:
        """The world (a single world only; see :meth:`scenarios` for families)."""
        seeds = WorldSeeds.parse(self.world_seed)
        if not seeds.fixed or self.network_family is not None:
            raise HeimdallError(f"world seeds {seeds.text!r} / a network family make many worlds, not one")
        return World(Network.model_validate(self.network), WorldConfig.model_validate(self.world), seeds.lo)

    def scenarios(self, block: int) -> Scenarios:
        """The training worlds, one drawn world and network per ``block`` sessions."""
        fam = self.network_family
        network = NetworkFamily.model_validate(fam) if fam else Network.model_validate(self.network)
        return Scenarios(
            network, WorldConfig.model_validate(self.world), WorldSeeds.parse(self.world_seed), block
        )


class SimulatedBatches(Dataset):
    """Map-style dataset: index g -> batch simulated with session seed ``seed_base + g`` (TRAIN stream).

    With families, each batch is one drawn world and network.
    """

    def __init__(self, spec: WorldSpec, batch_size: int, seed_base: int, n_samples: int) -> None:
        self.spec, self.batch_size, self.seed_base, self.n_samples = spec, batch_size, seed_base, n_samples
        self.frame = Network.model_validate(spec.network).frame
        self._scenarios: Scenarios | None = None

    def __len__(self) -> int:  # indices are unbounded; the sampler decides which are used
        return 2**62

    def __getitem__(self, g: int) -> dict[str, torch.Tensor]:
        if self._scenarios is None:
            self._scenarios = self.spec.scenarios(self.batch_size)
        batch = self._scenarios.simulate(self.batch_size, self.seed_base + int(g), 0, stream=Stream.TRAIN)
        batch, dropped = keep_enough_online(batch)
        out = batch_tensors(batch, self.frame, self.n_samples)
        out["n_dropped"] = torch.tensor(dropped)
        return out


class StoredBatches(Dataset):
    """Map-style dataset over a stored set: index g -> a batch of sessions.

    With ``shuffle``, epoch e = g // n_batches reads a permutation seeded by (seed, e);
    otherwise batches are consecutive sessions (validation / test).
    """

    def __init__(
        self, uri: str, frame: LocalFrame, batch_size: int, n_samples: int,
        limit: int | None = None, shuffle: bool = False, seed: int = 0,
    ) -> None:  # fmt: skip
        self.uri, self.frame, self.batch_size, self.n_samples = uri, frame, batch_size, n_samples
        self.shuffle, self.seed = shuffle, seed
        self._store: SessionStore | None = None
        n = len(self.store)
        self.n_sessions = min(n, limit) if limit else n
        if self.n_sessions == 0:
            raise HeimdallError(f"stored set {uri!r} holds no sessions")
        self.n_batches = -(-self.n_sessions // batch_size)

    @property
    def store(self) -> SessionStore:
        """The store, opened lazily (per worker process)."""
        if self._store is None:
            self._store = SessionStore.open(self.uri)
        return self._store

    def __len__(self) -> int:
        return self.n_batches if not self.shuffle else 2**62

    def indices(self, g: int) -> np.ndarray:
        """Session positions of batch ``g``."""
        epoch, pos = divmod(int(g), self.n_batches)
        order = np.arange(self.n_sessions)
        if self.shuffle:
            order = generator(Stream.TRAIN, self.seed, epoch).permutation(self.n_sessions)
        return np.sort(order[pos * self.batch_size : (pos + 1) * self.batch_size])

    def __getitem__(self, g: int) -> dict[str, torch.Tensor]:
        batch, dropped = keep_enough_online(self.store.read(self.indices(g)))
        out = batch_tensors(batch, self.frame, self.n_samples)
        out["n_dropped"] = torch.tensor(dropped)
        return out


class RankBatchSampler(Sampler[int]):
    """Global batch indices of one rank for one epoch: e·N + i for i ≡ rank (mod world_size).

    ``set_epoch`` (called by Lightning before each epoch) selects the epoch.
    """

    def __init__(self, batches_per_epoch: int, rank: int = 0, world_size: int = 1, epoch: int = 0) -> None:
        self.batches_per_epoch, self.rank, self.world_size, self.epoch = (
            batches_per_epoch,
            rank,
            world_size,
            epoch,
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        base = self.epoch * self.batches_per_epoch
        return iter(range(base + self.rank, base + self.batches_per_epoch, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.batches_per_epoch, self.world_size))


def load_world_spec(cfg: TrainConfig) -> WorldSpec:
    """The training worlds from the config.

    Network name or ``family:<name>``, world YAML or the reference world, a world seed or a range.
    """
    source = parse_network_source(cfg.data.network)
    world = load_world(cfg.data.world)
    if cfg.data.duration_s is not None:
        world = world.with_overrides(duration_s=cfg.data.duration_s)
    seeds = WorldSeeds.parse(cfg.data.world_seed)
    world_seed: int | str = seeds.lo if seeds.fixed else seeds.text
    if isinstance(source, NetworkFamily):
        network = source.draw(generator(Stream.NETWORK, 0), 0)
        return WorldSpec(network.model_dump(mode="json"), world.model_dump(mode="json"), world_seed,
                         source.model_dump(mode="json"))  # fmt: skip
    return WorldSpec(source.model_dump(mode="json"), world.model_dump(mode="json"), world_seed)


def check_compatible(uri: str, store: SessionStore, spec: WorldSpec) -> None:
    """Raise HeimdallError when a stored set was made with another network or world."""
    meta = store.metadata
    if meta.get("network_family") is not None or spec.network_family is not None:  # a family set
        if meta.get("network_family") != spec.network_family:
            raise HeimdallError(
                f"stored set {uri!r} was made with another network family than the training one; recreate it"
            )
    elif "network" in meta and meta["network"] != spec.network:
        raise HeimdallError(
            f"stored set {uri!r} was made with another network than the training one; recreate it"
        )
    if meta.get("world") is not None and meta["world"] != spec.world:
        raise HeimdallError(f"stored set {uri!r} was made with another world configuration; recreate it")


class EchoLoader:
    """Yield each batch of ``loader`` ``echo`` times in a row (data echoing, Choi et al. 2019).

    When simulating is slower than a training step, re-using each fresh batch for a few
    steps buys more optimizer steps per second at a small cost in sample diversity.
    ``sampler`` is exposed so Lightning's ``set_epoch`` still reaches the rank sampler.
    """

    def __init__(self, loader: DataLoader, echo: int) -> None:
        self.loader, self.echo = loader, echo
        self.sampler = loader.sampler

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self.loader:
            for _ in range(self.echo):
                yield batch

    def __len__(self) -> int:
        return len(self.loader) * self.echo


def _collate_single(item: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return item


class SessionDataModule(L.LightningDataModule):
    """Training batches (simulated on the fly or stored) and validation batches (stored).

    Parameters
    ----------
    cfg
        Resolved training configuration.
    n_samples
        Capture length the model takes, samples.

    """

    def __init__(self, cfg: TrainConfig, spec: WorldSpec, n_samples: int) -> None:
        super().__init__()
        self.cfg, self.spec, self.n_samples = cfg, spec, n_samples
        self.frame = Network.model_validate(spec.network).frame
        self._train_sampler: RankBatchSampler | None = None

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataset(self) -> Dataset:
        """The training dataset (see module docstring)."""
        d = self.cfg.data
        if d.train is None:
            return SimulatedBatches(self.spec, d.batch_size, self.cfg.train_seed_base, self.n_samples)
        return StoredBatches(
            d.train, self.frame, d.batch_size, self.n_samples, shuffle=True, seed=self.cfg.seed
        )

    def train_dataloader(self) -> DataLoader | EchoLoader:
        """Each rank's share of each epoch's global batches, spread over the workers."""
        rank, world_size = self._rank()
        trainer = self.trainer
        # epochs already processed (restored on resume): the first iterator is made before set_epoch
        epoch = trainer.fit_loop.epoch_progress.current.processed if trainer is not None else 0
        self._train_sampler = RankBatchSampler(self.cfg.data.batches_per_epoch, rank, world_size, epoch)
        loader = DataLoader(
            self.train_dataset(), batch_size=None, sampler=self._train_sampler,
            num_workers=self.cfg.data.num_workers, collate_fn=_collate_single,
            persistent_workers=False, prefetch_factor=2 if self.cfg.data.num_workers else None,
        )  # fmt: skip
        return EchoLoader(loader, self.cfg.data.echo) if self.cfg.data.echo > 1 else loader

    def val_dataloader(self) -> DataLoader:
        """The whole validation set on every rank (metrics need all sessions)."""
        d = self.cfg.data
        ds = StoredBatches(d.val, self.frame, d.batch_size, self.n_samples, limit=d.val_sessions)
        return DataLoader(ds, batch_size=None, shuffle=False, num_workers=0, collate_fn=_collate_single)
