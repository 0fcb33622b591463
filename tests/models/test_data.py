import numpy as np
import torch
from torch.utils.data import DataLoader

from heimdall.data.session import OFFLINE
from heimdall.models.config import TRAIN_SEED_BASE, TrainConfig
from heimdall.models.data import (
    RankBatchSampler,
    SimulatedBatches,
    StoredBatches,
    WorldSpec,
    keep_enough_online,
)
from heimdall.sim import World


def _spec(world: World) -> WorldSpec:
    return WorldSpec(world.network.model_dump(mode="json"), world.config.model_dump(mode="json"), world.seed)


def test_seeds_disjoint_across_two_ranks_and_two_workers(tiny_world: World) -> None:
    """Every (rank, worker) stream of two epochs draws different session seeds, all >= 1,000,000."""
    ds = SimulatedBatches(_spec(tiny_world), batch_size=2, seed_base=TrainConfig(seed=3).train_seed_base,
                          n_samples=tiny_world.n_samples)  # fmt: skip
    seen: dict[tuple[int, int, int], set[int]] = {}
    for epoch in range(2):
        for rank in range(2):
            sampler = RankBatchSampler(batches_per_epoch=6, rank=rank, world_size=2, epoch=epoch)
            loader = DataLoader(ds, batch_size=None, sampler=sampler, num_workers=2,
                                worker_init_fn=None, collate_fn=lambda x: x)  # fmt: skip
            for i, batch in enumerate(loader):
                worker = i % 2  # the DataLoader hands batches to workers in turn
                seen.setdefault((epoch, rank, worker), set()).update(batch["session_seed"].tolist())
    assert len(seen) == 8
    keys = list(seen)
    for a in range(len(keys)):
        for b in range(a + 1, len(keys)):
            assert not seen[keys[a]] & seen[keys[b]], (keys[a], keys[b])
    all_seeds = set().union(*seen.values())
    assert min(all_seeds) >= TRAIN_SEED_BASE and len(all_seeds) == 2 * 6  # one seed per global batch


def test_sampler_shards_each_epoch_between_ranks() -> None:
    got = [list(RankBatchSampler(5, r, 2, epoch=1)) for r in range(2)]
    assert got == [[5, 7, 9], [6, 8]]
    s = RankBatchSampler(5, 0, 1)
    s.set_epoch(2)
    assert list(s) == [10, 11, 12, 13, 14] and len(s) == 5


def test_sessions_with_fewer_than_three_online_are_dropped_and_counted(tiny_world: World) -> None:
    batch = tiny_world.simulate(6, 77)
    batch.rx_state[1, :] = OFFLINE
    batch.rx_state[1, :2] = 1
    batch.rx_state[4, :] = OFFLINE
    kept, dropped = keep_enough_online(batch)
    expected = int(np.sum(batch.online.sum(axis=1) < 3))
    assert dropped == expected >= 2 and kept.n_sessions == 6 - expected
    assert np.all(kept.online.sum(axis=1) >= 3)


def test_stored_batches_zero_offline_slots_and_cover_the_set(tiny_val: str, tiny_world: World) -> None:
    ds = StoredBatches(tiny_val, tiny_world.network.frame, 16, tiny_world.n_samples)
    assert len(ds) == 3
    ids = torch.cat([ds[g]["session_id"] for g in range(len(ds))])
    dropped = sum(int(ds[g]["n_dropped"]) for g in range(len(ds)))
    assert len(set(ids.tolist())) == ids.numel() == 40 - dropped
    b = ds[0]
    assert (b["iq"][~b["rx_mask"]] == 0).all() and (b["rx_pos"][~b["rx_mask"]] == 0).all()
    shuffled = StoredBatches(
        tiny_val, tiny_world.network.frame, 16, tiny_world.n_samples, shuffle=True, seed=1
    )
    assert not np.array_equal(shuffled.indices(0), shuffled.indices(3))  # epoch 0 vs epoch 1 batch 0
