"""Wrong labels (typed-in positions from elsewhere): the chi-square test, and a fit robust to them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from scipy.special import ndtr, ndtri
from tests.maps.conftest import planted_pathloss, smooth_field, synth

from heimdall.maps.artifact import load_map, save_map
from heimdall.maps.config import MapsConfig
from heimdall.maps.fit import RadioMap, fit_radio_map, outlier_p_values
from heimdall.maps.observations import CLIPPED, HEARD, SILENT, UNUSED, LabelledObservations
from heimdall.network import Network

#: Labelled area of the synthetic sets (east, north), km.
AREA = ((-100.0, 100.0), (-90.0, 85.0))
#: Prediction 10 dB (power − P) at every receiver, unit variance; heard powers 10 and 14 dB.
PRED, Y = 10.0, [10.0, 14.0]
#: With P re-estimated (P̂ = 2 dB): μ = 12 dB; a silent receiver whose silence had probability
#: 2Φ(−3) (the χ²₁ tail of 9) and a clipped one whose clipping had 2Φ(−1) (the tail of 1).
SILENT_AT = 12.0 + ndtri(2.0 * ndtr(-3.0))
CLIPPED_AT = 12.0 - ndtri(2.0 * ndtr(-1.0))


@pytest.mark.parametrize(
    ("extra", "known_power", "expected"),
    [
        # heard only: residuals ∓2 around P̂ = 2, T = 8, χ²₁
        ([], None, 2.0 * ndtr(-np.sqrt(8.0))),
        # P known (0 dB): residuals 0 and 4, T = 16, χ²₂: e^(−T/2)
        ([], 0.0, np.exp(-8.0)),
        # + silent (9), clipped (1), a silent receiver expected silent (not counted), an unused one:
        # T = 18, χ²₃: 2 Φ(−√T) + √(2T/π) e^(−T/2)
        (
            [(SILENT, SILENT_AT), (CLIPPED, CLIPPED_AT), (SILENT, 12.0 + 1.0), (UNUSED, np.nan)],
            None,
            2.0 * ndtr(-np.sqrt(18.0)) + np.sqrt(36.0 / np.pi) * np.exp(-9.0),
        ),
    ],
)
def test_p_value_closed_form(extra: list, known_power: float | None, expected: float) -> None:
    state = [HEARD, HEARD] + [s for s, _ in extra]
    r = len(state)
    obs = LabelledObservations(
        session_id=np.array([7]), pos_km=np.zeros((1, 2)), radius_km=np.zeros(1),
        y_db=np.array([Y + [np.nan] * len(extra)]), cens_db=np.array([[np.nan] * 2 + [c for _, c in extra]]),
        state=np.array([state], np.int8), band=np.zeros(1, np.int8),
    )  # fmt: skip
    power = None if known_power is None else np.array([known_power])
    p = outlier_p_values(obs, obs.state, np.full((1, r), PRED), np.ones((1, r)), power)
    assert p[0] == pytest.approx(expected, rel=1e-6)


def test_one_heard_receiver_cannot_be_tested() -> None:
    obs = LabelledObservations(
        session_id=np.array([1]), pos_km=np.zeros((1, 2)), radius_km=np.zeros(1),
        y_db=np.array([[40.0, np.nan]]), cens_db=np.full((1, 2), np.nan),
        state=np.array([[HEARD, UNUSED]], np.int8), band=np.zeros(1, np.int8),
    )  # fmt: skip
    assert outlier_p_values(obs, obs.state, np.zeros((1, 2)), np.ones((1, 2)))[0] == 1.0


def _displaced_set(
    network: Network, n: int, seed: int
) -> tuple[LabelledObservations, np.ndarray, np.ndarray]:
    """n labels with a planted field, receivers silent beyond ~110 km; ~5 % labels moved 30-80 km.

    Returns the observations (wrong positions for the displaced), the displaced mask and the true positions.
    """
    rng = np.random.default_rng(seed)
    (e0, e1), (n0, n1) = AREA
    pos = np.column_stack([rng.uniform(e0, e1, n), rng.uniform(n0, n1, n)])
    thr = np.full(len(network.receivers), 37.0 + planted_pathloss(np.array(150.0)))
    obs, _ = synth(network, pos, smooth_field, rng, noise_db=2.0, threshold_db=thr)
    keep = (obs.state == HEARD).sum(axis=1) >= 2
    obs, pos = obs.select(keep), pos[keep]
    bad = rng.random(len(obs)) < 0.05
    label = pos.copy()
    for k in np.flatnonzero(bad):  # a typed-in position elsewhere in the labelled area
        inside = False
        while not inside:
            a, r = rng.uniform(0, 2 * np.pi), rng.uniform(30.0, 80.0)
            label[k] = pos[k] + r * np.array([np.cos(a), np.sin(a)])
            inside = e0 < label[k, 0] < e1 and n0 < label[k, 1] < n1
    return dataclasses.replace(obs, pos_km=label), bad, pos


def _field_rms_db(m: RadioMap, pts: np.ndarray) -> float:
    """RMS of predicted − planted (path loss + field) minus its receiver mean, dB."""
    pred, _ = m.predict(pts)
    rx = m.network.positions_km
    d = np.hypot(pts[None, :, 0] - rx[:, None, 0], pts[None, :, 1] - rx[:, None, 1])
    err = pred - (planted_pathloss(d) + smooth_field(pts, len(rx)).T)
    return float(np.sqrt(np.mean((err - err.mean(axis=0)) ** 2)))


@pytest.mark.slow
def test_fit_flags_displaced_labels_and_keeps_the_map(network: Network, tmp_path: Path) -> None:
    """1,000 labels (22 % of receivers silent), 5 % moved 30-80 km: ≥ 80 % flagged, ≤ 2 % of the good ones.

    Measured (seed 0; 968 labels heard by ≥ 2 receivers): 51 displaced, 45 flagged (88 %; the same
    chi-square with the true map and noise flags 48), 3 of 917 good ones flagged (0.3 %); field
    RMS at the displaced labels 3.1 dB without the test, 1.2 dB with it (1.15 / 1.07 dB at the good
    ones); an update from the first half flags the same 48 sessions as the full fit. Seeds 1-3 flag
    85, 88 and 80 % of the displaced labels and 0-0.5 % of the good ones.
    """
    obs, bad, _ = _displaced_set(network, 1000, seed=0)
    assert 35 <= bad.sum() <= 65
    cfg = MapsConfig(holdout_fraction=0.0)
    robust = fit_radio_map(obs, network, cfg)
    plain = fit_radio_map(obs, network, cfg.model_copy(update={"outlier_p_value": 0.0}))
    np.testing.assert_array_equal(robust.train.session_id, obs.session_id)  # all kept, flagged
    flagged = robust.outliers
    assert flagged is not None and plain.outliers is not None and not plain.outliers.any()
    assert flagged[bad].mean() >= 0.8, (flagged[bad].sum(), bad.sum())
    assert flagged[~bad].mean() <= 0.02, (flagged[~bad].sum(), (~bad).sum())
    assert robust.metrics["n_outliers"] == flagged.sum()
    assert robust.outlier_session_ids == obs.session_id[flagged].tolist()
    near_bad = obs.pos_km[bad]
    err_robust, err_plain = _field_rms_db(robust, near_bad), _field_rms_db(plain, near_bad)
    assert err_robust < 0.6 * err_plain, (err_robust, err_plain)
    assert _field_rms_db(robust, obs.pos_km[~bad]) < _field_rms_db(plain, obs.pos_km[~bad]) + 0.2
    # the flags travel with the artifact
    meta = save_map(robust, str(tmp_path / "map"))
    assert meta["outlier_session_ids"] == robust.outlier_session_ids
    loaded, _ = load_map(str(tmp_path / "map"))
    np.testing.assert_array_equal(loaded.outliers, flagged)
    # an update re-tests every label: the same flags as the full fit, within a few
    first = fit_radio_map(obs.select(slice(0, len(obs) // 2)), network, cfg)
    updated = fit_radio_map(obs.select(slice(len(obs) // 2, None)), network, cfg, previous=first)
    np.testing.assert_array_equal(updated.train.session_id, obs.session_id)
    assert np.sum(updated.outliers != flagged) <= 3, (updated.outliers.sum(), flagged.sum())
