"""Posterior answers of a GridPosteriorNet, run by PyTorch or onnxruntime (coarse-to-fine grid).

:class:`GridPosteriorPredictor` takes a *runner* — any function of the graph's inputs
(:data:`heimdall.models.gridnet_inputs.INPUT_NAMES`, numpy arrays) returning the
unnormalised log posterior (B, G) — so the PyTorch module and the exported ONNX graph
answer through the same code. Per session:

1. the coarse posterior on a ``coarse_step_km`` grid over the search area (the map's
   area, or the receivers' bounding box + 30 km without a map);
2. the cells holding its mass refined ``refine_factor`` × ``refine_factor``
   (:func:`heimdall.posterior.refine.refine_posterior`, the oracle's coarse-to-fine rule);
3. summaries: mean and covariance (the ellipse), the mode, the truth's HPD level, log
   score and 90 % area (:class:`heimdall.posterior.scores.PosteriorScores`); and, for one
   session (:meth:`GridPosteriorPredictor.locate_one`), the
   :class:`heimdall.posterior.map.PosteriorMap` (modes, HPD regions as GeoJSON).

It implements the predictor protocol (``frame``, ``metadata``, ``predict(batch)``), and
``posterior(batch, frame)`` for estimators that are scored as posteriors. Positions move
between local frames through latitude / longitude, covariances with the frame change's
Jacobian (:func:`move_gaussian`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from heimdall.data.session import SessionBatch
from heimdall.errors import HeimdallError
from heimdall.models.gridnet_inputs import GridInputs, inputs_for_network, inputs_for_slots, truth_km
from heimdall.network import LocalFrame, Network
from heimdall.posterior.grid import SearchGrid, search_grid
from heimdall.posterior.map import PosteriorMap
from heimdall.posterior.measure import DETECTION_SNR_DB
from heimdall.posterior.refine import REFINE_MASS, REFINE_MAX_CELLS, RefinedPosterior, refine_posterior
from heimdall.posterior.scores import PosteriorScores

#: Runs the graph: inputs by name (numpy) -> unnormalised log posterior (B, G).
GraphRunner = Callable[[dict[str, NDArray]], NDArray[np.float32]]
#: Coarse grid step (km) and refinement: 4 km cells, the mass refined to 1 km.
COARSE_STEP_KM = 4.0
REFINE_FACTOR = 4
#: Capture rate (Hz) and length (samples) imported recordings are brought to when a model does not
#: state its training captures' (the reference 12 kHz channel, 0.1 s: enough to measure power).
DEFAULT_SAMPLE_RATE_HZ = 12_000.0
DEFAULT_N_SAMPLES = 1_200
#: Model kind recorded in the metadata.
KIND = "grid-posterior"
#: Receiver slots of a model without a map (the network families' maximum).
N_SLOTS = 12


@dataclass(frozen=True)
class SessionPosteriors:
    """B sessions' posteriors in a common frame.

    Attributes
    ----------
    mean_km, cov_km2
        Posterior mean (B, 2) km and covariance (B, 2, 2) km².
    map_km
        Posterior mode (B, 2) km (densest sub-cell).
    scores
        HPD level of the truth, log score and 90 % area; NaN where the truth is unknown.

    """

    mean_km: NDArray[np.float64]
    cov_km2: NDArray[np.float64]
    map_km: NDArray[np.float64]
    scores: PosteriorScores


class GridPosteriorPredictor:
    """Posterior answers of a grid-posterior model (see the module docstring).

    Parameters
    ----------
    runner
        The graph (PyTorch or onnxruntime).
    metadata
        The model's metadata: ``kind``, ``n_slots``, and ``network`` when it carries a radio map.
    source, version
        Where the model came from, and a version label, for answers and messages.

    """

    def __init__(
        self, runner: GraphRunner, metadata: dict[str, Any], source: str = "", version: str = ""
    ) -> None:
        if metadata.get("kind") != KIND:
            raise HeimdallError(f"{source}: not a grid-posterior model (kind {metadata.get('kind')!r})")
        self.runner = runner
        self.metadata = {**training_provenance(metadata.get("training") or {}), **metadata}
        self.source = source
        self.version = version
        dump = metadata.get("network")
        self.network: Network | None = Network.model_validate(dump) if dump else None
        self.n_slots = int(metadata["n_slots"])  # without a map: up to this many receivers
        rate, length = capture_format(metadata.get("training") or {})
        self.sample_rate_hz = float(metadata.get("sample_rate_hz") or rate)
        self.n_samples = int(metadata.get("n_samples") or length)
        self.metadata.setdefault("sample_rate_hz", self.sample_rate_hz)
        self.metadata.setdefault("n_samples", self.n_samples)
        ref = metadata.get("ref_lat"), metadata.get("ref_lon")
        if self.network is not None:
            self.frame = self.network.frame
        elif None not in ref:
            self.frame = LocalFrame(float(ref[0]), float(ref[1]))
        else:
            self.frame = LocalFrame(0.0, 0.0)
        area = metadata.get("map_area_km")
        self.map_area_km: tuple[float, float, float, float] | None = tuple(area) if area else None  # type: ignore[assignment]
        self.coarse_step_km = float(metadata.get("coarse_step_km", COARSE_STEP_KM))
        self.refine_factor = int(metadata.get("refine_factor", REFINE_FACTOR))
        #: Measured SNR (dB) from which a receiver is heard: its radio map's (the reference rule without).
        self.detection_snr_db = float(metadata.get("detection_snr_db", DETECTION_SNR_DB))

    @property
    def has_map(self) -> bool:
        """Whether the model carries a radio map (fixed receivers) or takes any receivers."""
        return self.network is not None

    def inputs(self, batch: SessionBatch) -> GridInputs:
        """The graph's inputs of a batch (network order with a map, session slots without)."""
        if self.network is not None:
            return inputs_for_network(batch, self.network, self.detection_snr_db)
        if batch.n_receivers > self.n_slots:
            raise HeimdallError(
                f"{batch.n_receivers} receiver slots; this model takes at most {self.n_slots}"
            )
        return inputs_for_slots(batch, batch.n_receivers)

    def _grid(self, inputs: GridInputs, index: int) -> SearchGrid:
        area = self.map_area_km if self.map_area_km is not None else inputs.area_km(index)
        return search_grid(area, self.coarse_step_km)

    def _run(self, inputs: GridInputs, idx: NDArray[np.int64], points: NDArray[np.float64]) -> NDArray:
        feeds = inputs.select(idx).arrays()
        feeds["points_km"] = np.ascontiguousarray(points, dtype=np.float32)
        return np.asarray(self.runner(feeds), dtype=np.float64)

    def refined(self, inputs: GridInputs, index: int) -> RefinedPosterior:
        """One session's coarse-to-fine posterior in its frame."""
        grid = self._grid(inputs, index)
        one = np.array([index])
        lp = self._run(inputs, one, grid.points_km[None])
        if not np.isfinite(lp).any():
            raise HeimdallError("the posterior is empty (no finite density on the search grid)")
        return refine_posterior(
            grid, lp, lambda i, pts: self._run(inputs, one[i], pts),
            self.refine_factor, REFINE_MASS, REFINE_MAX_CELLS,
        )  # fmt: skip

    def locate_one(
        self, batch: SessionBatch, index: int = 0
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], PosteriorMap]:
        """One session's refined posterior mean (2,) km and covariance (2, 2) km², and its map.

        All in the session's frame (the map's network frame, else one at the session's
        receivers; ``PosteriorMap.frame``); the map is the refined posterior on its coarse
        grid (:func:`coarse_map`), so one pair of graph runs gives both.
        """
        inputs = self.inputs(batch.select(np.array([index])))
        post = self.refined(inputs, 0)
        mean, cov = post.moments()
        return mean[0], cov[0], coarse_map(post, inputs.frames[0])

    def posterior(self, batch: SessionBatch, frame: LocalFrame | None = None) -> SessionPosteriors:
        """Posterior summaries of every session, positions in ``frame`` (default :attr:`frame`)."""
        frame = frame or self.frame
        inputs = self.inputs(batch)
        truth = truth_km(batch, inputs)
        b = batch.n_sessions
        mean, cov, mode = np.zeros((b, 2)), np.zeros((b, 2, 2)), np.zeros((b, 2))
        level, score, area = np.full(b, np.nan), np.full(b, np.nan), np.zeros(b)
        for i in range(b):
            post = self.refined(inputs, i)
            m, c = post.moments()
            best, _ = post.best_point_km()
            area[i] = post.hpd_area_km2(0.9)[0]
            if np.all(np.isfinite(truth[i])):
                lp_t = self._run(inputs, np.array([i]), truth[i][None, None])[0]
                level[i] = post.hpd_level(lp_t)[0]
                score[i] = post.log_score(lp_t)[0]
            src = inputs.frames[i]
            mean[i], cov[i] = move_gaussian(m[0], c[0], src, frame)
            mode[i] = move_point(best[0], src, frame)
        return SessionPosteriors(mean, cov, mode, PosteriorScores(level, score, area))

    def adapt(
        self, rmap: Any, map_meta: dict[str, Any] | None = None, map_uri: str | None = None
    ) -> GridPosteriorPredictor:
        """The same model with the fields of a fitted radio map (``heimdall map fit``), run by PyTorch.

        The model's own settings come from its metadata (``model``), so an exported
        graph adapts as well as a checkpoint.
        """
        from heimdall.maps.artifact import map_metadata as artifact_metadata
        from heimdall.models.gridnet import gridnet_from_description

        if rmap.coef is None:  # fewer labels than the fit needs: the model without a map is the answer
            return self
        if "model" not in self.metadata:
            raise HeimdallError(f"{self.source}: its metadata has no 'model' description to adapt from")
        model = gridnet_from_description(self.metadata["model"])
        model.load_map(rmap)
        drop = (
            "network", "network_name", "map_area_km", "radio_map", "ref_lat", "ref_lon", "detection_snr_db",
        )  # fmt: skip
        meta = {k: v for k, v in self.metadata.items() if k not in drop}
        meta["n_slots"] = len(rmap.network.receivers)
        meta |= map_metadata(model, map_meta or artifact_metadata(rmap, [], 1), map_uri)
        return GridPosteriorPredictor(
            torch_runner(model.eval()), meta, f"{self.source} + radio map", self.version
        )

    def predict(self, batch: SessionBatch) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Posterior mean (B, 2) km and covariance (B, 2, 2) km² in :attr:`frame` (the ellipse)."""
        post = self.posterior(batch)
        return post.mean_km, post.cov_km2


def map_metadata(model: Any, map_meta: dict[str, Any], map_uri: str | None) -> dict[str, Any]:
    """The metadata of a model's radio map: network, frame, area and the map's provenance."""
    e0, n0, step, n_e, n_n = model.grid_geometry
    return {
        "network": map_meta["network"],
        "network_name": map_meta["network"].get("name"),
        "ref_lat": map_meta["frame"]["ref_lat_deg"],
        "ref_lon": map_meta["frame"]["ref_lon_deg"],
        "map_area_km": [e0 - step / 2, e0 + (n_e - 0.5) * step, n0 - step / 2, n0 + (n_n - 0.5) * step],
        "detection_snr_db": float((map_meta.get("config") or {}).get("detection_snr_db", DETECTION_SNR_DB)),
        "radio_map": {
            "uri": map_uri,
            "map_version": map_meta.get("map_version"),
            "n_labels": map_meta.get("n_labels"),
            "sources": map_meta.get("sources", []),
            "hyper": map_meta.get("hyper"),
            "created_utc": map_meta.get("created_utc"),
        },
    }


#: Provenance keys of the predictor protocol, and where a grid model's training metadata holds them.
_PROVENANCE_KEYS = {
    "world_seed": "world_seeds",
    "network_family": "training_network",
    "dataset_uri": "dataset_uri",
    "dataset_hash": "dataset_hash",
    "val_dataset_uri": "val_dataset_uri",
    "val_dataset_hash": "val_dataset_hash",
}


#: Measured SNR (dB over the capture bandwidth) from which the adapted model hears a receiver.
#: Down to a true SNR of −5 dB the fixed measurement's band power has a median error within
#: 0.35 dB of the true received power and a standard deviation ≤ 0.25 dB (``bench/measurement.py``),
#: so those captures are measurements, not the censored terms the reference rule (0 dB) makes of them.
MODEL_DETECTION_SNR_DB = -5.0


def map_prior(metadata: dict[str, Any]) -> dict[str, Any]:
    """The radio-map fit's ``prior_*`` settings from a grid model's learnt law and statistics.

    ``map fit --model M`` starts from what the model learnt on the families: the breakpoint
    exponents, clutter loss, σ of the unknown field and per-capture σ (used where labels
    are too few to estimate them). The learnt law's shape is kept (``pathloss_shape:
    prior``): the labels fit each receiver's 2 m and 70 cm intercepts and its field, not
    a new law, which clustered labels would bend far from where they lie; the field's σ
    is corrected for the degree of freedom each session's power takes (``sigma_power_dof``;
    docs/MAPS.md); receivers are heard from :data:`MODEL_DETECTION_SNR_DB`.
    """
    params = (metadata.get("model") or {}).get("parameters")
    if not params:
        raise HeimdallError("the model's metadata has no learnt parameters (not a grid-posterior model)")
    return {
        "prior_exponents": (float(params["n_near"]), float(params["n_far"])),
        "prior_clutter_db": float(params["clutter_db"]),
        "prior_sigma_db": float(np.exp(params["log_field_sigma_db"])),
        "prior_nugget_db": float(np.exp(params["log_nugget_db"])),
        "pathloss_shape": "prior",
        "sigma_power_dof": True,
        "detection_snr_db": MODEL_DETECTION_SNR_DB,
    }


def capture_format(training: dict[str, Any]) -> tuple[float, int]:
    """Rate (Hz) and length (samples) of the captures a model was trained on (defaults when unknown)."""
    rate = float(training.get("sample_rate_hz") or DEFAULT_SAMPLE_RATE_HZ)
    duration = training.get("duration_s")
    return rate, int(
        training.get("n_samples") or (round(rate * float(duration)) if duration else DEFAULT_N_SAMPLES)
    )


def training_provenance(training: dict[str, Any]) -> dict[str, Any]:
    """The provenance keys evaluate and export check (world seeds, family, set hashes) of a training."""
    out = {key: training[src] for key, src in _PROVENANCE_KEYS.items() if training.get(src) is not None}
    if "network_family" in out and not str(out["network_family"]).startswith("family:"):
        out["network_name"] = out.pop("network_family")  # trained on one fixed network
    return out


def move_point(point_km: NDArray[np.float64], src: LocalFrame, dst: LocalFrame) -> NDArray[np.float64]:
    """A point (2,) km from frame ``src`` to frame ``dst`` (through latitude / longitude)."""
    if (src.ref_lat_deg, src.ref_lon_deg) == (dst.ref_lat_deg, dst.ref_lon_deg):
        return np.asarray(point_km, dtype=np.float64)
    lat, lon = src.to_latlon(point_km[:1], point_km[1:])
    e, n = dst.to_local_km(lat, lon)
    return np.array([float(e[0]), float(n[0])])


def move_gaussian(
    mean_km: NDArray[np.float64], cov_km2: NDArray[np.float64], src: LocalFrame, dst: LocalFrame
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean (2,) km and covariance (2, 2) km² from frame ``src`` to ``dst``: Σ' = J Σ Jᵀ.

    J is the Jacobian of the frame change at the mean, by central differences over ±1 km
    (the projections are smooth on that scale; the linearisation of a covariance change).
    """
    if (src.ref_lat_deg, src.ref_lon_deg) == (dst.ref_lat_deg, dst.ref_lon_deg):
        return np.asarray(mean_km, dtype=np.float64), np.asarray(cov_km2, dtype=np.float64)
    steps = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    pts = np.vstack([mean_km[None], mean_km[None] + steps])
    lat, lon = src.to_latlon(pts[:, 0], pts[:, 1])
    moved = np.stack(dst.to_local_km(lat, lon), axis=-1)
    jac = np.column_stack([(moved[1] - moved[2]) / 2.0, (moved[3] - moved[4]) / 2.0])
    return moved[0], jac @ np.asarray(cov_km2, dtype=np.float64) @ jac.T


