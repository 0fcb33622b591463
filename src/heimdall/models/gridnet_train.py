"""Pretraining of GridPosteriorNet's no-map parameters on world and network families (Lightning + MLflow).

Without a radio map :class:`heimdall.models.gridnet.GridPosteriorNet` has six
learnt scalars: the breakpoint law's exponents ``n_near`` and ``n_far``, the clutter
loss (dB), the 70 cm gain change (dB), σ_f of the unknown per-receiver field (dB) and the
per-capture σ τ (dB; without a map only σ_f² + τ² matters). This job learns them from
sessions of many worlds and networks: the law and spread a network without labels is
answered with.

Steps (``heimdall train --config configs/gridnet.yaml``):

1. a stored training set and a stored validation set, simulated by the job where missing
   (:func:`heimdall.sim.simulate_job.run_simulation`, world seeds ≥ 1000: 0-999 are
   test worlds);
2. every session measured once (:func:`heimdall.models.gridnet_inputs.inputs_for_slots`,
   what a real recording has) and its search grid laid over the receivers' bounding box
   + 30 km (``optim.grid_step_km`` cells);
3. loss (``optim.loss``):

   - ``joint`` (default): the mean negative log-likelihood of the measured powers at the
     known transmitter position, ``−log p(y | x_true)`` with the transmit power and height
     integrated out — :meth:`GridPosteriorNet.forward` at the truth, up to constants of
     the data. This is maximum (type-II) likelihood of the parameters: efficient when the
     model is right, and cheap (one point per session), so all training sessions form
     one batch optimised by L-BFGS (Nocedal & Wright 2006, §7.2);
   - ``log_score``: the mean negative log score of the grid posterior at the truth,
     ``log p(x_true) = lp(x_true) − logsumexp_g lp(x_g) − log(cell area / km²)`` (log
     density per km², Gneiting & Raftery 2007), by Adam on mini-batches. It is flat along
     a ridge of (n_near, n_far, clutter) that the joint likelihood resolves
     (docs/TRAINING.md);

   after each step the parameters are projected onto a physical range
   (1.5 ≤ n_near ≤ n_far, σ's within bounds);
4. validation: the loss on the validation set, the log score and the median error of
   the posterior mean and mode (km). ``joint``: the fit runs until the training loss
   changes by less than :data:`JOINT_CONVERGED_NATS` per session between epochs (L-BFGS's
   memory restarted each epoch, so a stalled run moves on) and keeps the converged
   parameters — maximum likelihood; the validation set measures them and does not choose
   among iterates (along the law's ridge their validation losses differ by ~1e-3 nats per
   session, noise). ``log_score``: early stopping on the validation loss, which also picks
   the parameters kept (the start values if no epoch beats them);
5. the checkpoint ``{"kind": "grid-posterior", "state_dict", "maps_config", "metadata"}``
   (plain data, read by :func:`heimdall.models.predict.read_checkpoint`), logged to MLflow
   with the config, per-epoch metrics and provenance.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError
from heimdall.maps.config import MapsConfig
from heimdall.models.gridnet import GridPosteriorNet, gridnet_from_payload
from heimdall.models.gridnet_config import KIND, GridNetConfig
from heimdall.models.gridnet_inputs import GridInputs, inputs_for_slots, truth_km
from heimdall.models.predict import read_checkpoint
from heimdall.posterior.grid import search_grid
from heimdall.tracking_store import resolve_tracking_uri

#: Change of the mean joint NLL (nats per session) between epochs below which the fit has converged.
JOINT_CONVERGED_NATS = 1e-4
#: Names of the learnt parameters in physical units (:func:`learnt_parameters`).
PARAMETER_NAMES = ("n_near", "n_far", "clutter_db", "band_offset_db", "field_sigma_db", "nugget_db")


# -- data -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridSessions:
    """Sessions measured once: the graph's inputs, the truth and each session's search grid.

    Attributes
    ----------
    arrays
        The graph's inputs except ``points_km`` (:meth:`GridInputs.arrays`), (N, R, ...).
    truth_km
        (N, 2) transmitter positions in each session's frame, km.
    points_km
        Per session, the search grid's cell centres (G_i, 2), km.
    log_cell_km2
        (N,) log of each grid's cell area (km²).
    n_used
        (N,) receiver slots used (1 + the last slot with a receiver).

    """

    arrays: dict[str, NDArray]
    truth_km: NDArray[np.float64]
    points_km: tuple[NDArray[np.float64], ...]
    log_cell_km2: NDArray[np.float64]
    n_used: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.truth_km)

    @property
    def grid_sizes(self) -> NDArray[np.int64]:
        """(N,) number of grid points per session."""
        return np.array([len(p) for p in self.points_km], dtype=np.int64)

    def collate(self, index: list[int] | NDArray[np.int64]) -> dict[str, torch.Tensor]:
        """A padded batch: slots trimmed to the batch's used ones, grids padded (``mask``), truth last."""
        return self._collate(index, with_grid=True)

    def collate_truth(self, index: list[int] | NDArray[np.int64]) -> dict[str, torch.Tensor]:
        """A batch whose only point is the truth (``points_km`` (B, 1, 2)): for the joint loss."""
        return self._collate(index, with_grid=False)

    def _collate(self, index: list[int] | NDArray[np.int64], with_grid: bool) -> dict[str, torch.Tensor]:
        idx = np.asarray(index, dtype=np.int64)
        r = int(self.n_used[idx].max())
        g = int(self.grid_sizes[idx].max()) if with_grid else 0
        points = np.zeros((len(idx), g + 1, 2), dtype=np.float32)
        mask = np.zeros((len(idx), g), dtype=bool)
        for k, i in enumerate(idx):
            p = self.points_km[i] if with_grid else self.points_km[i][:0]
            points[k, : len(p)] = p
            if len(p):
                points[k, len(p) : g] = p[0]  # padding: a real point (finite lp), masked out
            points[k, g] = self.truth_km[i]
            mask[k, : len(p)] = True
        out = {name: torch.from_numpy(np.ascontiguousarray(a[idx][:, :r] if a.ndim > 1 else a[idx]))
               for name, a in self.arrays.items()}  # fmt: skip
        out["points_km"] = torch.from_numpy(points)
        out["mask"] = torch.from_numpy(mask)
        out["log_cell_km2"] = torch.from_numpy(self.log_cell_km2[idx].astype(np.float32))
        return out


