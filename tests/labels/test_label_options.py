"""``data label`` numbers: refused when they would label nothing; the printed count is what was written."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from heimdall.cli import main
from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError
from heimdall.labels.job import label_batch, run_label
from heimdall.labels.policy import LabelPolicy
from heimdall.sim.aprs import PositionReport, position_frame
from heimdall.sim.ax25 import Address

from .conftest import session_of

BAD = [math.nan, math.inf, -math.inf, -1.0, 0.0]
OPTIONS = [("max_radius_km", "--max-radius-km"), ("max_range_km", "--max-range-km")]


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize(("name", "option"), OPTIONS)
def test_policy_refuses_numbers_that_label_nothing(name: str, option: str, value: float) -> None:
    with pytest.raises(HeimdallError, match=rf"{name} \({option}\) must be a finite number > 0"):
        LabelPolicy(**{name: value})


@pytest.mark.parametrize("value", [math.nan, -0.5])
def test_policy_refuses_a_bad_gps_sigma(value: float) -> None:
    with pytest.raises(HeimdallError, match=r"gps_sigma_m must be a finite number >= 0"):
        LabelPolicy(gps_sigma_m=value)


@pytest.mark.parametrize("value", ["nan", "-1", "0", "inf"])
@pytest.mark.parametrize(("name", "option"), OPTIONS)
def test_cli_refuses_before_labelling(tmp_path: Path, name: str, option: str, value: str, capsys) -> None:
    with SessionStore.create(tmp_path / "in", {"test": 1}) as st:
        st.append_shard(0, session_of(None))
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "data",
                "label",
                str(tmp_path / "in"),
                "--out",
                str(tmp_path / "out"),
                f"{option}={value}",
                "--json",
            ]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert option in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(shutil.which("atest") is None, reason="direwolf not installed")
def test_count_is_what_was_written_at_the_radius_limit(tmp_path: Path) -> None:
    """A limit between a label's radius and its rounded record value: kept and counted alike."""
    frame = position_frame(Address("IZ2ABC", 9), PositionReport(45.49, 9.15, "uncompressed"),
                           (Address("WIDE1", 1), Address("WIDE2", 1)))  # fmt: skip
    batch = session_of(frame)
    decisions, _, _ = label_batch(batch, LabelPolicy())
    radius = decisions[0].radius_m
    assert decisions[0].labelled and round(radius, 2) != radius
    with SessionStore.create(tmp_path / "in", {"test": 1}) as st:
        st.append_shard(0, batch)
    for k, limit_m in enumerate((0.5 * (radius + round(radius, 2)), radius - 1.0, radius + 1.0)):
        out = str(tmp_path / f"out{k}")
        summary = run_label(str(tmp_path / "in"), out, LabelPolicy(max_radius_km=limit_m / 1000.0))
        written = len(SessionStore.open(out))
        assert summary["n_labelled"] == written, (limit_m, radius, json.dumps(summary))
        assert summary["n_labelled"] + summary["n_coarse"] + summary["n_unlabelled"] == 1
        assert written == int(radius <= limit_m)
