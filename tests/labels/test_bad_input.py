"""Bad and tricky input: each case gets its documented outcome, never a traceback."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from heimdall.cli import main
from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError
from heimdall.labels.job import label_batch
from heimdall.labels.policy import LabelPolicy, radius99_m
from heimdall.sim.aprs import PositionReport, position_frame, text_frame
from heimdall.sim.ax25 import Address, UIFrame

from .conftest import RX_LAT, session_of

pytestmark = pytest.mark.skipif(shutil.which("atest") is None, reason="direwolf not installed")
SRC = Address("IZ2ABC", 9)
PATH = (Address("WIDE1", 1), Address("WIDE2", 1))
POS = PositionReport(45.49, 9.15, "uncompressed")


def _reason(frame: UIFrame | None, **kw) -> str:
    decisions, _, _ = label_batch(session_of(frame, **kw), LabelPolicy())
    return decisions[0].reason


@pytest.mark.parametrize(
    ("frame", "kwargs", "reason"),
    [
        (None, {}, "no-decode"),
        (position_frame(SRC, POS, PATH), {"corrupt_bit": 200}, "no-decode"),
        (text_frame(SRC, ">on the air with Heimdall", PATH), {}, "status"),
        (text_frame(SRC, ":IZ0XYZ   :hello{01", PATH), {}, "message"),
        (text_frame(SRC, ";REPEATER *092345z4529.40N/00909.00Er", PATH), {}, "object"),
        (text_frame(SRC, ")AID #2!4903.50N/07201.75WA", PATH), {}, "item"),
        (text_frame(SRC, "}IW1XYZ>APRS,TCPIP,IZ2ABC*:!4529.40N/00909.00E>", PATH), {}, "third-party"),
        (position_frame(SRC, POS, (Address("IR0DGA", 0, True), Address("WIDE1", 0, True))), {}, "digipeated"),
        (position_frame(SRC, PositionReport(41.9, 12.5), PATH), {}, "out-of-range"),
        (position_frame(SRC, POS, PATH), {}, "labelled"),
    ],
    ids=[
        "no-packet",
        "bad-crc",
        "status",
        "message",
        "object",
        "item",
        "third-party",
        "digipeated",
        "typed-in-far",
        "position",
    ],
)
def test_outcome(frame: UIFrame | None, kwargs: dict, reason: str) -> None:
    assert _reason(frame, **kwargs) == reason


def test_label_values_and_burst_power() -> None:
    batch = session_of(position_frame(SRC, POS, PATH), cnr_db=20.0)
    decisions, out, keep = label_batch(batch, LabelPolicy())
    assert keep == [0] and out is not None
    assert abs(out.tx_lat_deg[0] - POS.lat_deg) < 0.01 / 60
    assert abs(out.tx_lon_deg[0] - POS.lon_deg) < 0.01 / 60
    assert decisions[0].radius_m == pytest.approx(radius99_m("uncompressed", 0, RX_LAT[0]), rel=1e-3)
    # burst of ~0.55 s keyed at CNR 20 dB in a 1.2 s capture: the burst SNR is the CNR (within 1 dB),
    # the whole-capture SNR would be ~3.4 dB lower
    burst_snr = out.rx_burst_dbfs[0] - out.rx_burst_noise_dbfs[0]
    assert np.all(np.abs(burst_snr - 20.0) < 1.0)
    # the contract: the label's 99 % radius in its own column, the simulator's bookkeeping not overloaded
    assert out.label_radius_m[0] == pytest.approx(decisions[0].radius_m)
    assert np.all(np.isnan(out.rx_power_dbm)) and np.all(np.isnan(out.rx_snr_db))


def test_radius_closed_forms() -> None:
    rayleigh = 3.7 * np.sqrt(-2 * np.log(0.01))
    # unambiguous uncompressed at the equator: a full 0.01' step each way (18.53 m)
    assert radius99_m("uncompressed", 0, 0.0) == pytest.approx(np.hypot(18.532, 18.532) + rayleigh, abs=0.01)
    # ambiguity 4 at 60 deg: half of a 1 deg box
    assert radius99_m("mic-e", 4, 60.0) == pytest.approx(
        np.hypot(55_597.5, 55_597.5 * 0.5) + rayleigh, rel=1e-4
    )


def test_decoder_missing_is_a_user_error(tmp_path, monkeypatch, capsys) -> None:
    batch = session_of(None)
    with SessionStore.create(tmp_path / "in", {"test": 1}) as st:
        st.append_shard(0, batch)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(HeimdallError, match="direwolf"):
        label_batch(batch, LabelPolicy())
    with pytest.raises(SystemExit) as exc:
        main(["data", "label", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--json"])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "direwolf" in err and "Traceback" not in err
