"""Training runner: config -> data, model, Lightning trainer, MLflow run, calibrated best checkpoint.

``run_training`` is what ``heimdall train`` calls. MLflow tracking URI: the config's
``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlruns.db`` in the
working directory (artifacts in local folders). Only global rank 0 talks to MLflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError
from heimdall.models.config import TRAIN_SEED_STRIDE, TrainConfig
from heimdall.models.data import (
    SessionDataModule,
    StoredBatches,
    WorldSpec,
    batch_tensors,
    check_compatible,
    iq_to_float,
    keep_enough_online,
    load_world_spec,
)
from heimdall.models.metrics import gaussian_metrics, nll_temperature
from heimdall.models.net import LocalizationNet, NetConfig, Normalisation
from heimdall.models.predict import CKPT_KEY, load_model, model_state, read_checkpoint, save_model
from heimdall.network import Network
from heimdall.sim.seeds import Stream
from heimdall.sim.world import reference_world_text
from heimdall.tracking_store import resolve_tracking_uri

_PACKAGES = ("heimdall", "torch", "lightning", "mlflow", "numpy", "onnx", "onnxruntime", "zarr")


@dataclass
class TrainResult:
    """What a training run produced."""

    run_id: str | None
    best_checkpoint: str
    metrics: dict[str, float]
    raw_metrics: dict[str, float]
    temperature: float
    out_dir: str
    n_parameters: int
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    sessions_seen: int = 0  # distinct sessions drawn (steps x batch x ranks / echo)


def tracking_uri(cfg: TrainConfig) -> str:
    """The MLflow tracking URI this run uses."""
    return resolve_tracking_uri(cfg.tracking.uri)


def net_config(cfg: TrainConfig, spec: WorldSpec) -> NetConfig:
    """Architecture with the world's sample rate and capture length."""
    world = spec.scenarios(cfg.data.batch_size).world(0, Network.model_validate(spec.network))
    return NetConfig(n_samples=world.n_samples, sample_rate_hz=world.sample_rate_hz, **cfg.model.model_dump())


def normalisation_batches(cfg: TrainConfig, spec: WorldSpec, n_samples: int) -> list[dict[str, torch.Tensor]]:
    """Training-distribution sessions for the normalisation constants (a seed never used for training)."""
    n = cfg.data.norm_sessions
    frame = Network.model_validate(spec.network).frame
    if cfg.data.train is not None:
        ds = StoredBatches(cfg.data.train, frame, 64, n_samples, limit=n)
        return [ds[g] for g in range(ds.n_batches)]
    scenarios = spec.scenarios(cfg.data.batch_size)
    seed = cfg.train_seed_base + TRAIN_SEED_STRIDE - 1
    batch, _ = keep_enough_online(scenarios.simulate(n, seed, stream=Stream.TRAIN))
    return [
        batch_tensors(batch.select(slice(s, s + 64)), frame, n_samples)
        for s in range(0, batch.n_sessions, 64)
    ]


def estimate_normalisation(model: LocalizationNet, batches: list[dict[str, torch.Tensor]]) -> Normalisation:
    """Means and spreads of features, positions, heights and frequencies over online receivers."""
    specs, scalars, pos, freqs = [], [], [], []
    with torch.no_grad():
        for b in batches:
            mask = b["rx_mask"]
            iq = iq_to_float(b["iq"])[mask]
            s, c = model.features(iq)
            specs.append(s.flatten())
            scalars.append(c)
            pos.append(b["rx_pos"][mask])
            freqs.append(b["center_freq_hz"])
    spec = torch.cat(specs).double()
    sc = torch.cat(scalars).double()
    p = torch.cat(pos).double()
    f = torch.log10(torch.cat(freqs).double())
    centre = p[:, :2].mean(dim=0)
    log_h = torch.log10(torch.clamp(p[:, 2], min=1.0))
    return Normalisation(
        spec_mean=float(spec.mean()),
        spec_std=max(float(spec.std()), 1e-3),
        scalar_mean=[float(v) for v in sc.mean(dim=0)],
        scalar_std=[max(float(v), 1e-3) for v in sc.std(dim=0)],
        pos_center_km=[float(v) for v in centre],
        pos_scale_km=max(float(torch.sqrt(((p[:, :2] - centre) ** 2).sum(dim=1).mean())), 1.0),
        log_height_mean=float(log_h.mean()),
        log_height_std=max(float(log_h.std()), 0.1),
        log_freq_mean=float(f.mean()),
        log_freq_std=max(float(f.std()), 0.01),
    )


