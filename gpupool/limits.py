"""Domain limits: every bound on what anyone may enter, declared once, each with why.

Every entry point (the CLI options, batch files, programme, policy and
scenario documents, trace files) reads its numbers, instants and names through
this module, so one value is refused the same way wherever it comes from: a
GpupoolError naming the field, printed by the CLI as one line with exit 2,
before anything is written. docs/reliability.md ("Limits") lists them all;
tests/test_limits.py checks that it does.

The bounds keep three promises:

- storage: integers fit a signed 64-bit column (SQLite raises OverflowError
  beyond it), money fits NUMERIC(14, 2) (under 10^12) even as one quarter's
  charge of a full pool, and every instant the scheduler can compute (a job's
  deadline: start + hours / speed + grace) stays far inside what a datetime
  holds (year 9999);
- arithmetic and work: no value makes a round, a replay or a submission do
  work or hold memory out of proportion to a real platform;
- plausibility: each bound is well beyond what a real platform has, so a
  value past it is a typo or an attack, never a use.

Numbers are ASCII decimal text only: Python's int() and float() also accept
other scripts' digits (``٣``), full-width digits and ``1_000``, which a person
reading the command would not take for the number stored.

Standard library only: the CLI imports this before any command runs.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from dataclasses import dataclass

from gpupool.model import Conflict, GpupoolError

# ---------------------------------------------------------------------------
# Numeric limits
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """``low <= value <= high`` (``low < value`` when ``low_open``), whole when ``integer``."""

    label: str  # what is bounded, in the refusal: "must be at most 100,000 (GPUs per pool)"
    low: float
    high: float
    why: str
    integer: bool = False
    low_open: bool = False

    def holds(self, number: float) -> bool:
        above = number > self.low if self.low_open else number >= self.low
        return above and number <= self.high

    def check(self, number: float, location: str, shown: object = None) -> float:
        """``number`` if it is within the limit, else a GpupoolError at ``location``."""
        if self.holds(number):
            return number
        shown = number if shown is None else shown
        raise GpupoolError(
            f"must be {self.span()} ({self.label}), got {shown!r}", location=location
        )

    def span(self) -> str:
        low, high = _figure(self.low), _figure(self.high)
        if self.low_open:
            return f"more than {low} and at most {high}"
        return f"between {low} and {high}"


def _figure(value: float) -> str:
    if isinstance(value, int) or (value == int(value) and abs(value) < 1e15):
        return f"{int(value):,}"
    return f"{value:g}"


INT64_MAX = 2**63 - 1
MAX_POOL_GPUS = 100_000
MAX_JOB_HOURS = 8_760.0  # one year
MIN_SPEED = 0.01
MAX_PRICE = 1_000.0
MAX_MONEY = 100_000_000_000.0  # 10^11

GPUS_PER_JOB = Limit(
    "GPUs per job",
    1,
    MAX_POOL_GPUS,
    "no pool holds more (GPUs per pool)",
    integer=True,
)
POOL_GPUS = Limit(
    "GPUs per pool",
    1,
    MAX_POOL_GPUS,
    "the largest clusters built hold about 100,000 GPUs; every submission and round "
    "works per node of a pool, so a pool of 10^9 GPUs would slow every command",
    integer=True,
)
GPUS_PER_NODE = Limit(
    "GPUs per node",
    1,
    1_024,
    "rack-scale NVLink domains (72 GPUs) are the largest nodes sold today",
    integer=True,
)
POOL_NODES = Limit(
    "nodes per pool",
    1,
    12_500,
    "a round looks at every node of every pool for every gang it places; 12,500 nodes "
    "is 100,000 GPUs at 8 per node",
    integer=True,
)
MEMORY_GB = Limit(
    "GPU memory in GB",
    1,
    16_384,
    "the largest GPU today holds 288 GB",
    integer=True,
)
SPEED = Limit(
    "GPU speed, A100 = 1",
    MIN_SPEED,
    1_000,
    "a job runs hours / speed: with the hour limit, the slowest job still ends within a "
    "century; 1,000 times an A100 is beyond any accelerator",
)
JOB_HOURS = Limit(
    "hours per job",
    0,
    MAX_JOB_HOURS,
    "one year; a job's deadline (submitted + hours / slowest speed + the largest grace) "
    "then stays far inside the dates a database holds",
    low_open=True,
)
PRIORITY = Limit(
    "job priority",
    -1_000_000,
    1_000_000,
    "a boost added to domain weights of about 1; fits every integer column",
    integer=True,
)
PRICE = Limit(
    "price per GPU-hour",
    0,
    MAX_PRICE,
    "ten times the dearest cloud GPU today; one quarter's charge of a full pool "
    "(100,000 GPUs x 2,208 h x 1,000) stays inside the ledger's NUMERIC(14, 2)",
)
MONEY = Limit(
    "money per period",
    0,
    MAX_MONEY,
    "budgets, programme budgets and caps: 100 billion per period is beyond any platform "
    "and fits NUMERIC(14, 2) (under 10^12) with room for sums",
)
VOUCHER_HOURS = Limit(
    "voucher hours",
    0,
    1_000_000_000,
    "a year of 100,000 GPUs is 876 million GPU-hours",
)
WEIGHT = Limit(
    "weight",
    0.001,
    1_000,
    "domain and gang-size weights are relative (general = 1); a factor of 10^6 between "
    "two domains already means the lighter one never runs",
)
EXCHANGE_RATE = Limit(
    "GPU-hours per voucher hour",
    0.001,
    1_000,
    "one voucher hour buys this many GPU-hours; beyond 1,000 in either direction a voucher "
    "is worth nothing or everything",
)
POLICY_NUMBER = Limit(
    "policy setting",
    -1_000_000,
    1_000_000,
    "aging, boosts, gaps and kind options are added into priorities of about 1; a million "
    "is far beyond a useful setting and keeps sums exact",
)
GUARANTEE_GPUS = Limit(
    "guaranteed GPUs",
    0,
    10_000_000,
    "a hundred pools of the largest size",
    integer=True,
)
SOLVER_SECONDS = Limit(
    "solver seconds per round",
    0,
    3_600,
    "a round that may think for more than an hour holds the round lock that long",
    low_open=True,
)
ID = Limit(
    "id",
    1,
    INT64_MAX,
    "ids are signed 64-bit integers in SQLite and PostgreSQL",
    integer=True,
)
SEED = Limit(
    "seed",
    0,
    2**31 - 1,
    "the CP-SAT solver takes a 32-bit seed",
    integer=True,
)
SEEDS = Limit(
    "seeds per comparison",
    1,
    1_000,
    "each seed is a whole replay of every scheme",
    integer=True,
)
JOB_PAGE = Limit(
    "jobs per page",
    1,
    1_000,
    "a page is read, sent and shown whole; more come page by page (--after)",
    integer=True,
)
JOB_PAGE_DEFAULT = 100
# What a server sends back as files (policy whatif --out, report subsidies --png), in
# bytes: a response is built in memory whole; a larger window asks for a narrower one.
DOWNLOAD_BYTES = Limit(
    "bytes of files in one response",
    0,
    64 * 2**20,
    "a response is built in memory whole",
    integer=True,
)  # `job list`, GET /api/v1/jobs and the dashboard's queue without --limit
WORKERS = Limit("worker processes", 1, 1_024, "more processes than cores only waits", integer=True)
MAX_JOBS = Limit(
    "jobs replayed",
    1,
    10_000_000,
    "a replay holds every job in memory (Philly's whole trace is 117,000 jobs)",
    integer=True,
)
SWEEP_VALUES = Limit(
    "values of one sweep parameter (steps, random samples)",
    1,
    1_000,
    "each value multiplies a sweep's runs",
    integer=True,
)
SWEEP_RUNS = Limit(
    "runs in one sweep",
    1,
    10_000,
    "every run is a whole replay, and its result a file in the sweep's runs folder",
    integer=True,
)
SIM_HOURS = Limit(
    "simulated hours",
    0,
    87_600,
    "ten years: a replay (--until, synthetic hours) stays inside the supported dates",
    low_open=True,
)
RATE_PER_HOUR = Limit(
    "arrivals per hour",
    0,
    10_000,
    "a synthetic stream of more than 10,000 jobs an hour is beyond any platform",
    low_open=True,
)
SYNTHETIC_JOBS = Limit(
    "expected synthetic jobs",
    0,
    2_000_000,
    "rate x hours over all streams: every job is held in memory",
)
SIGMA = Limit(
    "log-normal sigma",
    0,
    10,
    "real traces have sigma of 1 to 3; exp(N(0, 1000)) overflows",
)
SCALE = Limit(
    "scale factor",
    0.001,
    1_000,
    "estimate factors and arrival scales multiply times; beyond 1,000 they leave the dates",
)
INTERVAL_SECONDS = Limit(
    "seconds between rounds",
    0,
    86_400,
    "a daemon sleeping more than a day between rounds is a typo (sleep overflows at 10^308)",
)
ROUNDS = Limit("rounds", 1, INT64_MAX, "a count of rounds fits a 64-bit integer", integer=True)
GRACE_PERCENT = Limit(
    "grace percentage",
    0,
    1_000,
    "a job may run at most eleven times its estimate before it times out",
)
GRACE_MINUTES = Limit(
    "grace minutes",
    0,
    525_600,
    "one year past the estimate",
)
PAYLOAD_BYTES = Limit(
    "bytes of a job's payload",
    0,
    256 * 1024,
    "a job's command, script and environment travel in every agent's pull and every "
    "`job show`; Linux itself caps a command line and its environment at 2 MiB",
    integer=True,
)
PAYLOAD_ITEMS = Limit(
    "command arguments or environment variables",
    0,
    4_096,
    "each is one line of a `job show`; real launchers pass tens",
    integer=True,
)
HEARTBEAT_SECONDS = Limit(
    "seconds an agent may go unheard",
    1,
    86_400,
    "a site unheard of for a day is lost; a shorter gap than a second is noise",
)

LIMITS: tuple[Limit, ...] = tuple(v for v in dict(globals()).values() if isinstance(v, Limit))

# ---------------------------------------------------------------------------
# Instants: the supported window
# ---------------------------------------------------------------------------

EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)  # exclusive
EARLIEST_EPOCH = EARLIEST.timestamp()
LATEST_EPOCH = LATEST.timestamp()
WINDOW_WHY = (
    "gpupool keeps no history before 1970 (epoch 0), and after 2200 a job's deadline "
    "and the next period still fit the year 9999 that dates end at"
)


def outside_window(location: str, shown: object) -> GpupoolError:
    return GpupoolError(
        f"must be from 1970-01-01 to before 2200-01-01 (UTC), got {shown!r}", location=location
    )


def check_instant(seconds: object, location: str, shown: object = None) -> float:
    """Epoch ``seconds`` if inside [1970-01-01, 2200-01-01) UTC, else a GpupoolError."""
    inside = isinstance(seconds, int | float) and not isinstance(seconds, bool)
    if inside and EARLIEST_EPOCH <= seconds < LATEST_EPOCH:
        return float(seconds)
    raise outside_window(location, seconds if shown is None else shown)


def check_moment(moment: dt.datetime, location: str, shown: object = None) -> dt.datetime:
    """``moment`` (UTC when naive) if inside the supported window, else a GpupoolError."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
    try:
        inside = EARLIEST <= aware < LATEST
    except OverflowError:  # a zone offset takes a datetime near year 1 or 9999 out of range
        inside = False
    if not inside:
        raise outside_window(location, moment.isoformat() if shown is None else shown)
    return aware


