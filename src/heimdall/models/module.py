"""LightningModule: LocalizationNet trained by the full-covariance Gaussian NLL."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import numpy as np
import torch

from heimdall.models.config import TrainConfig
from heimdall.models.data import iq_to_float
from heimdall.models.loss import beta_nll_loss, gaussian_nll
from heimdall.models.metrics import gaussian_metrics
from heimdall.models.net import LocalizationNet
from heimdall.models.predict import CKPT_KEY, model_state

_INPUTS = ("iq", "rx_pos", "rx_mask", "center_freq_hz")


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Learning-rate factor: linear warm-up to 1 over ``warmup_steps``, then cosine to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class LocalizationModule(L.LightningModule):
    """Training / validation of :class:`LocalizationNet`; per-epoch metrics in ``history``."""

    def __init__(self, model: LocalizationNet, cfg: TrainConfig) -> None:
        super().__init__()
        self.model, self.cfg = model, cfg
        self.save_hyperparameters({"config": cfg.model_dump(mode="json")})
        self.history: list[dict[str, float]] = []
        self._val: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._train_nll: list[float] = []
        self._dropped = 0
        self._seeds = (2**62, -1)

    def _forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        iq = iq_to_float(batch["iq"])
        return self.model.forward_chol(iq, batch["rx_pos"], batch["rx_mask"], batch["center_freq_hz"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One step of β-NLL on a batch."""
        mean, chol = self._forward(batch)
        loss = beta_nll_loss(mean, chol, batch["truth_km"], self.cfg.optim.beta_nll)
        nll = gaussian_nll(mean.detach(), chol.detach(), batch["truth_km"]).mean()
        self._train_nll.append(float(nll))
        self._dropped += int(batch["n_dropped"])
        if batch["session_seed"].numel():
            self._seeds = (min(self._seeds[0], int(batch["session_seed"].min())),
                           max(self._seeds[1], int(batch["session_seed"].max())))  # fmt: skip
        self.log("train_nll_step", nll, prog_bar=True, batch_size=int(mean.shape[0]))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Collect predictions of a validation batch."""
        mean, chol = self._forward(batch)
        cov = chol @ chol.transpose(-1, -2)
        self._val.append((mean.double().cpu().numpy(), cov.double().cpu().numpy(),
                          batch["truth_km"].double().cpu().numpy()))  # fmt: skip

    def on_train_epoch_start(self) -> None:
        """Reset the epoch's training tallies."""
        self._train_nll, self._dropped, self._seeds = [], 0, (2**62, -1)

    def on_validation_epoch_end(self) -> None:
        """Validation metrics over the whole set (every rank holds all of it)."""
        if not self._val:
            return
        mean, cov, truth = (np.concatenate(p) for p in zip(*self._val, strict=True))
        self._val = []
        metrics = {f"val_{k}": v for k, v in gaussian_metrics(mean, cov, truth).items()}
        if not self.trainer.sanity_checking:
            self.log_dict({k: float(v) for k, v in metrics.items()}, sync_dist=False, rank_zero_only=False)
            row = {"epoch": float(self.current_epoch), "step": float(self.global_step), **metrics}
            if self._train_nll:
                row["train_nll"] = float(np.mean(self._train_nll))
                row["train_dropped"] = float(self._dropped)
                row["train_seed_min"], row["train_seed_max"] = float(self._seeds[0]), float(self._seeds[1])
            self.history.append(row)
        else:
            self.log("val_nll", float(metrics["val_nll"]))

    def configure_optimizers(self) -> Any:
        """AdamW with warm-up + cosine (per step)."""
        opt = self.cfg.optim
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
        total = self.cfg.trainer.max_epochs * self.cfg.data.batches_per_epoch * self.cfg.data.echo
        total = max(1, total // max(1, self.trainer.world_size))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: warmup_cosine(s, opt.warmup_steps, total, opt.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the model's own state (config, normalisation, metadata) in the checkpoint.

        Everything added is tensors and plain data (dicts, lists, str, float), so the file
        loads with ``torch.load(weights_only=True)`` (:func:`heimdall.models.predict.read_checkpoint`).
        """
        checkpoint[CKPT_KEY] = model_state(self.model)
        checkpoint["heimdall_history"] = [{str(k): float(v) for k, v in row.items()} for row in self.history]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the learning curves on resume."""
        self.history = list(checkpoint.get("heimdall_history", []))