def measure_sessions(inputs: GridInputs, truth: NDArray[np.float64], step_km: float) -> GridSessions:
    """Sessions with a known truth, each with its search grid (receivers' bbox + 30 km, ``step_km`` cells)."""
    keep = np.flatnonzero(np.all(np.isfinite(truth), axis=1) & np.any(inputs.rx_height_m > 0, axis=1))
    inputs = inputs.select(keep)
    grids = [search_grid(inputs.area_km(i), step_km) for i in range(len(inputs))]
    used = inputs.rx_height_m > 0
    n_used = np.array([int(np.flatnonzero(u).max()) + 1 for u in used], dtype=np.int64)
    return GridSessions(
        inputs.arrays(), truth[keep], tuple(g.points_km for g in grids),
        np.log(np.array([g.cell_area_km2 for g in grids])), n_used,
    )  # fmt: skip


def ensure_store(uri: str, sessions: int, seed: int, cfg: GridNetConfig) -> SessionStore:
    """The store at ``uri`` with at least ``sessions`` sessions; simulated (or completed) where short."""
    d = cfg.data
    try:
        store: SessionStore | None = SessionStore.open(uri)
    except HeimdallError:
        store = None  # not there yet: simulate it
    if store is not None and len(store) >= sessions:
        return store
    from heimdall.sim.simulate_job import run_simulation

    world_path = Path(d.world) if d.world else None
    try:
        run_simulation(uri, d.network, sessions, d.world_seed, seed, world_path=world_path,
                       duration_s=d.duration_s, workers=d.simulate_workers,
                       world_block=d.sessions_per_world)  # fmt: skip
    except HeimdallError as exc:
        raise HeimdallError(f"{exc} (the config's data section no longer matches the stored set)") from None
    return SessionStore.open(uri)


def check_training_worlds(uri: str, store: SessionStore) -> None:
    """Refuse a store that holds test worlds (world seeds below 1000)."""
    from heimdall.models.gridnet_config import FIRST_TRAINING_WORLD_SEED
    from heimdall.sim.family import WorldSeeds

    meta = store.metadata
    text = meta.get("world_seeds", meta.get("world_seed"))
    if text is None:
        return
    if WorldSeeds.parse(text).lo < FIRST_TRAINING_WORLD_SEED:
        raise HeimdallError(f"{uri}: world seeds {text} include test worlds (< {FIRST_TRAINING_WORLD_SEED})")


