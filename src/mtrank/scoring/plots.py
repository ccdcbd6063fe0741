"""The reliability report (the post's Figure 3): per head, fraction of positives against mean predicted p.

Top panel: one curve per head (fraction of positives in a bin against the mean calibrated probability in that
bin, with a 95% binomial interval), the diagonal of perfect calibration, and each head's Brier score in the
legend. Bottom panel: the histogram of the calibrated scores per head (log counts), on the same x axis.

Bins: ``quantile`` (default: equal-count bins, so the many scores near zero are resolved) or ``uniform``
(equal-width bins on [0, largest score], not [0, 1]: with engagement rates of a few percent, bins on [0, 1]
would put nearly every row in the first bin). Drawn with matplotlib's Agg canvas: no display, no global
backend change.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mtrank.utils.io import atomic_write

__all__ = ["BIN_STRATEGIES", "REPORT_SCALES", "reliability_table", "reliability_figure", "save_reliability_png"]

BIN_STRATEGIES = ("quantile", "uniform")
REPORT_SCALES = ("linear", "log")  # the reliability figure's axes


def _edges(p: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if strategy == "quantile":
        edges = np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1))
        return np.unique(edges)  # ties (many equal scores) merge bins
    if strategy == "uniform":
        hi = float(p.max()) if p.size else 1.0
        return np.linspace(0.0, hi if hi > 0 else 1.0, n_bins + 1)
    raise ValueError(f"bins = '{strategy}': expected one of {list(BIN_STRATEGIES)}")


def reliability_table(p, y, n_bins: int = 15, strategy: str = "quantile") -> dict[str, list[float]]:
    """Per non-empty bin: ``count``, ``mean_p``, ``frac_pos`` and its 95% interval ``lo``, ``hi``.

    ``p`` are predicted probabilities, ``y`` 0/1 labels over the same rows.
    """
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"p {p.shape} and y {y.shape} differ in shape")
    if n_bins < 1:
        raise ValueError(f"n_bins={n_bins}: expected ≥ 1")
    if p.size == 0:
        return {k: [] for k in ("count", "mean_p", "frac_pos", "lo", "hi")}
    edges = _edges(p, n_bins, strategy)
    idx = np.clip(np.searchsorted(edges[1:-1], p, side="right"), 0, max(len(edges) - 2, 0))
    nb = max(len(edges) - 1, 1)
    count = np.bincount(idx, minlength=nb).astype(np.float64)
    sp = np.bincount(idx, weights=p, minlength=nb)
    sy = np.bincount(idx, weights=y, minlength=nb)
    keep = count > 0
    count, sp, sy = count[keep], sp[keep], sy[keep]
    frac = sy / count
    half = 1.96 * np.sqrt(frac * (1 - frac) / count)
    return {
        "count": count.tolist(),
        "mean_p": (sp / count).tolist(),
        "frac_pos": frac.tolist(),
        "lo": np.clip(frac - half, 0, 1).tolist(),
        "hi": np.clip(frac + half, 0, 1).tolist(),
    }


def _drawable(tab: dict[str, list[float]], min_count: int) -> dict[str, list[float]]:
    keep = [i for i, n in enumerate(tab["count"]) if n >= min_count]
    return {k: [v[i] for i in keep] for k, v in tab.items()}


def reliability_figure(
    scores: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    *,
    n_bins: int = 15,
    strategy: str = "quantile",
    title: str | None = None,
    raw_scores: Mapping[str, np.ndarray] | None = None,
    scale: str = "linear",
    min_bin_count: int = 50,
):
    """A matplotlib Figure (Agg canvas) with the reliability curves and score histograms of every head.

    ``scores`` / ``labels``: per task, calibrated probabilities and 0/1 labels; ``raw_scores``: optional
    per-task raw scores, drawn dashed (before the correction); ``scale``: ``linear`` or ``log`` axes;
    ``min_bin_count``: bins with fewer rows are not drawn (their fraction is noise; they stay in the tables).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if scale not in REPORT_SCALES:
        raise ValueError(f"scale = '{scale}': expected one of {list(REPORT_SCALES)}")
    tasks = list(scores)
    fig = Figure(figsize=(7.5, 9.0), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax, hx = fig.subplots(2, 1, height_ratios=[3, 1.3], sharex=True)
    colors = [f"C{i}" for i in range(10)]
    hi = 0.0
    lo_pos = 1.0
    for i, t in enumerate(tasks):
        p = np.asarray(scores[t], dtype=np.float64)
        y = np.asarray(labels[t], dtype=np.float64)
        c = colors[i % 10]
        tab = _drawable(reliability_table(p, y, n_bins, strategy), min_bin_count)
        brier = float(np.mean((p - y) ** 2)) if p.size else float("nan")
        mp, fp = np.array(tab["mean_p"]), np.array(tab["frac_pos"])
        ax.errorbar(
            mp,
            fp,
            yerr=[fp - np.array(tab["lo"]), np.array(tab["hi"]) - fp],
            color=c,
            marker="o",
            markersize=4,
            linewidth=1.6,
            elinewidth=0.8,
            capsize=2,
            label=f"{t} (Brier {brier:.4f}, base rate {y.mean():.2%})",
        )
        if raw_scores is not None and t in raw_scores:
            rt = _drawable(
                reliability_table(np.asarray(raw_scores[t], dtype=np.float64), y, n_bins, strategy), min_bin_count
            )
            ax.plot(
                rt["mean_p"],
                rt["frac_pos"],
                color=c,
                linestyle="--",
                linewidth=1.0,
                alpha=0.6,
                label=f"{t}, before correction",
            )
            hi = max(hi, max(rt["mean_p"], default=0.0))
        hi = max(hi, float(mp.max(initial=0.0)), float(fp.max(initial=0.0)))
        if mp.size:
            lo_pos = min(lo_pos, float(mp[mp > 0].min(initial=1.0)))
        if p.size:
            hist_hi = float(np.quantile(p, 0.999))
            hx.hist(
                p,
                bins=np.linspace(0, max(hist_hi, 1e-6), 60)
                if scale == "linear"
                else np.geomspace(max(p[p > 0].min(initial=1e-6), 1e-6), max(p.max(), 1e-5), 60),
                histtype="step",
                color=c,
                linewidth=1.3,
                label=t,
            )
    hi = min(1.0, hi * 1.05) if hi > 0 else 1.0
    if scale == "log":
        lo = max(lo_pos / 1.5, 1e-6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.plot([lo, hi], [lo, hi], color="0.3", linestyle=":", linewidth=1.2, label="perfectly calibrated")
    else:
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.plot([0, hi], [0, hi], color="0.3", linestyle=":", linewidth=1.2, label="perfectly calibrated")
    ax.set_ylabel("fraction of positives")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8.5, framealpha=0.9)
    ax.set_title(title or "Calibration plot (reliability curve per head)", fontsize=11)
    hx.set_yscale("log")
    hx.set_xlabel(f"mean predicted probability per bin ({strategy} bins)   /   calibrated score")
    hx.set_ylabel("count")
    hx.grid(True, alpha=0.3)
    hx.legend(loc="best", fontsize=8, ncol=min(len(tasks), 3))
    return fig


def save_reliability_png(path: str | Path, scores, labels, **kwargs) -> Path:
    """Draw :func:`reliability_figure` and write it as a PNG atomically (temp file + rename)."""
    path = Path(path)
    fig = reliability_figure(scores, labels, **kwargs)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path
