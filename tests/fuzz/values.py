"""Hostile values for command-line options, each knowing whether it must be refused.

A ``Value`` is the text given on the command line and, when no sane limit could
admit it, why (``refuse``): a number with non-ASCII digits or an underscore, a
non-finite or astronomically large number, a name with control, bidi or
zero-width characters or thousands of characters long; and, for an option whose
bound gpupool.limits declares, any value that bound does not admit (the limits
are declared once and must hold at every entry). Values that a platform
may accept or refuse (a 300-character name, 10^9 GPUs, the year 9999) carry no
``refuse``: for those only the general properties apply (exit 0 or 2, one line,
no traceback, bounded, and the platform still working afterwards).

Each strategy mixes plausible values (so commands also succeed and store
things) with hostile ones, drawn mostly from the curated lists below (the
reproductions in issue 15 and their neighbours) and sometimes generated. The
hostile branches come first: Hypothesis starts from the simplest example, so
even a budget of two examples tries a hostile value first.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass

from hypothesis import strategies as st


@dataclass(frozen=True)
class Value:
    text: str
    refuse: str | None = None  # why no limit admits it


def value(text: str, refuse: str | None = None) -> Value:
    return Value(text, refuse)


# ---------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------

MARKUP = [
    "[/]",
    "[bold]loud[/bold]",
    "[link=file:///etc/passwd]click me[/link]",
    "[link=https://evil.example]x[/]",
    "[red",
    "x[/x]",
    "\\[escaped]",
    "[blink][reverse]",
    ":warning: :smiley:",
    "[@click=app.quit]q[/]",
]
CONTROL = [
    "\x1b[31mred\x1b[0m",
    "\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\",
    "\x1b[2J\x1b[H",
    "\u202eevil\u202c",
    "\u2066isolate\u2069",
    "pumc\u200bhospital",
    "\ufeffbom",
    "zw\u200dj",
    "line1\nline2",
    "cr\roverwrite",
    "bell\x07",
    "nul\x00x",
    "del\x7f",
    "c1\x85x",
    "tab\there",
    "bad-utf8-\udc80\udcff",  # what a shell gives Python for invalid UTF-8 in argv
]
ODD = [
    "",
    " ",
    "  padded  ",
    "PUMC-HOSPITAL",
    "pumc-hospital ",
    "ｐｕｍｃ-hospital",
    "é",
    "🙂",
    "%s%n%x",
    "{0}{name}",
    "'; DROP TABLE jobs; --",
    "../../../etc/passwd",
    "-rf",
    "--help",
    "null",
    "~",
    "a" * 65,
    "a" * 300,
]
HUGE = ["n" * 5_000, "[" * 20_000, "x" * 100_000]


def _text_refusal(text: str) -> str | None:
    """Why a name or other single-line field must refuse ``text`` (None: may accept).

    Whitespace around a name (a trailing CR or tab) may be stripped instead."""
    text = text.strip()
    if len(text) > 1_000:
        return f"a {len(text):,}-character name"
    for char in text:
        category = unicodedata.category(char)
        if category in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            return f"a name holding {char!r}"
    return None


def _with_refusal(text: str, refusable: bool) -> Value:
    return Value(text, _text_refusal(text) if refusable else None)


def hostile_text(plain: list[str] | None = None, *, name: bool = True) -> st.SearchStrategy[Value]:
    """Text for a name-like field: ``plain`` good values mixed with hostile ones.

    ``name``: the field is a name (single line, printable); otherwise free text
    such as a comment, where only the general properties apply.
    """
    nasty = MARKUP + CONTROL + ODD + HUGE
    pieces = st.sampled_from(MARKUP + CONTROL + ["", "x", "pumc-hospital"])
    composed = st.tuples(pieces, pieces).map(lambda pair: pair[0] + "-" + pair[1])
    generated = st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40
    )
    options = [st.sampled_from(nasty), composed, generated]
    if plain:
        options.append(st.sampled_from(plain))
    return st.one_of(options).map(lambda text: _with_refusal(text, name))


# ---------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------

ASTRONOMICAL = 1e15  # beyond any platform's GPUs, hours, money or counts

NOT_ASCII_NUMBERS = [
    "٣",
    "１",
    "३",
    "٣٣",
    "1٣",
    "１０",
    "⁵",
    "Ⅻ",
    "½",
    "1_000",
    "0x10",
    "1e",
    "--1",
]
SPECIAL_FLOATS = ["nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-1e309"]
HUGE_NUMBERS = [
    "1e308",
    "1e304",
    "1e30",
    "1e20",
    "1e16",
    str(2**63 - 1),
    str(2**63),
    str(2**64),
    str(-(2**63) - 1),
    "1" + "0" * 400,
    "9" * 4300,  # past Python's default int-string conversion limit
]
SMALL = ["0", "-0", "-1", "-1e-300", "1e-300", "5e-324", "1e-30", "0.0000001", "0.5", "0.004"]
LARGE = ["1e6", "1e7", "7e7", "1e8", "1e9", "1000000000", "99999999999"]
SHAPES = ["", " ", " 3 ", "3.0", "3.5", "+5", "1,000", "1e2", "3\n", "0003", "00", "-"]


def _number_refusal(text: str) -> str | None:
    stripped = text.strip()
    if any(char.isdigit() and not ("0" <= char <= "9") for char in text):
        return f"non-ASCII digits in {text!r}"
    if "_" in stripped:
        return f"an underscore in the number {text!r}"
    if len(stripped) > 400:
        return f"a {len(stripped)}-digit number"
    try:
        number = float(stripped)
    except ValueError:
        return None  # not a number at all: refused as such, which the exit code shows
    if not math.isfinite(number):
        return f"the non-finite number {text!r}"
    if abs(number) >= ASTRONOMICAL:
        return f"the astronomical number {text!r}"
    return None


def _limit_refusal(text: str, limit) -> str | None:
    """Why an option bounded by ``limit`` (a gpupool.limits.Limit) must refuse ``text``:
    it is not a plain ASCII number, not whole where a whole one goes, or outside."""
    from gpupool import limits

    if not text.strip():
        return None  # an empty option may mean "none" (no budget, no cap)
    number = limits.to_number(text)
    if number is None:
        return f"{text[:60]!r}, not a plain number ({limit.label})"
    if limit.integer and number != int(number):
        return f"{text!r}, not a whole number ({limit.label})"
    if not limit.holds(number):
        return f"{text!r}, outside the declared limit on {limit.label}"
    return None


def hostile_number(plain: list[str], limit=None) -> st.SearchStrategy[Value]:
    """A number field: ``plain`` good values, or a hostile number. With ``limit`` (the
    gpupool.limits.Limit declared for the field), a value it does not admit must be refused."""
    pools = NOT_ASCII_NUMBERS + SPECIAL_FLOATS + HUGE_NUMBERS + SMALL + LARGE + SHAPES
    generated = st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
    )
    return st.one_of(st.sampled_from(pools), generated, st.sampled_from(plain)).map(
        lambda text: Value(
            text, _number_refusal(text) or (_limit_refusal(text, limit) if limit else None)
        )
    )


# ---------------------------------------------------------------------------
# Dates, periods, durations
# ---------------------------------------------------------------------------

INSTANTS = [
    "9999-12-31T23:59:59",
    "9999-12-31T23:59:59+00:00",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31",
    "0001-01-01",
    "0001-01-01T00:00:00+14:00",
    "1970-01-01T00:00:00Z",
    "1900-01-01",
    "2026-02-30",
    "2026-11-02T25:00",
    "2026-11-02T10:00:00+05:30",
    "2026-11-02T10:00:00Z",
    "2026-11-02 10:00",
    "2030-01-01T00:00:00+23:59",
    "2026-W45",
    "20261102",
    "2026-11-02T10:00:00.123456789",
    "२०२६-११-०२",
    "now",
    "",
]
PERIODS = [
    "9999-Q4",
    "0001-Q1",
    "0000-Q1",
    "10000-Q1",
    "2026-Q5",
    "2026-Q0",
    "2026-13",
    "2026-00",
    "9999-12",
    "9999",
    "0001",
    "99999999999",
    "-2026",
    "2026-Q٣",
    "quarterly",
    "monthly",
    "yearly",
    "weekly",
    "",
]
DURATIONS = [
    "99999999999w",
    "99999999999999999999h",
    "1e308d",
    "1e15h",
    "infd",
    "nand",
    "-1d",
    "0d",
    "0",
    "٣d",
    "１h",
    "10000y",
    "30d",
    "12h",
    "2w",
    "d",
    "",
]
GRACES = [
    "10%+5m",
    "20%",
    "15m",
    "1h+5%",
    "0",
    "1e308%",
    "1e308m",
    "99999999999999999999h",
    "-5%",
    "inf%",
    "nan%",
    "٣m",
    "1_0%",
    "10%+5m+10%+5m+10%+5m",
    "%",
    "+",
    "5",
    "",
]


def _date_refusal(text: str) -> str | None:
    if any(char.isdigit() and not ("0" <= char <= "9") for char in text):
        return f"non-ASCII digits in {text!r}"
    return None


def hostile_instant(plain: list[str]) -> st.SearchStrategy[Value]:
    return st.sampled_from(INSTANTS + plain).map(lambda t: Value(t, _date_refusal(t)))


def hostile_period(plain: list[str]) -> st.SearchStrategy[Value]:
    return st.sampled_from(PERIODS + plain).map(lambda t: Value(t, _date_refusal(t)))


def hostile_duration(plain: list[str]) -> st.SearchStrategy[Value]:
    return st.sampled_from(DURATIONS + plain).map(lambda t: Value(t, _date_refusal(t)))


def hostile_grace() -> st.SearchStrategy[Value]:
    return st.sampled_from(GRACES).map(lambda t: Value(t, _number_refusal_in(t)))


def _number_refusal_in(text: str) -> str | None:
    if any(char.isdigit() and not ("0" <= char <= "9") for char in text):
        return f"non-ASCII digits in {text!r}"
    if "_" in text:
        return f"an underscore in {text!r}"
    return None


def choice(plain: list[str], extra: list[str] | None = None) -> st.SearchStrategy[Value]:
    """A word from a closed set (a role, a state, --by), or a hostile word."""
    nasty = ["", " ", "ADMIN", "admin ", "[/]", "\x1b[31m", "a" * 300, "ａｄｍｉｎ", *(extra or [])]
    return st.one_of(st.sampled_from(nasty), st.sampled_from(plain)).map(Value)
