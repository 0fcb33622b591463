"""PNG per receiver: the kriged field mean and standard deviation, the labels and the receiver."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from heimdall.maps.fit import RadioMap


def draw_maps(m: RadioMap, out_dir: str | Path) -> list[Path]:
    """Write ``<receiver id>.png`` (2 m field mean dB | field std dB) per receiver; returns the paths.

    The 70 cm field differs by the cross-band part (ρ in the title); the path-loss law is not drawn.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extent = m.grid.area_km
    paths = []
    for i, rid in enumerate(m.network.ids):
        fig, axes = plt.subplots(1, 2, figsize=(12, 5))
        used = m.train.state[:, i] != 0
        for ax, img, title, cmap in (
            (axes[0], m.field_db[0, i], "2 m field mean (dB)", "RdBu_r"),
            (axes[1], np.sqrt(m.field_var_db2[0, i]), "2 m field std (dB)", "viridis"),
        ):
            lim = float(np.nanmax(np.abs(img))) or 1.0
            kw = {"vmin": -lim, "vmax": lim} if cmap == "RdBu_r" else {"vmin": 0.0, "vmax": m.hyper.sigma_db}
            im = ax.imshow(img, origin="lower", extent=extent, cmap=cmap, **kw)
            fig.colorbar(im, ax=ax, shrink=0.8)
            ax.scatter(*m.train.pos_km[used].T, s=2, c="k", alpha=0.4, label=f"labels ({int(used.sum())})")
            ax.scatter(*m.rx_km[i], marker="^", s=120, c="yellow", edgecolors="k", label=f"receiver {rid}")
            ax.set_title(f"{rid}: {title}")
            ax.set_xlabel("east (km)")
            ax.set_ylabel("north (km)")
            ax.legend(loc="upper right", fontsize=7)
        fig.suptitle(
            f"σ = {m.hyper.sigma_db:.1f} dB, ℓ = {m.hyper.corr_km:.1f} km, τ = {m.hyper.nugget_db:.1f} dB, "
            f"ρ(2 m, 70 cm) = {m.hyper.band_corr:.2f}, N = {m.n_labels}"
        )
        fig.tight_layout()
        path = out / f"{rid}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths
