import pytest

from gpupool.accounting.books import LedgerEntry
from gpupool.accounting.guarantees import UsageRecord, guarantee_deficit, records_from_entries
from gpupool.accounting.periods import label_bounds
from gpupool.model import GpupoolError

HOUR = 3600.0
Q4, _ = label_bounds("2026-Q4")


def test_deficit_against_the_usage_of_the_quarter():
    records = [
        UsageRecord("medical", Q4, Q4 + 10 * HOUR, 100.0),
        UsageRecord("science", Q4, Q4 + 10 * HOUR, 300.0),
        # half of this job ran in Q3: only 50 counts
        UsageRecord("science", Q4 - 5 * HOUR, Q4 + 5 * HOUR, 100.0),
    ]
    # whole = 100 + 300 + 50 = 450; medical is owed 25% = 112.5, has 100
    deficit = guarantee_deficit(
        records, {"medical": 0.25, "education": 0.1}, "quarter", Q4 + 10 * HOUR
    )
    assert deficit == {"education": pytest.approx(45.0), "medical": pytest.approx(12.5)}


def test_sliding_window_and_capacity():
    records = [UsageRecord("medical", 0.0, 10 * HOUR, 50.0)]
    # last 4 h: medical used 20; platform offers 40 effective GPU-hours per hour -> 160
    deficit = guarantee_deficit(
        records, {"medical": 0.5}, 4 * HOUR, 10 * HOUR, capacity_per_hour=40
    )
    assert deficit == {"medical": pytest.approx(60.0)}


def test_ledger_entries_as_records():
    entries = [
        LedgerEntry(
            kind="charge",
            org="a",
            domain="medical",
            period="2026-Q4",
            at=Q4 + HOUR,
            effective_gpu_hours=8,
        ),
        LedgerEntry(
            kind="award", org="a", domain="medical", period="2026-Q4", at=Q4, effective_gpu_hours=99
        ),
    ]
    records = records_from_entries(entries)
    assert records == [UsageRecord("medical", Q4 + HOUR, Q4 + HOUR, 8.0)]
    assert guarantee_deficit(records, {"medical": 1.0}, "quarter", Q4 + 2 * HOUR) == {
        "medical": 0.0
    }


def test_bad_guarantees():
    with pytest.raises(GpupoolError) as err:
        guarantee_deficit([], {"medical": 0.7, "science": 0.5}, "quarter", Q4)
    assert (err.value.location, err.value.message) == (
        "guarantees",
        "guaranteed shares add up to more than 1",
    )
    with pytest.raises(GpupoolError, match="a guarantee window is month, quarter, year or seconds"):
        guarantee_deficit([], {}, "week", Q4)
