"""PNG plots of simulation runs (matplotlib, Agg backend, imported only here and lazily).

Plots take the small curve summaries of gpupool.simulations.metrics
(utilisation in time bins, cumulative subsidy, queueing-delay quantiles), so a
comparison can plot runs made in other processes without shipping whole
results back. Each function writes one PNG and returns its path.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

Curve = tuple[list[float], list[float]]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_wait_cdf(curves: Mapping[str, Mapping[str, list[float]]], path: Path) -> Path:
    """Queueing-delay CDF, one panel per domain, one line per scheme.

    ``curves``: scheme -> domain -> delay quantiles (evenly spaced from 0 to 1).
    """
    plt = _pyplot()
    domains = sorted({domain for per_domain in curves.values() for domain in per_domain})
    columns = min(3, max(1, len(domains)))
    rows = max(1, -(-len(domains) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax, domain in zip(axes.flat, domains, strict=False):
        for scheme, per_domain in curves.items():
            quantiles = per_domain.get(domain)
            if quantiles:
                fractions = [i / (len(quantiles) - 1) for i in range(len(quantiles))]
                ax.plot(quantiles, fractions, label=scheme, drawstyle="steps-post")
        ax.set_title(domain)
        ax.set_xlabel("queueing delay (hours)")
        ax.set_ylabel("fraction of jobs")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(domains) :]:
        ax.set_visible(False)
    return _save(fig, path)


def plot_lines(
    curves: Mapping[str, Curve], path: Path, *, title: str, ylabel: str, fraction: bool = False
) -> Path:
    """One line per label over simulated hours (utilisation, subsidy spent, ...)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for label, (hours, values) in curves.items():
        ax.plot(hours, values, label=label, drawstyle="steps-post" if not fraction else "default")
    ax.set_title(title)
    ax.set_xlabel("simulated time (hours)")
    ax.set_ylabel(ylabel)
    if fraction:
        ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize="small")
    return _save(fig, path)
