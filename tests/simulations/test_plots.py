"""The queueing-delay CDF's axis and panels, and the summary table's number format."""

from __future__ import annotations

import pytest

from gpupool.cli.simulate import compact
from gpupool.simulations.plots import (
    LOG_SPREAD,
    MINUTE_HOURS,
    delay_axis,
    plot_wait_cdf,
    wait_cdf_figure,
)


def test_no_wait_anywhere_gives_a_linear_axis_from_zero_and_says_so():
    axis = delay_axis([0.0, 0.0, 0.0])
    assert (axis.log, axis.low, axis.high, axis.waited) == (False, 0.0, 1.0, False)
    assert delay_axis([]) == axis


def test_short_waits_keep_a_linear_axis_starting_at_zero():
    longest = LOG_SPREAD * MINUTE_HOURS  # exactly at the limit: still linear
    axis = delay_axis([0.0, 0.2, longest])
    assert not axis.log and axis.low == 0.0 and axis.high == pytest.approx(longest * 1.05)
    assert axis.clip([0.0, 0.2]) == [0.0, 0.2]
    assert axis.label == "queueing delay (hours)"


def test_wide_spread_gives_a_log_axis_with_a_one_minute_floor():
    axis = delay_axis([0.0, 0.001, 0.5, 40.0])
    assert axis.log and axis.low == pytest.approx(1 / 60) and axis.high == pytest.approx(52.0)
    assert axis.clip([0.0, 0.001, 0.5]) == [pytest.approx(1 / 60), pytest.approx(1 / 60), 0.5]
    assert "log" in axis.label and "1 min" in axis.label
    assert axis.limits == (pytest.approx(1 / 90), pytest.approx(52.0))


def _panels(fig):
    return {ax.get_title(): ax for ax in fig.axes if ax.get_visible() and ax.get_title()}


def _texts(ax):
    return [text.get_text() for text in ax.texts]


def test_all_zero_domains_say_no_job_waited_on_the_shared_axis():
    quantiles_zero = [0.0] * 11
    quantiles_long = [0.0] * 6 + [0.1, 0.5, 2.0, 10.0, 30.0]
    fig = wait_cdf_figure(
        {
            "fifo": {"medical": quantiles_zero, "research": quantiles_long},
            "priority": {"medical": quantiles_zero, "research": quantiles_zero},
        }
    )
    panels = _panels(fig)
    assert set(panels) == {"medical", "research"}
    assert _texts(panels["medical"]) == ["no job waited"]
    assert _texts(panels["research"]) == []  # fifo waited there
    for ax in panels.values():  # one shared log axis from one minute: domains compare
        assert ax.get_xscale() == "log"
        assert ax.get_xlim() == pytest.approx((1 / 90, 39.0))  # a line at 1 min shows
    # one legend, in the free third slot, naming both schemes
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1
    assert [text.get_text() for text in legends[0].get_texts()] == ["fifo", "priority"]


def test_nobody_waited_gives_axis_from_zero_not_minus_point_zero_four(tmp_path):
    fig = wait_cdf_figure({"fifo": {"medical": [0.0, 0.0, 0.0]}})
    (ax,) = _panels(fig).values()
    assert ax.get_xscale() == "linear" and ax.get_xlim() == (0.0, 1.0)
    assert _texts(ax) == ["no job waited"]
    path = plot_wait_cdf({"fifo": {"medical": [0.0, 0.0, 0.0]}}, tmp_path / "cdf.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("value", "decimals", "text"),
    [
        (0.254, 2, "0.25"),
        (12.5, 2, "12.50"),
        (1531.62, 2, "1,532"),
        (6203, 0, "6,203"),
        (9999.4, 0, "9,999"),
        (59612.3, 0, "59.6k"),
        (123456, 0, "123k"),
        (999_499, 0, "999k"),
        (12_345_678, 0, "12.3M"),
    ],
)
def test_summary_numbers_are_compact(value, decimals, text):
    assert compact(value, decimals) == text
    assert len(compact(value, decimals)) <= 7
