"""Tiny worlds, stored sets and training configs for the model tests (generated, seeded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from heimdall.data.store import SessionStore
from heimdall.models.config import TrainConfig
from heimdall.network import Network
from heimdall.sim import World, WorldConfig

TINY_DURATION_S = 0.25


@pytest.fixture(scope="session")
def tiny_world(network: Network, reference_world: WorldConfig) -> World:
    return World(network, reference_world.with_overrides(duration_s=TINY_DURATION_S), seed=0)


def _make_store(path: Path, world: World, n: int, seed: int) -> str:
    meta = {
        "network": world.network.model_dump(mode="json"),
        "world": world.config.model_dump(mode="json"),
        "world_seed": world.seed,
        "session_seed": seed,
    }
    store = SessionStore.create(str(path), meta)
    store.append_shard(0, world.simulate(n, seed))
    return str(path)


@pytest.fixture
def make_store():
    """Write ``n`` sessions of a world (session seed ``seed``) as a one-shard store at a path."""
    return _make_store


@pytest.fixture(scope="session")
def tiny_val(tmp_path_factory: pytest.TempPathFactory, tiny_world: World) -> str:
    return _make_store(tmp_path_factory.mktemp("val") / "val", tiny_world, 40, 1001)


@pytest.fixture
def tiny_config(tmp_path: Path, tiny_val: str) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "name": "tiny",
            "data": {"val": tiny_val, "duration_s": TINY_DURATION_S, "batch_size": 8, "batches_per_epoch": 3,
                     "num_workers": 0, "norm_sessions": 16},
            "model": {"n_time": 4, "d_model": 16, "n_heads": 2, "n_layers": 1, "cnn_channels": 4},
            "optim": {"warmup_steps": 2},
            "trainer": {"max_epochs": 1, "out_dir": str(tmp_path / "runs"), "accelerator": "cpu"},
            "tracking": {"uri": f"sqlite:///{tmp_path / 'mlruns.db'}", "experiment": "tiny"},
        }
    )  # fmt: skip


@pytest.fixture
def net_inputs():
    """Random inputs (B, R): >= 3 online receivers in shuffled slots, levels 1e-4..1 of full scale."""
    import torch

    def make(b: int, r: int, seed: int, t: int = 3000) -> tuple[torch.Tensor, ...]:
        gen = torch.Generator().manual_seed(seed)
        level = 10 ** (-torch.rand(b, r, 1, 1, generator=gen) * 4)
        iq = torch.randn(b, r, t, 2, generator=gen) * level
        pos = torch.cat(
            [torch.randn(b, r, 2, generator=gen) * 80, 10 + 500 * torch.rand(b, r, 1, generator=gen)], -1
        )
        mask = torch.rand(b, r, generator=gen) < 0.7
        mask[:, :3] = True
        perm = torch.argsort(torch.rand(b, r, generator=gen), dim=1)
        mask = torch.gather(mask, 1, perm)
        freq = torch.where(torch.rand(b, generator=gen) < 0.5, 145e6, 435e6).float()
        return iq, pos, mask, freq

    return make


@pytest.fixture
def assert_permutation_invariant():
    """Check that permuting receiver slots changes outputs by < 1e-5 (relative to their scale)."""
    import torch

    def check(net, inputs, seed: int) -> None:
        iq, pos, mask, freq = inputs
        mean, cov = net(iq, pos, mask, freq)
        perm = torch.randperm(iq.shape[1], generator=torch.Generator().manual_seed(seed))
        mean_p, cov_p = net(iq[:, perm], pos[:, perm], mask[:, perm], freq)
        assert (mean_p - mean).abs().max() < 1e-5 * max(1.0, float(mean.abs().max()))
        assert (cov_p - cov).abs().max() < 1e-5 * max(1.0, float(cov.abs().max()))

    return check


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models on a shared machine: one intra-op thread (no spinning), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
