"""The reference world file: every parameter with unit and reason; the fixed values (ARCHITECTURE §3)."""

from __future__ import annotations

import pytest
import yaml

from heimdall.errors import HeimdallError
from heimdall.sim import load_world
from heimdall.sim.world import WorldConfig, reference_world_text

FIXED = {  # docs/ARCHITECTURE.md §3, reference world
    "static_shadowing_sigma_db": 8.0,
    "static_shadowing_corr_km": 10.0,
    "capture_shadowing_sigma_db": 2.0,
    "gain_offset_sigma_db": 4.0,
    "tx_power_dbm_min": 27.0,
    "tx_power_dbm_max": 47.0,
    "rician_k_db": 6.0,
    "doppler_hz": 5.0,
    "agc": False,
    "tx_height_m_min": 1.5,
    "tx_height_m_max": 10.0,
}


def test_every_parameter_has_value_unit_reason() -> None:
    doc = yaml.safe_load(reference_world_text())
    assert set(doc) == set(WorldConfig.model_fields)
    for key, item in doc.items():
        assert set(item) == {"value", "unit", "reason"}, key
        assert item["unit"] and len(item["reason"]) > 10, key


def test_fixed_values_of_the_design() -> None:
    world = load_world()
    for key, value in FIXED.items():
        assert getattr(world, key) == value, key


def test_user_file_overrides(tmp_path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("agc: true\nstatic_shadowing_sigma_db: {value: 6.0, unit: dB, reason: flat land}\n")
    world = load_world(path)
    assert world.agc is True and world.static_shadowing_sigma_db == 6.0
    assert world.capture_shadowing_sigma_db == 2.0


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("colour: blue\n", "colour"),
        ("mode_probs: {nbfm: 0.5, cw: 0.2}\n", "sum to 1"),
        ("tx_power_dbm_min: 60\n", "tx_power_dbm_min must not exceed"),
        ("duration_s: [1\n", "not valid YAML"),
        ("- 1\n- 2\n", "mapping"),
    ],
)
def test_bad_world_files(tmp_path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(HeimdallError, match=r"bad\.yaml") as err:
        load_world(path)
    assert fragment in str(err.value)
