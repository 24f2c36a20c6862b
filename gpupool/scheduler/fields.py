"""Numbers read from user input, each error naming the field it checks.

The service layer and the accounting operations (gpupool.scheduler.accounts)
both read numbers this way; limits live in gpupool.limits.
"""

from __future__ import annotations

from gpupool import limits
from gpupool.model import GpupoolError


def positive_int(value: object, location: str, limit: limits.Limit = limits.ID) -> int:
    """A whole number > 0 written in ASCII digits, within ``limit`` (gpupool.limits)."""
    number = limits.to_number(value)
    if number is None or number <= 0 or number != int(number):
        raise GpupoolError(f"must be a positive whole number, got {value!r}", location=location)
    return int(limit.check(int(number), location, value))


def positive_float(
    value: object,
    location: str,
    what: str = "a positive number",
    limit: limits.Limit | None = None,
) -> float:
    """A number > 0 within ``limit`` (None: any finite number)."""
    number = limits.to_number(value)
    if number is None or number <= 0:
        raise GpupoolError(f"must be {what}, got {value!r}", location=location)
    return float(number if limit is None else limit.check(number, location, value))


def non_negative_float(value: object, location: str, limit: limits.Limit | None = None) -> float:
    """A number >= 0 within ``limit`` (None: any finite number)."""
    number = limits.to_number(value)
    if number is None:
        raise GpupoolError(f"must be a number, got {value!r}", location=location)
    if number < 0:
        raise GpupoolError(f"must be zero or more, got {value!r}", location=location)
    return float(number if limit is None else limit.check(number, location, value))


def whole_number(value: object, location: str, limit: limits.Limit) -> int:
    """A whole number (of any sign) in ASCII digits, within ``limit``."""
    return int(limits.read(value, limit, location))