def check_year(year: int, location: str, shown: object = None) -> int:
    """A calendar year whose periods lie inside the supported window."""
    if not EARLIEST.year <= year < LATEST.year:
        raise outside_window(location, year if shown is None else shown)
    return year


# ---------------------------------------------------------------------------
# The one number parser
# ---------------------------------------------------------------------------

MAX_NUMBER_TEXT = 40
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)


def to_number(value: object) -> int | float | None:
    """``value`` as an int or a finite float, or None when it is not a plain number.

    Accepts ints, finite floats and ASCII decimal text (``12``, ``-3``, ``2.5``,
    ``1e3``); refuses bools, NaN and infinities, other scripts' digits,
    underscores, hex, and text longer than 40 characters (so no string of
    thousands of digits is ever converted).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if len(text) > MAX_NUMBER_TEXT:
        return None
    if _INTEGER.fullmatch(text):
        return int(text)
    if _DECIMAL.fullmatch(text):
        number = float(text)
        return number if math.isfinite(number) else None
    return None


def is_real(value: object) -> bool:
    """Whether a value read from YAML or JSON is a number: an int or a float, not a
    bool and not NaN. Infinities pass, for the Limit that bounds the field to refuse
    with its range. Text is never a number here (``to_number`` reads text)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def read(value: object, limit: Limit, location: str, kind: str | None = None) -> int | float:
    """``value`` as a number within ``limit``; the error names ``location``.

    ``kind`` words the refusal of a value that is no number at all (or not a
    whole one for an integer limit), e.g. "a positive whole number".
    """
    number = to_number(value)
    if number is not None and limit.integer:
        number = int(number) if number == int(number) else None
    if number is None:
        expected = kind or ("a whole number" if limit.integer else "a number")
        raise GpupoolError(f"must be {expected}, got {value!r}", location=location)
    return limit.check(number, location, value)


