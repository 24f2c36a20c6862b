"""The fuzz harness catches each kind of violation it claims to (no database needed).

A stand-in typer app replaces gpupool's for the forked child (the fork copies
the monkeypatched module), with one command per misbehaviour: hang, grow, print
escapes, print two error lines, crash, exit 1. Each must be judged a violation
of the matching property, and a well-behaved refusal must not.
"""

from __future__ import annotations

import sys
import time

import pytest
import typer

from tests.fuzz import harness
from tests.fuzz.harness import BATCH, DOCUMENT, Outcome, Step, run_step, violations
from tests.fuzz.platform import changes

bad = typer.Typer()


@bad.callback()
def _options(db: str = typer.Option(None, "--db"), user: str = typer.Option(None, "--as")):
    pass


@bad.command()
def hang() -> None:
    time.sleep(60)


@bad.command()
def grow() -> None:
    hoard = [bytearray(2**20) for _ in range(2_000)]  # 2 GB, past the address-space limit
    print(len(hoard))


@bad.command()
def escape() -> None:
    print("name: \x1b[31mred\u202e")


@bad.command()
def two_lines() -> None:
    print("error: one\nerror: two", file=sys.stderr)
    raise typer.Exit(2)


@bad.command()
def refuse() -> None:
    print("error: --gpus: must be a positive whole number, got '٣'", file=sys.stderr)
    raise typer.Exit(2)


@bad.command()
def crash() -> None:
    raise ValueError("year 10000 is out of range")


@bad.command()
def accept() -> None:
    print("added")


@pytest.fixture
def judged(monkeypatch, tmp_path):
    monkeypatch.setattr("gpupool.cli.main.app", bad)

    def judge(command: str, seconds: float = 30.0, **step) -> tuple[Outcome, list[str]]:
        monkeypatch.setattr(harness, "TIMEOUT_S", seconds)
        outcome = run_step("sqlite://", Step((command,), **step), str(tmp_path), seconds)
        return outcome, violations(outcome)

    return judge


def test_a_hang_is_killed_at_the_time_bound(judged):
    started = time.monotonic()
    outcome, found = judged("hang", seconds=2.0)
    assert outcome.timed_out and time.monotonic() - started < 10
    assert [f.split(":")[0] for f in found] == ["time"]


def test_unbounded_memory_is_stopped_and_named(judged):
    _, found = judged("grow")
    assert found and found[0].startswith("memory:"), found


def test_raw_escapes_in_output_are_named(judged):
    _, found = judged("escape")
    assert found == ["escaping: printed the raw control character '\\x1b'"]


def test_a_crash_is_a_traceback_and_exit_1(judged):
    _, found = judged("crash")
    assert found == [
        "traceback: exception escaped the command: ValueError: year 10000 is out of range",
        "exit: exit code 1",
    ]


def test_two_error_lines_are_one_too_many_except_for_a_batch(judged):
    _, found = judged("two-lines")
    assert found and found[0].startswith("stderr: 2 lines on stderr")
    _, found = judged("two-lines", shape=BATCH)
    assert found and found[0].startswith("stderr:"), "a batch refusal ends with its summary"


def test_a_one_line_refusal_keeps_every_property(judged):
    outcome, found = judged("refuse", refuse="--gpus non-ASCII digits")
    assert (outcome.exit_code, found) == (2, [])


def test_accepting_what_must_be_refused_is_named(judged):
    _, found = judged("accept", refuse="--gpus non-ASCII digits in '٣'")
    assert found == ["limits: accepted --gpus non-ASCII digits in '٣'"]


def test_document_shape_names_the_document():
    step = Step(("policy", "validate"), shape=DOCUMENT, document="p.yaml")
    good = "p.yaml:3 aging: merge keys (<<) are not allowed\np.yaml:9 seed: must be >= 0\n"
    assert harness.stderr_shape_problem(good, step) is None
    assert harness.stderr_shape_problem(good + '  in "<unicode string>"\n', step)


def test_changes_leave_out_only_a_denied_audit_row():
    before = {"jobs": ("{'id': 1}",), "audit_log": ()}
    denied = {"jobs": ("{'id': 1}",), "audit_log": ("{'id': 7, 'outcome': 'denied'}",)}
    written = {"jobs": ("{'id': 1}", "{'id': 2}"), "audit_log": ()}
    assert changes(before, denied) == []
    assert changes(before, written) == ["jobs: +1 -0 row(s), e.g. {'id': 2}"]