def coarse_map(post: RefinedPosterior, frame: LocalFrame, index: int = 0) -> PosteriorMap:
    """Session ``index`` of a refined posterior on its coarse grid (refined cells: their sub-cells' mean).

    The log density of a refined cell is log of the mean of its sub-cells' densities,
    so each cell holds the mass the refined posterior gives it.
    """
    grid = post.grid
    lp = np.array(post.coarse_lp[index], dtype=np.float64)
    fine = post.fine_lp[index]
    pts = post.fine_points_km[index]
    ok = np.isfinite(fine)
    col = np.floor((pts[ok, 0] - grid.area_km[0]) / grid.step_east_km).astype(np.int64)
    row = np.floor((pts[ok, 1] - grid.area_km[2]) / grid.step_north_km).astype(np.int64)
    col = np.clip(col, 0, grid.n_east - 1)
    row = np.clip(row, 0, grid.n_north - 1)
    np.logaddexp.at(lp, row * grid.n_east + col, fine[ok] - 2.0 * np.log(post.factor))
    return PosteriorMap.from_log_posterior(grid, lp, frame)


def torch_runner(model: Any) -> GraphRunner:
    """A runner of a :class:`heimdall.models.gridnet.GridPosteriorNet` in PyTorch (no gradients)."""
    import torch

    from heimdall.models.gridnet_inputs import INPUT_NAMES

    def run(feeds: dict[str, NDArray]) -> NDArray[np.float32]:
        with torch.no_grad():
            return model(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in INPUT_NAMES)).numpy()

    return run