# ---------------------------------------------------------------------------
# Names and other text
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TextLimit:
    label: str
    length: int
    why: str


NAME = TextLimit(
    "name",
    64,
    "names of GPU types, pools, sites, vendors, domains, organisations, users, programmes "
    "and scenarios fit every name column and a terminal table",
)
JOB_NAME = TextLimit("job name", 128, "room for a descriptive name; fits the jobs.name column")
COMMENT = TextLimit("comment", 500, "policy comments and descriptions are one line of prose")
PATH = TextLimit("path", 4_096, "Linux's PATH_MAX: a job's working directory and output files")
IMAGE = TextLimit("container image", 512, "a registry host, a repository path and a digest")
TEXT_LIMITS: tuple[TextLimit, ...] = (NAME, JOB_NAME, COMMENT, PATH, IMAGE)

# Unicode categories refused in names: controls (Cc: newlines, ANSI escapes),
# format characters (Cf: bidi overrides, zero-width spaces and joiners, BOM),
# line and paragraph separators, surrogates, private use and unassigned code points.
_REFUSED_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


def normalise(text: str) -> str:
    """NFKC, surrounding white space removed: the form names are stored and looked up in."""
    return unicodedata.normalize("NFKC", text).strip()


def fold(text: str) -> str:
    """The form two names are compared in for uniqueness: NFKC, then case-folded."""
    return unicodedata.normalize("NFKC", normalise(text).casefold())


