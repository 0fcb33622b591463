"""Model inputs from sessions, model loading, and the torch predictor (contracts §3).

A *predictor* is any object with ``frame`` (:class:`LocalFrame`), ``metadata`` (dict)
and ``predict(batch) -> (mean_km (B, 2), cov_km2 (B, 2, 2))`` in that frame; the ONNX
predictor of :mod:`heimdall.export` follows the same protocol.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heimdall.data.session import SessionBatch
from heimdall.errors import HeimdallError
from heimdall.models.ellipse import ellipse_params
from heimdall.models.net import LocalizationNet, NetConfig, Normalisation
from heimdall.network.geodesy import LocalFrame

#: Key of the model's own state inside a Lightning checkpoint.
CKPT_KEY = "heimdall_model"


def session_inputs(batch: SessionBatch, frame: LocalFrame, n_samples: int) -> dict[str, np.ndarray]:
    """Network inputs of a session batch in ``frame``.

    Returns ``iq`` float32 (B, R, n_samples, 2) in full-scale units (int16 / 32768),
    ``rx_pos`` float32 (B, R, 3) (east km, north km, antenna height m), ``rx_mask`` bool
    (B, R) (online receivers) and ``center_freq_hz`` float32 (B,). Offline slots are zero.
    Captures shorter than ``n_samples`` raise HeimdallError; longer ones are cut.
    """
    if batch.n_samples < n_samples:
        raise HeimdallError(f"captures have {batch.n_samples} samples, the model needs {n_samples}")
    mask = batch.online
    iq = batch.iq[:, :, :n_samples, :].astype(np.float32) / np.float32(32768.0)
    iq[~mask] = 0.0
    east, north = frame.to_local_km(np.nan_to_num(batch.rx_lat_deg), np.nan_to_num(batch.rx_lon_deg))
    pos = np.stack([east, north, np.nan_to_num(batch.rx_height_m)], axis=-1).astype(np.float32)
    pos[~mask] = 0.0
    return {
        "iq": iq,
        "rx_pos": pos,
        "rx_mask": mask.astype(bool),
        "center_freq_hz": batch.center_freq_hz.astype(np.float32),
    }


def to_latlon_ellipses(frame: LocalFrame, mean_km: np.ndarray, cov_km2: np.ndarray) -> list[dict[str, float]]:
    """Predictions in ``frame`` as latitude / longitude (degrees) and 1σ ellipses (docs/ARCHITECTURE.md §3b).

    Each entry: ``lat``, ``lon``, ``semi_major_m``, ``semi_minor_m``, ``orientation_deg``
    (azimuth of the major axis, clockwise from north, in [0, 180)).
    """
    lat, lon = frame.to_latlon(np.asarray(mean_km)[:, 0], np.asarray(mean_km)[:, 1])
    major, minor, azimuth = ellipse_params(cov_km2)
    return [
        {"lat": float(a), "lon": float(o), "semi_major_m": float(M), "semi_minor_m": float(m),
         "orientation_deg": float(z)}
        for a, o, M, m, z in zip(lat, lon, major, minor, azimuth, strict=True)
    ]  # fmt: skip


def model_state(model: LocalizationNet) -> dict[str, Any]:
    """Everything needed to rebuild ``model``: config, normalisation, metadata, weights."""
    return {
        "config": asdict(model.config),
        "norm": asdict(model.norm_values),
        "metadata": model.metadata,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def model_from_state(state: dict[str, Any]) -> LocalizationNet:
    """Inverse of :func:`model_state`."""
    model = LocalizationNet(NetConfig(**state["config"]), Normalisation(**state["norm"]), state["metadata"])
    model.load_state_dict(state["state_dict"])
    return model.eval()


def save_model(model: LocalizationNet, path: str | Path) -> None:
    """Save the model state to ``path`` atomically (write a temp file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(model_state(model), tmp)
    tmp.replace(path)


def _refusal_reason(exc: pickle.UnpicklingError) -> str:
    """The short reason torch's restricted unpickler gives (e.g. ``Unsupported global: GLOBAL io.open``)."""
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?: was not an allowed global|\n|$)", str(exc))
    return match.group(1).strip() if match else type(exc).__name__