def load_sessions(store: SessionStore, n: int, n_slots: int, step_km: float) -> GridSessions:
    """The first ``n`` sessions of a store, measured (:func:`measure_sessions`)."""
    batch = store.read(np.arange(min(n, len(store))))
    inputs = inputs_for_slots(batch, n_slots)
    return measure_sessions(inputs, truth_km(batch, inputs), step_km)


# -- scores ---------------------------------------------------------------------------------


def log_scores(model: GridPosteriorNet, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Log density at the truth (B,), nats per km², and the normalised log posterior mass per cell (B, G)."""
    from heimdall.models.gridnet_inputs import INPUT_NAMES

    return _normalised(model(*(batch[n] for n in INPUT_NAMES)), batch)


def _normalised(lp: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`log_scores` from the unnormalised log posterior ``lp`` (B, G + 1), truth last."""
    grid = lp[:, :-1].masked_fill(~batch["mask"], -math.inf)
    log_norm = torch.logsumexp(grid, dim=1, keepdim=True)
    return lp[:, -1] - log_norm[:, 0] - batch["log_cell_km2"], grid - log_norm


def joint_nll(model: GridPosteriorNet, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Negative log-likelihood (nats) of each session's measured powers at its truth, (B,).

    ``−log p(y | x_true)`` with P0 and the height integrated out, up to terms that depend on
    the data only (the Gaussian's 2π factors and the uniform P0 density): the truth is the
    batch's last point.
    """
    from heimdall.models.gridnet_inputs import INPUT_NAMES

    return -model(*(batch[n] for n in INPUT_NAMES))[:, -1]


def point_errors(log_mass: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance (km) of the posterior mean and of the densest cell from the truth, (B,) each."""
    pts = batch["points_km"][:, :-1]
    truth = batch["points_km"][:, -1]
    mean = torch.sum(torch.exp(log_mass)[..., None] * pts, dim=1)
    mode = pts[torch.arange(len(pts)), torch.argmax(log_mass, dim=1)]
    return torch.linalg.norm(mean - truth, dim=1), torch.linalg.norm(mode - truth, dim=1)


def validation_scores(
    model: GridPosteriorNet, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per session (B,): log score, joint NLL (nats), posterior-mean and mode errors (km)."""
    from heimdall.models.gridnet_inputs import INPUT_NAMES

    lp = model(*(batch[n] for n in INPUT_NAMES))
    score, log_mass = _normalised(lp, batch)
    return (score, -lp[:, -1], *point_errors(log_mass, batch))


def evaluate(model: GridPosteriorNet, data: GridSessions, batch_size: int = 32) -> dict[str, float]:
    """Mean log score (nats, density per km²), mean joint NLL and median mean / mode errors (km)."""
    parts = []
    with torch.no_grad():
        for idx in size_ordered_batches(data, batch_size):
            parts.append(validation_scores(model, data.collate(idx)))
    return summarise(*(torch.cat(p) for p in zip(*parts, strict=True)))


def summarise(
    scores: torch.Tensor, nll: torch.Tensor, mean_err: torch.Tensor, mode_err: torch.Tensor
) -> dict[str, float]:
    """Validation figures of per-session log scores, joint NLLs and errors."""
    return {
        "log_score": float(scores.mean()),
        "joint_nll": float(nll.mean()),
        "median_error_km": float(mean_err.median()),
        "map_median_error_km": float(mode_err.median()),
    }


def validation_loss(metrics: dict[str, float], loss: str) -> float:
    """The validation value of the training loss (lower is better): joint NLL or −log score."""
    return metrics["joint_nll"] if loss == "joint" else -metrics["log_score"]


def size_ordered_batches(data: GridSessions, batch_size: int) -> list[NDArray[np.int64]]:
    """Fixed batches of sessions with similar grid sizes and slot counts (little padding)."""
    order = np.lexsort((data.n_used, data.grid_sizes))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


class BucketSampler(torch.utils.data.Sampler[list[int]]):
    """``n_batches`` random batches per epoch, each of sessions with similar grid sizes.

    Every epoch draws a new random order, sorts it (stably) by grid size, cuts it into
    batches and yields ``n_batches`` of them in random order.
    """

    def __init__(self, data: GridSessions, batch_size: int, n_batches: int, seed: int) -> None:
        self.sizes = data.grid_sizes * 100 + data.n_used
        self.batch_size = batch_size
        self.n_batches = n_batches
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return min(self.n_batches, math.ceil(len(self.sizes) / self.batch_size))

    def __iter__(self) -> Iterator[list[int]]:
        perm = self.rng.permutation(len(self.sizes))
        order = perm[np.argsort(self.sizes[perm], kind="stable")]
        chunks = [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        for c in self.rng.permutation(len(chunks))[: len(self)]:
            yield [int(i) for i in chunks[c]]


def _loader(data: GridSessions, sampler: Any, truth_only: bool = False) -> torch.utils.data.DataLoader:
    collate = data.collate_truth if truth_only else data.collate
    return torch.utils.data.DataLoader(
        list(range(len(data))), batch_sampler=sampler, collate_fn=collate, num_workers=0
    )


def _train_loader(train: GridSessions, cfg: GridNetConfig) -> torch.utils.data.DataLoader:
    """Joint loss: every session in one batch (truth only); log score: random grid-size buckets."""
    if cfg.optim.loss == "joint":
        return _loader(train, [list(range(len(train)))], truth_only=True)
    return _loader(train, BucketSampler(train, cfg.optim.batch_size, cfg.optim.batches_per_epoch, cfg.seed))


# -- the model's parameters -----------------------------------------------------------------


def project_parameters(model: GridPosteriorNet, cfg: GridNetConfig) -> None:
    """Clamp the parameters onto the physical range: n_near ≤ n_far within bounds, σ's within bounds."""
    b = cfg.bounds
    with torch.no_grad():
        model.n_near.clamp_(b.min_near_exponent, b.max_exponent)
        model.n_far.clamp_(float(model.n_near), b.max_exponent)
        model.clutter_db.clamp_(min=0.0)
        model.band_offset_db.clamp_(-b.max_band_offset_db, b.max_band_offset_db)
        for p in (model.log_field_sigma_db, model.log_nugget_db):
            p.clamp_(math.log(b.min_sigma_db), math.log(b.max_sigma_db))


def learnt_parameters(model: GridPosteriorNet) -> dict[str, float]:
    """The no-map parameters in physical units: exponents (1), clutter loss, σ_f and τ (dB)."""
    with torch.no_grad():
        return {
            "n_near": model.n_near.item(),
            "n_far": model.n_far.item(),
            "clutter_db": model.clutter_db.item(),
            "band_offset_db": model.band_offset_db.item(),
            "field_sigma_db": math.exp(model.log_field_sigma_db.item()),
            "nugget_db": math.exp(model.log_nugget_db.item()),
        }


# -- Lightning ------------------------------------------------------------------------------


def cosine_factor(step: int, total: int, min_ratio: float) -> float:
    """Learning-rate factor: cosine decay from 1 to ``min_ratio`` over ``total`` steps."""
    t = min(step / max(total, 1), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def _lightning_module(model: GridPosteriorNet, cfg: GridNetConfig, start_metrics: dict[str, float]) -> Any:
    import lightning as L

    joint = cfg.optim.loss == "joint"

    class GridNetModule(L.LightningModule):
        """The configured loss; validation scores; the converged (joint) or best-validation state."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.history: list[dict[str, float]] = []
            self.best_state: dict[str, torch.Tensor] = {k: v.clone() for k, v in model.state_dict().items()}
            self.best_metrics: dict[str, float] = dict(start_metrics)
            self._train_losses: list[float] = []
            self._val: list[tuple[torch.Tensor, ...]] = []

        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            loss = joint_nll(self.model, batch).mean() if joint else -log_scores(self.model, batch)[0].mean()
            self._train_losses.append(loss.item())
            self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["band"]))
            return loss

        def on_train_epoch_start(self) -> None:
            if joint:  # restart L-BFGS's curvature memory each epoch: a stalled first run then moves on
                self.optimizers().optimizer.state.clear()

        def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
            project_parameters(self.model, cfg)

        def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
            self._val.append(validation_scores(self.model, batch))

        def on_validation_epoch_end(self) -> None:
            metrics = summarise(*(torch.cat(parts) for parts in zip(*self._val, strict=True)))
            self._val = []
            row = {"epoch": float(self.current_epoch), **{f"val_{k}": v for k, v in metrics.items()},
                   "train_loss": float(np.mean(self._train_losses)) if self._train_losses else math.nan,
                   **learnt_parameters(self.model)}  # fmt: skip
            self._train_losses = []
            self.history.append(row)
            loss = validation_loss(metrics, cfg.optim.loss)
            # joint: maximum likelihood keeps the converged fit (validation measures it); log score:
            # the best validation epoch, or the start
            if joint or loss < validation_loss(self.best_metrics, cfg.optim.loss):
                self.best_metrics = metrics
                self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.log("val_loss", loss, prog_bar=True)
            self.log("val_log_score", metrics["log_score"], prog_bar=True)

        def configure_optimizers(self) -> Any:
            m = self.model
            if joint:  # one full batch per epoch: deterministic quasi-Newton steps, no schedule
                return torch.optim.LBFGS(
                    list(m.parameters()), lr=1.0, max_iter=cfg.optim.lbfgs_iterations,
                    line_search_fn="strong_wolfe",
                )  # fmt: skip
            opt = torch.optim.Adam([
                {"params": [m.n_near, m.n_far, m.log_field_sigma_db, m.log_nugget_db], "lr": cfg.optim.lr},
                {"params": [m.clutter_db, m.band_offset_db], "lr": cfg.optim.lr_db},
            ])  # fmt: skip
            total = cfg.trainer.max_epochs * cfg.optim.batches_per_epoch
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda step: cosine_factor(step, total, cfg.optim.min_lr_ratio)
            )
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return GridNetModule()


# -- the job --------------------------------------------------------------------------------


@dataclass
class GridTrainResult:
    """What a pretraining run produced."""

    run_id: str | None
    checkpoint: str
    parameters: dict[str, float]
    start_parameters: dict[str, float]
    val_metrics: dict[str, float]
    start_val_metrics: dict[str, float]
    seconds: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    n_train: int = 0
    n_val: int = 0
    model: GridPosteriorNet | None = None


def tracking_uri(cfg: GridNetConfig) -> str:
    """The MLflow tracking URI this run uses."""
    return resolve_tracking_uri(cfg.tracking.uri)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in d.items():
        flat.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return flat


def save_gridnet(
    model: GridPosteriorNet, maps_config: MapsConfig, metadata: dict[str, Any], path: Path
) -> None:
    """Write the checkpoint (plain data only) atomically."""
    ckpt = {
        "kind": KIND,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "maps_config": maps_config.model_dump(mode="json"),
        "metadata": metadata,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)


def load_gridnet(path: str | Path) -> tuple[GridPosteriorNet, dict[str, Any]]:
    """A pretrained GridPosteriorNet (no map) and its metadata, read with ``weights_only=True``."""
    ckpt = read_checkpoint(path, "grid-posterior model")
    name = f"model file {str(path)!r}"
    if ckpt.get("kind") != KIND:
        raise HeimdallError(f"{name}: not a grid-posterior model (kind {ckpt.get('kind')!r})")
    return gridnet_from_payload(ckpt, name)


def run_gridnet_training(cfg: GridNetConfig, progress: bool = True) -> GridTrainResult:
    """Pretrain GridPosteriorNet's no-map parameters as ``cfg`` says; log to MLflow; save the checkpoint."""
    import lightning as L
    import mlflow
    from lightning.pytorch.callbacks import EarlyStopping, RichProgressBar

    from heimdall.models.tracking import EpochLogger, check_run_folder
    from heimdall.models.train import git_commit, package_versions

    tracking_uri(cfg)  # refused here, before the data, when MLflow has no store for it
    check_run_folder(cfg.trainer.out_dir)
    torch.set_num_threads(cfg.trainer.cpu_threads)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    d = cfg.data
    train_store = ensure_store(d.train, d.train_sessions, d.train_seed, cfg)
    val_store = ensure_store(d.val, d.val_sessions, d.val_seed, cfg)
    for uri, store in ((d.train, train_store), (d.val, val_store)):
        check_training_worlds(uri, store)
    seconds["data"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    step = cfg.optim.grid_step_km
    train = load_sessions(train_store, d.train_sessions, d.n_slots, step)
    val = load_sessions(val_store, d.val_sessions, d.n_slots, step)
    seconds["measure"] = time.perf_counter() - t1
    if len(train) < (2 if cfg.optim.loss == "joint" else cfg.optim.batch_size) or len(val) == 0:
        raise HeimdallError(f"too few sessions with a known transmitter: {len(train)} train, {len(val)} val")
    L.seed_everything(cfg.seed, verbose=False)
    maps_config = cfg.start.maps_config()
    model = GridPosteriorNet(maps_config)
    project_parameters(model, cfg)
    start_params = learnt_parameters(model)
    start_metrics = evaluate(model, val, cfg.optim.batch_size)
    hashes = {"train": train_store.content_hash(), "val": val_store.content_hash()}
    mlflow.set_tracking_uri(tracking_uri(cfg))
    mlflow.set_experiment(cfg.tracking.experiment)
    run = mlflow.start_run(run_name=cfg.tracking.run_name or cfg.name)
    run_id = run.info.run_id
    try:
        mlflow.log_params({k: str(v)[:500] for k, v in _flatten(cfg.model_dump(mode="json")).items()})
        mlflow.set_tags({
            "kind": KIND, "dataset.train.uri": d.train, "dataset.train.hash": hashes["train"],
            "dataset.val.uri": d.val, "dataset.val.hash": hashes["val"], "git.commit": git_commit(),
            "network": d.network, "world_seeds": str(d.world_seed),
            **{f"version.{k}": v for k, v in package_versions().items()},
        })  # fmt: skip
        mlflow.log_text(cfg.to_yaml(), "config.yaml")
        mlflow.log_metrics({f"start_val_{k}": v for k, v in start_metrics.items()})
        module = _lightning_module(model, cfg, start_metrics)
        # joint (one deterministic full batch per epoch): stop when the training loss has converged
        joint = cfg.optim.loss == "joint"
        monitor, min_delta = ("train_loss", JOINT_CONVERGED_NATS) if joint else ("val_loss", 0.0)
        callbacks: list[Any] = [
            EarlyStopping(monitor=monitor, mode="min", patience=cfg.trainer.patience, min_delta=min_delta),
            EpochLogger(run_id),
        ]
        if progress:
            callbacks.append(RichProgressBar(leave=True))
        out_dir = Path(cfg.trainer.out_dir) / run_id
        trainer = L.Trainer(
            max_epochs=cfg.trainer.max_epochs, accelerator="cpu", devices=1, logger=False,
            max_time=timedelta(minutes=cfg.trainer.max_minutes) if cfg.trainer.max_minutes else None,
            callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=progress,
            enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(out_dir),
        )  # fmt: skip
        t2 = time.perf_counter()
        val_batches = size_ordered_batches(val, cfg.optim.batch_size)
        trainer.fit(module, _train_loader(train, cfg), _loader(val, val_batches))
        seconds["train"] = time.perf_counter() - t2
        model.load_state_dict(module.best_state)
        val_metrics = module.best_metrics
        params = learnt_parameters(model)
        seconds["total"] = time.perf_counter() - t0
        metadata = {
            "kind": KIND, "n_slots": d.n_slots, "config_name": cfg.name, "mlflow_run_id": run_id,
            "training_network": d.network, "world": d.world or "reference-world",
            "world_seeds": str(d.world_seed),
            "duration_s": d.duration_s, "sessions_per_world": d.sessions_per_world,
            "dataset_uri": d.train, "dataset_hash": hashes["train"], "n_train_sessions": len(train),
            "val_dataset_uri": d.val, "val_dataset_hash": hashes["val"], "n_val_sessions": len(val),
            "train_grid_step_km": step, "start_parameters": start_params, "parameters": params,
            "start_val_metrics": start_metrics, "val_metrics": val_metrics, "epochs": len(module.history),
            "seconds": seconds, "git_commit": git_commit(),
        }  # fmt: skip
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "gridnet.pt"
        save_gridnet(model, maps_config, metadata, path)
        mlflow.log_metrics({f"final_val_{k}": v for k, v in val_metrics.items()})
        mlflow.log_metrics({f"learnt_{k}": v for k, v in params.items()})
        mlflow.log_metrics({f"seconds_{k}": v for k, v in seconds.items()})
        mlflow.log_artifact(str(path), "model")
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run()
    return GridTrainResult(run_id, str(path), params, start_params, val_metrics, start_metrics, seconds,
                           list(module.history), len(train), len(val), model)  # fmt: skip