def _hash_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def dataset_identity(cfg: TrainConfig, spec: WorldSpec) -> tuple[str, str]:
    """(URI, content hash) of the training data; on-the-fly data is identified by world and seeds."""
    if cfg.data.train is not None:
        store = SessionStore.open(cfg.data.train)
        check_compatible(cfg.data.train, store, spec)
        return cfg.data.train, store.content_hash()
    uri = f"sim://{cfg.data.network}?world_seed={spec.world_seed}&seed_base={cfg.train_seed_base}"
    return uri, _hash_json({"network": spec.network, "world": spec.world, "world_seed": spec.world_seed,
                            "seed_base": cfg.train_seed_base})  # fmt: skip


def build_model(
    cfg: TrainConfig,
    spec: WorldSpec,
    dataset_hash: str,
    dataset_uri: str | None = None,
    val_hash: str | None = None,
) -> LocalizationNet:
    """A fresh model with data-derived normalisation and provenance metadata.

    The metadata names the training set (``dataset_uri``, ``dataset_hash``) and the
    validation set (``val_dataset_uri``, ``val_dataset_hash``: checkpoint selection and
    temperature calibration), so an export can refuse a "test" report on either.
    """
    net = Network.model_validate(spec.network)
    ncfg = net_config(cfg, spec)
    metadata = {
        "ref_lat": net.reference.lat, "ref_lon": net.reference.lon,
        "sample_rate_hz": ncfg.sample_rate_hz, "n_samples": ncfg.n_samples,
        "network": spec.network, "network_name": net.name, "world": spec.world,
        "world_seed": spec.world_seed, "dataset_hash": dataset_hash, "config_name": cfg.name,
        "dataset_uri": dataset_uri, "val_dataset_uri": cfg.data.val, "val_dataset_hash": val_hash,
        "train_seed_base": None if cfg.data.train is not None else cfg.train_seed_base,
        "experiment": cfg.tracking.experiment, "network_family": spec.network_family,
    }  # fmt: skip
    torch.manual_seed(cfg.seed)
    model = LocalizationNet(ncfg, Normalisation(), metadata)
    model.set_normalisation(estimate_normalisation(model, normalisation_batches(cfg, spec, ncfg.n_samples)))
    return model


def predict_stored(
    model: LocalizationNet, uri: str, frame: Any, limit: int | None = None, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """Predictions on a stored set (sessions with >= 3 online receivers): mean, cov, truth (km), rx_pos."""
    ds = StoredBatches(uri, frame, batch_size, model.config.n_samples, limit=limit)
    out: dict[str, list[np.ndarray]] = {
        "mean_km": [],
        "cov_km2": [],
        "truth_km": [],
        "rx_pos": [],
        "rx_mask": [],
    }
    model.eval()
    with torch.no_grad():
        for g in range(ds.n_batches):
            b = ds[g]
            mean, cov = model(iq_to_float(b["iq"]), b["rx_pos"], b["rx_mask"], b["center_freq_hz"])
            for key, value in (("mean_km", mean), ("cov_km2", cov), ("truth_km", b["truth_km"]),
                               ("rx_pos", b["rx_pos"]), ("rx_mask", b["rx_mask"])):  # fmt: skip
                out[key].append(value.cpu().numpy())
    width = max(a.shape[1] for a in out["rx_mask"])  # family sets: shards padded to different receiver counts
    for key in ("rx_pos", "rx_mask"):
        out[key] = [np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2)) for a in out[key]]
    return {k: np.concatenate(v) for k, v in out.items()}