def read_checkpoint(path: str | Path, what: str = "model file") -> dict[str, Any]:
    """Read a checkpoint or model file with ``torch.load(weights_only=True)``; nothing in it can run code.

    The restricted unpickler of ``torch.load(weights_only=True)`` rebuilds tensors, dicts,
    lists, tuples, strings, numbers and a short allowlist of torch types only; a pickle that
    names any other callable (``os.system``, ``builtins.open``, a project class) is refused
    before anything is called. Lightning checkpoints and :func:`save_model` files hold only
    such plain data (see the PyTorch ``torch.load`` documentation, "weights_only").

    Parameters
    ----------
    path
        Local file.
    what
        How messages name the file (e.g. ``--resume checkpoint``).

    Returns
    -------
    dict
        The checkpoint's top-level mapping.

    Raises
    ------
    HeimdallError
        Missing, unreadable, not a mapping, or refused by the restricted unpickler (the
        message names the file).

    """
    name = str(path)
    try:
        ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise HeimdallError(f"{what} {name!r} does not exist") from None
    except pickle.UnpicklingError as exc:
        raise HeimdallError(
            f"{what} {name!r}: refused: it holds Python objects beyond tensors and plain data "
            f"({_refusal_reason(exc)}); model files are loaded with torch.load(weights_only=True) and "
            "never run code"
        ) from None
    except Exception as exc:
        raise HeimdallError(f"{what} {name!r}: cannot read ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict):
        raise HeimdallError(f"{what} {name!r}: not a checkpoint (top level is {type(ckpt).__name__})")
    return ckpt


def load_model(path: str | Path) -> LocalizationNet:
    """Load a model from a Lightning checkpoint (.ckpt) or a file written by :func:`save_model`.

    Read by :func:`read_checkpoint` (``torch.load(weights_only=True)``): a file carrying a
    pickled callable is refused with a HeimdallError naming it.
    """
    ckpt = read_checkpoint(path)
    if CKPT_KEY in ckpt:
        ckpt = ckpt[CKPT_KEY]
    if not isinstance(ckpt, dict) or not {"config", "norm", "state_dict"} <= set(ckpt):
        raise HeimdallError(f"model file {str(path)!r}: not a Heimdall model or checkpoint")
    try:
        return model_from_state(ckpt)
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise HeimdallError(f"model file {str(path)!r}: inconsistent model state ({exc})") from None


class Predictor:
    """Torch predictor: sessions -> mean (B, 2) km and covariance (B, 2, 2) km² in ``frame``."""

    def __init__(self, model: LocalizationNet, batch_size: int = 64, device: str = "cpu") -> None:
        self.model = model.eval().to(device)
        self.device = device
        self.batch_size = batch_size
        self.metadata: dict[str, Any] = model.metadata
        self.frame = LocalFrame(float(self.metadata["ref_lat"]), float(self.metadata["ref_lon"]))
        self.n_samples = int(self.metadata["n_samples"])
        self.sample_rate_hz = float(self.metadata["sample_rate_hz"])

    @classmethod
    def from_checkpoint(cls, path: str | Path, batch_size: int = 64, device: str = "cpu") -> Predictor:
        """Load a model file (see :func:`load_model`)."""
        return cls(load_model(path), batch_size, device)

    def predict(self, batch: SessionBatch) -> tuple[np.ndarray, np.ndarray]:
        """Mean (B, 2) east/north km and covariance (B, 2, 2) km², float64."""
        if batch.n_sessions and not np.allclose(batch.sample_rate_hz, self.sample_rate_hz):
            raise HeimdallError(
                f"sessions sampled at {sorted(set(batch.sample_rate_hz.tolist()))} Hz, "
                f"the model expects {self.sample_rate_hz} Hz (resample first)"
            )
        means, covs = [], []
        for start in range(0, batch.n_sessions, self.batch_size):
            part = batch.select(slice(start, start + self.batch_size))
            inputs = session_inputs(part, self.frame, self.n_samples)
            with torch.no_grad():
                mean, cov = self.model(*(torch.from_numpy(inputs[k]).to(self.device)
                                         for k in ("iq", "rx_pos", "rx_mask", "center_freq_hz")))  # fmt: skip
            means.append(mean.double().cpu().numpy())
            covs.append(cov.double().cpu().numpy())
        if not means:
            return np.zeros((0, 2)), np.zeros((0, 2, 2))
        return np.concatenate(means), np.concatenate(covs)
