"""The thread budget of ``evaluate``: the model on one thread beside the baselines on another.

On a small, shared machine the model's own thread pools were the bottleneck: torch
(and onnxruntime) start one intra-op thread per core, and their OpenMP-style
workers spin at every barrier waiting for each other. With another CPU-bound
process on a 2-core machine one of them is always descheduled, so each barrier
waits a whole scheduler slice: the same batch took 0.26 s per session with 2
threads and 13 ms with 1 (docs/EVALUATION.md, "Evaluation speed"). Large
batches also cost more per session than small ones (the features of 64 sessions
× 7 receivers × 1 s of IQ no longer fit in cache).

So ``evaluate`` runs the model with **one** intra-op thread (torch here,
onnxruntime's session option in :mod:`heimdall.eval.job`), in batches of
:data:`MODEL_BATCH` sessions, in a worker thread while the baselines (numpy,
one BLAS thread; numpy and torch release the GIL in their kernels) run on the
main thread: on 2 idle cores both are busy, beside a CPU-bound process nothing
spins.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

#: Intra-op threads of the model (torch / onnxruntime) during evaluation.
MODEL_THREADS = 1
#: Sessions per model call during evaluation.
MODEL_BATCH = 8


class _Predicts(Protocol):
    def predict(self, batch: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]: ...


def predict_in_batches(
    predictor: _Predicts, batch: Any, size: int = MODEL_BATCH, threads: int = MODEL_THREADS
) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    """Mean (B, 2) km, covariance (B, 2, 2) km² and the seconds spent, ``size`` sessions at a time.

    The intra-op threads of torch (when loaded; its OpenMP and MKL pools too) are
    limited to ``threads`` for the duration. Process-wide BLAS limits are left to the
    caller (the baselines hold one BLAS thread on the main thread; setting and
    restoring them here, concurrently, would undo that).
    """
    start = time.perf_counter()
    with torch_threads(threads):
        means, covs = [], []
        for lo in range(0, batch.n_sessions, size):
            mean, cov = predictor.predict(batch.select(slice(lo, lo + size)))
            means.append(np.asarray(mean, np.float64))
            covs.append(np.asarray(cov, np.float64))
    if not means:
        return np.zeros((0, 2)), np.zeros((0, 2, 2)), time.perf_counter() - start
    return np.concatenate(means), np.concatenate(covs), time.perf_counter() - start


_WORKER: ThreadPoolExecutor | None = None


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Limit torch's intra-op threads (when torch is loaded) to ``threads`` for the block, then restore."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    try:
        if torch is not None:
            torch.set_num_threads(threads)
        yield
    finally:
        if torch is not None and before is not None:
            torch.set_num_threads(before)


def start_model(predictor: _Predicts, batch: Any) -> Future[Any]:
    """Run :func:`predict_in_batches` on ``batch`` in the model's worker thread.

    ``.result()`` gives the mean, the covariance and the seconds spent; the
    caller runs the baselines meanwhile.
    """
    return _worker().submit(predict_in_batches, predictor, batch)


def start_posterior(predictor: Any, batch: Any, frame: Any) -> Future[Any]:
    """Run ``predictor.posterior(batch, frame)`` (one intra-op thread) in the model's worker thread.

    ``.result()`` gives the posterior summaries and the seconds spent.
    """

    def run() -> tuple[Any, float]:
        start = time.perf_counter()
        with torch_threads(MODEL_THREADS):
            return predictor.posterior(batch, frame), time.perf_counter() - start

    return _worker().submit(run)


def _worker() -> ThreadPoolExecutor:
    global _WORKER
    if _WORKER is None:
        _WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heimdall-model")
    return _WORKER