def calibrate_checkpoint(path: str, val_uri: str, limit: int | None) -> tuple[float, dict, dict, dict]:
    """Fit the NLL-optimal covariance temperature on the validation set and store it in the checkpoint.

    Returns (τ, metrics before, metrics after, predictions after).
    """
    model = load_model(path)
    frame = Network.model_validate(model.metadata["network"]).frame
    pred = predict_stored(model, val_uri, frame, limit)
    raw = gaussian_metrics(pred["mean_km"], pred["cov_km2"], pred["truth_km"])
    tau = nll_temperature(pred["mean_km"], pred["cov_km2"], pred["truth_km"])
    model.temperature.fill_(float(model.temperature) * tau)
    pred["cov_km2"] = pred["cov_km2"] * tau**2
    after = gaussian_metrics(pred["mean_km"], pred["cov_km2"], pred["truth_km"])
    ckpt = read_checkpoint(path, "checkpoint")
    ckpt[CKPT_KEY] = model_state(model)
    if "state_dict" in ckpt and "model.temperature" in ckpt["state_dict"]:
        ckpt["state_dict"]["model.temperature"] = model.temperature.clone()
    tmp = path + ".tmp"
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return tau, raw, after, pred


def git_commit() -> str:
    """Commit of the working directory's repository, or "unknown"."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    """Versions of the packages a run depends on."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _is_global_zero() -> bool:
    return int(os.environ.get("NODE_RANK", "0")) == 0 and int(os.environ.get("LOCAL_RANK", "0")) == 0


def _precision(cfg: TrainConfig) -> str:
    if cfg.trainer.precision != "auto":
        return cfg.trainer.precision
    gpu = cfg.trainer.accelerator in ("gpu", "cuda") or (
        cfg.trainer.accelerator == "auto" and torch.cuda.is_available()
    )
    return "bf16-mixed" if gpu else "32-true"


def time_limit(max_minutes: float | None, resume: str | None) -> timedelta | None:
    """Lightning ``max_time`` so that ``max_minutes`` caps this invocation.

    Lightning's timer counts training time across resumes; the time already spent in the
    resumed checkpoint is added so a resumed run gets its own ``max_minutes``.
    """
    if not max_minutes:
        return None
    spent_s = 0.0
    if resume is not None:
        ckpt = read_checkpoint(resume, "--resume checkpoint")
        timer = ckpt.get("callbacks", {}).get("Timer", {})
        spent_s = float(sum(timer.get("time_elapsed", {}).values()))
    return timedelta(minutes=max_minutes, seconds=spent_s)


def cpu_threads(cfg: TrainConfig) -> int:
    """Torch intra-op threads: config, else ``OMP_NUM_THREADS``, else a share of the cores.

    The share is cores / devices minus this process's data workers, at least 1.

    Oversubscribed cores make torch's worker threads spin: on a busy 2-core machine a step
    with 2 threads next to a simulating worker is many times slower than with 1.
    """
    if cfg.trainer.cpu_threads is not None:
        return cfg.trainer.cpu_threads
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    per_process = (os.cpu_count() or 1) // max(1, cfg.trainer.devices)
    return max(1, per_process - cfg.data.num_workers)


