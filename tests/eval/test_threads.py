"""The model's thread budget during evaluation: one intra-op thread, small batches, restored after."""

from __future__ import annotations

import numpy as np
import torch

from heimdall.eval.threads import MODEL_BATCH, predict_in_batches, start_model


class _Batch:
    def __init__(self, index: np.ndarray) -> None:
        self.index = index
        self.n_sessions = len(index)

    def select(self, sl: slice) -> _Batch:
        return _Batch(self.index[sl])


class _Recorder:
    """A predictor that answers session i with mean (i, −i) and records what it saw."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.threads: list[int] = []

    def predict(self, batch: _Batch) -> tuple[np.ndarray, np.ndarray]:
        self.sizes.append(batch.n_sessions)
        self.threads.append(torch.get_num_threads())
        i = batch.index.astype(np.float64)
        return np.stack([i, -i], -1), np.broadcast_to(np.eye(2), (len(i), 2, 2)).copy()


def test_batches_of_eight_one_thread_in_order_and_restored() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    rec = _Recorder()
    try:
        mean, cov, seconds = predict_in_batches(rec, _Batch(np.arange(21)))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert MODEL_BATCH == 8 and rec.sizes == [8, 8, 5]
    assert rec.threads == [1, 1, 1]
    np.testing.assert_array_equal(mean[:, 0], np.arange(21))
    assert cov.shape == (21, 2, 2) and seconds >= 0.0


def test_worker_thread_gives_the_same_answer() -> None:
    rec = _Recorder()
    mean, _, _ = start_model(rec, _Batch(np.arange(10, 30))).result()
    np.testing.assert_array_equal(mean[:, 1], -np.arange(10, 30))
    assert rec.threads == [1, 1, 1]
