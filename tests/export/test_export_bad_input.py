"""A grid-posterior export never passes parity on NaN: non-finite checkpoints and maps are refused."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.maps.conftest import smooth_field, synth

from heimdall.cli import main
from heimdall.errors import HeimdallError
from heimdall.export.grid_onnx import export_grid_model, grid_metadata, parity_max_tv
from heimdall.export.job import run_export
from heimdall.export.onnx import require_finite_parameters
from heimdall.maps.artifact import save_map
from heimdall.maps.config import MapsConfig
from heimdall.maps.fit import fit_radio_map
from heimdall.models.grid_predictor import KIND, torch_runner
from heimdall.models.gridnet import GridPosteriorNet
from heimdall.network import Network

torch.set_num_threads(1)
#: (parameter or buffer, bad value) of a damaged checkpoint.
BAD_VALUES = [("n_near", math.nan), ("clutter_db", math.inf), ("log_height_weight", -math.inf)]


def _damaged_model(name: str, value: float) -> GridPosteriorNet:
    model = GridPosteriorNet(MapsConfig())
    state = model.state_dict()
    state[name] = torch.full_like(state[name], value)
    model.load_state_dict(state)
    return model.eval()


def _checkpoint(path: Path, model: GridPosteriorNet) -> Path:
    payload = {"kind": KIND, "state_dict": model.state_dict(),
               "maps_config": MapsConfig().model_dump(mode="json"), "metadata": {"note": "test"}}  # fmt: skip
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_parity_of_nan_posteriors_is_not_finite(name: str, value: float) -> None:
    """A NaN total variation is never swallowed by max(): the parity check sees it."""
    model = _damaged_model(name, value)
    tv = parity_max_tv(model, torch_runner(model), n_slots=4)
    assert not math.isfinite(tv)


def test_export_fails_parity_on_nan_posteriors(tmp_path: Path) -> None:
    model = _damaged_model("n_near", math.nan)
    with pytest.raises(HeimdallError, match="not finite"):
        export_grid_model(model, str(tmp_path / "m"), grid_metadata(model, 4, {"x": 1}))
    assert not (tmp_path / "m" / "model.onnx").exists()


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_non_finite_checkpoint_is_refused_up_front(tmp_path: Path, name: str, value: float, capsys) -> None:
    ckpt = _checkpoint(tmp_path / "bad.pt", _damaged_model(name, value))
    with pytest.raises(HeimdallError, match=rf"bad\.pt.*parameter '{name}' is not finite"):
        run_export(str(tmp_path / "out"), checkpoint=ckpt)
    with pytest.raises(SystemExit) as exc:
        main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert name in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_finite_model_passes_the_check() -> None:
    require_finite_parameters(GridPosteriorNet(MapsConfig()), "start values")


@pytest.mark.parametrize("field", ["field_db", "field_var_db2"])
def test_map_with_non_finite_fields_is_refused(tmp_path: Path, network: Network, field: str, capsys) -> None:
    rng = np.random.default_rng(0)
    pos = np.column_stack([rng.uniform(-40, 20, 40), rng.uniform(-30, 30, 40)])
    obs, _ = synth(network, pos, smooth_field, rng, noise_db=1.0)
    cfg = MapsConfig(grid_step_km=10.0, holdout_fraction=0.0, iterations=2, min_labels=10)
    good = tmp_path / "good"
    save_map(fit_radio_map(obs, network, cfg), str(good))
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    with np.load(bad / "maps.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays[field] = np.full_like(arrays[field], np.nan)
    np.savez_compressed(bad / "maps.npz", **arrays)
    ckpt = _checkpoint(tmp_path / "ok.pt", GridPosteriorNet(MapsConfig()))
    with pytest.raises(HeimdallError, match=rf"bad/maps\.npz: '{field}' has \d+ of \d+ values not finite"):
        run_export(str(tmp_path / "out"), checkpoint=ckpt, radio_map=str(bad))
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exc:
        main(["export", "--checkpoint", str(ckpt), "--map", str(bad), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err
