"""PNG plots of simulation runs (matplotlib, Agg backend, imported only here and lazily).

Plots take the small curve summaries of gpupool.simulations.metrics
(utilisation in time bins, cumulative subsidy, queueing-delay quantiles), so a
comparison can plot runs made in other processes without shipping whole
results back. Each function writes one PNG and returns its path.

Scheme, domain, GPU type and programme names come from users' files: they reach
matplotlib only through gpupool.safe_text.plot_text (no mathtext, no control
characters), so a name like ``$\\frac$`` is drawn as written instead of failing
the whole report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpupool.safe_text import plot_text

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


MINUTE_HOURS = 1 / 60
LOG_SPREAD = 100  # log x once the longest wait is over 100x the one-minute floor


@dataclass(frozen=True)
class DelayAxis:
    """The x axis of a queueing-delay CDF, shared by every panel so domains compare.

    Waits span seconds to days and most jobs of a well-served domain wait 0 h,
    so a linear axis either hides the short waits or the long ones: past
    LOG_SPREAD the axis is logarithmic from one minute, and shorter waits
    (0 included) sit at that left edge. ``waited`` is False when no job of any
    panel waited at all (the figure then says so instead of drawing a line at 0).
    """

    log: bool
    low: float
    high: float
    waited: bool

    @property
    def limits(self) -> tuple[float, float]:
        """Log axes start a little left of the floor, so a line at 1 min shows off the spine."""
        return (self.low / 1.5, self.high) if self.log else (self.low, self.high)

    def clip(self, delays: Sequence[float]) -> list[float]:
        return [max(delay, self.low) for delay in delays] if self.log else list(delays)

    @property
    def label(self) -> str:
        if self.log:
            return "queueing delay (hours, log scale; waits < 1 min drawn at 1 min)"
        return "queueing delay (hours)"


def delay_axis(delays: Iterable[float]) -> DelayAxis:
    """Choose the CDF's x axis from every delay that will be drawn (hours)."""
    longest = max((delay for delay in delays), default=0.0)
    if longest <= 0:
        return DelayAxis(log=False, low=0.0, high=1.0, waited=False)
    if longest > LOG_SPREAD * MINUTE_HOURS:
        return DelayAxis(log=True, low=MINUTE_HOURS, high=longest * 1.3, waited=True)
    return DelayAxis(log=False, low=0.0, high=longest * 1.05, waited=True)


def plot_wait_cdf(curves: Mapping[str, Mapping[str, list[float]]], path: Path) -> Path:
    """Queueing-delay CDF, one panel per domain, one line per scheme, one shared x axis.

    ``curves``: scheme -> domain -> delay quantiles (evenly spaced from 0 to 1).
    A domain whose jobs never waited says "no job waited" instead of a line at 0.
    """
    return _save(wait_cdf_figure(curves), path)


