import bisect
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpupool.accounting.periods import (
    PeriodSpec,
    coarsen,
    label_bounds,
    parse_instant,
    period_bounds,
    period_label,
    split,
)
from gpupool.model import GpupoolError

KINDS = ("month", "quarter", "year")


def utc(*args) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()


def test_labels_of_an_instant():
    t = utc(2026, 11, 15, 12)
    assert period_label(t, "quarter") == "2026-Q4"
    assert period_label(t, "month") == "2026-11"
    assert period_label(t, "year") == "2026"


def test_a_boundary_instant_belongs_to_the_period_starting_there():
    assert period_label(utc(2027, 1, 1), "quarter") == "2027-Q1"
    assert period_bounds(utc(2026, 12, 31, 23, 59), "quarter") == (
        utc(2026, 10, 1),
        utc(2027, 1, 1),
    )


def test_label_bounds_and_coarsen():
    assert label_bounds("2026-Q4") == (utc(2026, 10, 1), utc(2027, 1, 1))
    assert label_bounds("2026-02") == (utc(2026, 2, 1), utc(2026, 3, 1))
    assert coarsen("2026-11", "quarter") == "2026-Q4"
    assert coarsen("2026-Q4", "year") == "2026"
    with pytest.raises(GpupoolError, match="cannot be narrowed"):
        coarsen("2026-Q4", "month")
    with pytest.raises(GpupoolError, match="bad period label '2026-Q5'"):
        label_bounds("2026-Q5")


def test_split_an_interval_across_a_quarter_end():
    start, end = utc(2026, 12, 31, 22), utc(2027, 1, 1, 3)
    assert split(start, end, "quarter") == [
        ("2026-Q4", start, utc(2027, 1, 1)),
        ("2027-Q1", utc(2027, 1, 1), end),
    ]
    assert split(start, end, "year") == [
        ("2026", start, utc(2027, 1, 1)),
        ("2027", utc(2027, 1, 1), end),
    ]


def test_split_over_several_months_covers_the_interval_exactly():
    start, end = utc(2026, 1, 20), utc(2026, 5, 3)
    pieces = split(start, end, "month")
    assert [label for label, _, _ in pieces] == [
        "2026-01",
        "2026-02",
        "2026-03",
        "2026-04",
        "2026-05",
    ]
    assert pieces[0][1] == start and pieces[-1][2] == end
    assert all(a[2] == b[1] for a, b in zip(pieces, pieces[1:], strict=False))


def test_recurring_spec_keys_and_cuts():
    spec = PeriodSpec(kind="quarter", start=utc(2026, 1, 1))
    assert spec.key(utc(2026, 5, 1)) == "2026-Q2"
    assert not spec.active(utc(2025, 12, 31))
    assert spec.cuts(utc(2026, 3, 30), utc(2026, 7, 2)) == [utc(2026, 4, 1), utc(2026, 7, 1)]
    fixed = PeriodSpec(start=utc(2026, 3, 1), end=utc(2026, 4, 1))
    assert fixed.key(utc(2026, 3, 5)) == "all"
    assert fixed.cuts(utc(2026, 2, 1), utc(2026, 5, 1)) == [utc(2026, 3, 1), utc(2026, 4, 1)]


def test_bad_period_specs():
    with pytest.raises(GpupoolError, match="unknown period kind 'week'"):
        PeriodSpec(kind="week")
    with pytest.raises(GpupoolError, match="period ends before it starts"):
        PeriodSpec(start=10.0, end=5.0)


def test_parse_instant_forms():
    assert parse_instant("2026-10-01", "x") == utc(2026, 10, 1)
    assert parse_instant(dt.date(2026, 10, 1), "x") == utc(2026, 10, 1)
    assert parse_instant("2026-10-01T08:30", "x") == utc(2026, 10, 1, 8, 30)
    assert parse_instant(12.5, "x") == 12.5
    with pytest.raises(GpupoolError) as err:
        parse_instant("next tuesday", "f.yaml:3 awarded_at")
    assert err.value.location == "f.yaml:3 awarded_at"
    assert "expected a date or time" in err.value.message


def _calendar_starts(kind: str) -> list[tuple[float, str]]:
    """Every period start of ``kind`` from 1970 to 2104 with its label: exact whole seconds."""
    step = {"month": 1, "quarter": 3, "year": 12}[kind]
    starts = []
    for year in range(1970, 2105):
        for month in range(1, 13, step):
            label = {
                "year": f"{year}",
                "quarter": f"{year}-Q{(month - 1) // 3 + 1}",
                "month": f"{year}-{month:02d}",
            }[kind]
            starts.append((dt.datetime(year, month, 1, tzinfo=dt.UTC).timestamp(), label))
    return starts


STARTS = {kind: _calendar_starts(kind) for kind in KINDS}
# Month boundaries whose year still has a next year start in every calendar.
BOUNDARIES = [s for s, _ in STARTS["month"][1:] if s < STARTS["year"][-1][0]]


# Instants from 1970 to 2100 in any order, some a hair from a boundary (where
# datetime rounds to the microsecond): the lookup remembers the last period per
# kind, and must still answer as the calendar does, whatever came before.
@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.floats(0, 4_102_444_800, allow_nan=False),
                st.sampled_from(BOUNDARIES).flatmap(
                    lambda b: st.sampled_from([b, b - 5e-7, b + 5e-7, b - 1e-3])
                ),
            ),
            st.sampled_from(KINDS),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_period_lookups_match_the_calendar_in_any_order(lookups):
    for t, kind in lookups:
        starts = STARTS[kind]
        index = bisect.bisect_right([s for s, _ in starts], t) - 1
        (start, label), (end, _) = starts[index], starts[index + 1]
        assert period_bounds(t, kind) == (start, end)
        assert period_label(t, kind) == label


def test_a_boundary_right_after_a_lookup_of_the_period_before():
    assert period_label(utc(2026, 12, 31, 23, 59), "quarter") == "2026-Q4"
    assert period_label(utc(2027, 1, 1), "quarter") == "2027-Q1"
    assert period_label(utc(2027, 1, 1) - 0.001, "quarter") == "2026-Q4"