def run_training(cfg: TrainConfig, resume: str | None = None, progress: bool = True) -> TrainResult:
    """Train a model as ``cfg`` says; log it to MLflow; return the calibrated best checkpoint.

    Parameters
    ----------
    cfg
        Resolved configuration.
    resume
        A Lightning checkpoint (e.g. ``last.ckpt``) to continue from (same step, optimizer, schedule).
    progress
        Show a rich progress bar.

    """
    import time

    import lightning as L
    import mlflow
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar

    from heimdall.models.module import LocalizationModule
    from heimdall.models.tracking import EpochLogger, check_run_folder, log_final

    tracking_uri(cfg)  # refused here, before any work, when MLflow has no store for it
    if resume is not None and not Path(resume).is_file():
        raise HeimdallError(f"--resume {resume!r}: no such checkpoint")
    if resume is not None:  # refused here, before any run starts, if it is more than plain data
        read_checkpoint(resume, "--resume checkpoint")
    check_run_folder(cfg.trainer.out_dir)
    spec = load_world_spec(cfg)
    val_store = SessionStore.open(cfg.data.val)
    check_compatible(cfg.data.val, val_store, spec)
    data_uri, data_hash = dataset_identity(cfg, spec)
    torch.set_num_threads(cpu_threads(cfg))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    val_hash = val_store.content_hash()
    model = build_model(cfg, spec, data_hash, data_uri, val_hash)
    module = LocalizationModule(model, cfg)
    dm = SessionDataModule(cfg, spec, model.config.n_samples)
    zero = _is_global_zero()
    run_id = None
    if zero:
        mlflow.set_tracking_uri(tracking_uri(cfg))
        mlflow.set_experiment(cfg.tracking.experiment)
        run = mlflow.start_run(run_name=cfg.tracking.run_name or cfg.name)
        run_id = run.info.run_id
        mlflow.log_params({k: str(v)[:500] for k, v in _flatten(cfg.model_dump(mode="json")).items()})
        mlflow.set_tags({
            "dataset.train.uri": data_uri, "dataset.train.hash": data_hash,
            "dataset.val.uri": cfg.data.val, "dataset.val.hash": val_hash,
            "git.commit": git_commit(), "network": spec.network["name"], "n_parameters": model.n_parameters(),
            **{f"version.{k}": v for k, v in package_versions().items()},
        })  # fmt: skip
        if resume is not None:
            mlflow.set_tag("resumed_from", str(resume))
        mlflow.log_text(cfg.to_yaml(), "config.yaml")
        mlflow.log_text(Network.model_validate(spec.network).to_yaml(), "network.yaml")
        mlflow.log_text(json.dumps(spec.world, indent=1), "world.json")
        world_text = Path(cfg.data.world).read_text() if cfg.data.world else reference_world_text()
        mlflow.log_text(world_text, Path(cfg.data.world).name if cfg.data.world else "reference-world.yaml")
        mlflow.log_dict(package_versions(), "versions.json")
    out_dir = Path(cfg.trainer.out_dir) / (run_id or "run")
    ckpt_cb = ModelCheckpoint(dirpath=out_dir, filename="best", monitor="val_nll", mode="min", save_top_k=1,
                              save_last=True)  # fmt: skip
    callbacks: list[Any] = [
        ckpt_cb,
        EarlyStopping(monitor="val_nll", patience=cfg.trainer.patience, mode="min"),
    ]
    if zero:
        callbacks.append(EpochLogger(run_id))
    if progress:
        callbacks.append(RichProgressBar(leave=True))
    trainer = L.Trainer(
        max_epochs=cfg.trainer.max_epochs,
        max_time=time_limit(cfg.trainer.max_minutes, resume),
        accelerator=cfg.trainer.accelerator, devices=cfg.trainer.devices, strategy=cfg.trainer.strategy,
        precision=_precision(cfg), gradient_clip_val=cfg.optim.grad_clip, callbacks=callbacks,
        logger=False, enable_progress_bar=progress, enable_model_summary=False,
        use_distributed_sampler=False, num_sanity_val_steps=0, log_every_n_steps=10,
        default_root_dir=str(out_dir),
    )  # fmt: skip
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=resume, weights_only=True)
    except BaseException:
        if zero:
            mlflow.end_run(status="FAILED")
        raise
    train_seconds = time.perf_counter() - start
    best = ckpt_cb.best_model_path or ckpt_cb.last_model_path
    if best and Path(best).resolve().parent != out_dir.resolve():  # a resumed run's old best: not ours
        best = ckpt_cb.last_model_path
    if not best or not Path(best).is_file():
        if zero:
            mlflow.end_run(status="FAILED")
        raise HeimdallError(
            "training stopped before the first epoch ended (time limit?): no checkpoint written"
        )
    if not trainer.is_global_zero:
        return TrainResult(None, best, {}, {}, 1.0, str(out_dir), model.n_parameters())
    tau, raw, metrics = 1.0, {}, {}
    if cfg.trainer.calibrate:
        tau, raw, metrics, pred = calibrate_checkpoint(best, cfg.data.val, cfg.data.val_sessions)
    else:
        best_model = load_model(best)
        pred = predict_stored(best_model, cfg.data.val, Network.model_validate(spec.network).frame,
                              cfg.data.val_sessions)  # fmt: skip
        raw = metrics = gaussian_metrics(pred["mean_km"], pred["cov_km2"], pred["truth_km"])
    final = load_model(best)
    save_model(final, out_dir / "model.pt")
    sessions_seen = trainer.global_step * cfg.data.batch_size * trainer.world_size // cfg.data.echo
    result = TrainResult(run_id, best, metrics, raw, tau, str(out_dir), model.n_parameters(),
                         list(module.history), train_seconds, sessions_seen)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        log_final(result, pred, Network.model_validate(spec.network), Path(tmp))
    mlflow.end_run()
    return result