def check_text(
    value: object, location: str, limit: TextLimit = NAME, *, allow_empty: bool = False
) -> str:
    """``value`` as printable single-line text of at most ``limit.length`` characters,
    NFKC-normalised and stripped; else a GpupoolError naming ``location``."""
    if not isinstance(value, str):
        raise GpupoolError(f"must be text, got {value!r}", location=location)
    text = normalise(value)
    if not text:
        if allow_empty:
            return ""
        raise GpupoolError("must not be empty", location=location)
    if len(text) > limit.length:
        raise GpupoolError(
            f"must be at most {limit.length} characters ({limit.label}), got {len(text)}",
            location=location,
        )
    for char in text:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            code = f"U+{ord(char):04X}"
            name = unicodedata.name(char, "a control character")
            raise GpupoolError(
                f"must be printable text on one line; it holds {code} ({name})",
                location=location,
            )
    return text


def check_unique(name: str, existing, what: str, location: str) -> None:
    """Refuse ``name`` if one of ``existing`` names is the same once case-folded."""
    key = fold(name)
    for other in existing:
        if fold(other) == key:
            same = "" if other == name else f" (as {other!r}: names differ only in case or form)"
            article = "an" if what[:1] in "aeio" else "a"  # a user, an organisation
            message = f"{article} {what} named {name!r} already exists{same}"
            raise Conflict(message, location=location)