def wait_cdf_figure(curves: Mapping[str, Mapping[str, list[float]]]):
    """The figure of :func:`plot_wait_cdf`, unsaved (tests look at its axes)."""
    plt = _pyplot()
    domains = sorted({domain for per_domain in curves.values() for domain in per_domain})
    axis = delay_axis(q for per in curves.values() for quantiles in per.values() for q in quantiles)
    columns = min(3, max(1, len(domains)))
    rows = max(1, -(-len(domains) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax, domain in zip(axes.flat, domains, strict=False):
        _cdf_panel(ax, domain, curves, axis)
    spare = list(axes.flat)[len(domains) :]
    for ax in spare:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles and spare:  # one legend in a free slot instead of one per panel
        spare[0].set_visible(True)
        spare[0].axis("off")
        spare[0].legend(handles, labels, loc="center", title="scheme")
    elif handles:
        axes.flat[0].legend(fontsize="small", loc="lower right")
    fig.suptitle("Queueing delay: fraction of each domain's jobs that started within x")
    return fig


def _cdf_panel(ax, domain: str, curves, axis: DelayAxis) -> None:
    waited = False
    for scheme, per_domain in curves.items():
        quantiles = per_domain.get(domain)
        if quantiles:
            waited = waited or max(quantiles) > 0
            fractions = [i / (len(quantiles) - 1) for i in range(len(quantiles))]
            # over the spine: a scheme where no job waited is a line on the axis at x = 0
            ax.plot(
                axis.clip(quantiles),
                fractions,
                label=plot_text(scheme),
                drawstyle="steps-post",
                clip_on=False,
                zorder=3,
                linewidth=1.6,
            )
    if axis.log:
        ax.set_xscale("log")
    ax.set_xlim(*axis.limits)
    if not waited:
        ax.text(0.5, 0.5, "no job waited", transform=ax.transAxes, ha="center", va="center")
    ax.set_title(plot_text(domain))
    ax.set_xlabel(axis.label, fontsize="small")
    ax.set_ylabel("fraction of jobs")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)


def plot_lines(
    curves: Mapping[str, Curve], path: Path, *, title: str, ylabel: str, fraction: bool = False
) -> Path:
    """One line per label over simulated hours (utilisation, subsidy spent, ...)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for label, (hours, values) in curves.items():
        style = "steps-post" if not fraction else "default"
        ax.plot(hours, values, label=plot_text(label), drawstyle=style)
    ax.set_title(title)
    ax.set_xlabel("simulated time (hours)")
    ax.set_ylabel(ylabel)
    _value_axis(ax, fraction)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize="small")
    return _save(fig, path)


def _value_axis(ax, fraction: bool) -> None:
    """Shares as percentages; amounts with thousands separators, never 1e6 offsets."""
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    if fraction:
        ax.set_ylim(0, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    else:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))


def plot_burn_down(curves: Mapping[str, Mapping[str, Curve]], path: Path) -> Path:
    """Budget left over time, one panel per programme, one line per scheme.

    ``curves``: scheme -> programme -> (hours, budget left); schemes without a
    programme simply have no line in its panel.
    """
    plt = _pyplot()
    programmes = list(dict.fromkeys(name for per in curves.values() for name in per))
    columns = min(2, max(1, len(programmes)))
    rows = max(1, -(-len(programmes) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.2 * rows), squeeze=False)
    for ax, programme in zip(axes.flat, programmes, strict=False):
        for scheme, per_programme in curves.items():
            if programme in per_programme:
                hours, left = per_programme[programme]
                ax.plot(hours, left, label=plot_text(scheme), drawstyle="steps-post")
        ax.set_title(f"{plot_text(programme)}: budget left")
        ax.set_xlabel("simulated time (hours)")
        ax.set_ylabel("budget left in its period")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if not programmes:
        axes.flat[0].set_title("no programme with a budget")
    for ax in list(axes.flat)[max(1, len(programmes)) :]:
        ax.set_visible(False)
    return _save(fig, path)


def plot_shares(
    shares: Mapping[str, Mapping[str, float | None]], path: Path, *, ylabel: str, title: str
) -> Path:
    """Grouped bars: each category's share (domain, GPU type...), one bar per scheme."""
    plt = _pyplot()
    categories = sorted({name for per in shares.values() for name in per})
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(categories) + 2), 3.6))
    width = 0.8 / max(1, len(shares))
    for index, (scheme, per_category) in enumerate(shares.items()):
        xs = [i + (index - (len(shares) - 1) / 2) * width for i in range(len(categories))]
        heights = [per_category.get(c) or 0.0 for c in categories]
        ax.bar(xs, heights, width, label=plot_text(scheme))
    labels = [plot_text(c) for c in categories]
    ax.set_xticks(range(len(categories)), labels, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    if shares:
        ax.legend(fontsize="small")
    return _save(fig, path)


TRADE_OFF_AXES = (  # (x, y) columns of the trade-off panels
    (0, 1),
    (0, 2),
    (1, 2),
)


def plot_trade_offs(
    points: Sequence[tuple[float, float, float]],
    front: Sequence[int],
    labels: Sequence[str],
    axis_names: Sequence[str],
    path: Path,
) -> Path:
    """The three two-way views of a sweep's (wait, subsidy, utilisation) points: every
    configuration grey, the Pareto-optimal ones (over all three) red and numbered."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    optimal = set(front)
    for ax, (x, y) in zip(axes, TRADE_OFF_AXES, strict=True):
        others = [p for i, p in enumerate(points) if i not in optimal]
        best = [points[i] for i in front]
        ax.scatter([p[x] for p in others], [p[y] for p in others], color="0.6", s=22, label="other")
        ax.scatter(
            [p[x] for p in best],
            [p[y] for p in best],
            color="tab:red",
            s=46,
            marker="D",
            label="Pareto front",
            zorder=3,
        )
        for (px, py), names in _coincident(points, front, labels, x, y).items():
            ax.annotate(
                plot_text(", ".join(names)),
                (px, py),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize="small",
            )
        ax.set_xlabel(axis_names[x])
        ax.set_ylabel(axis_names[y])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle("Trade-offs: each point a configuration (mean over seeds)")
    return _save(fig, path)


def _coincident(points, front, labels, x: int, y: int) -> dict[tuple, list[str]]:
    """Front labels by position, so configurations that land on one spot share one label."""
    spots: dict[tuple, list[str]] = {}
    for index in front:
        spots.setdefault((points[index][x], points[index][y]), []).append(labels[index])
    return spots
