"""Issue 15: no input from anyone can stop, corrupt or slow down the platform.

Every CLI command (the command tree is walked, so a new command without a
driver fails ``test_every_command_has_a_driver``) is driven with generated
hostile values (tests/fuzz/drivers.py) against a demo platform on SQLite and
PostgreSQL. Each call runs in a forked child bounded in time and memory
(tests/fuzz/harness.py) and must keep the properties listed there: exit 0 or
2, the documented one-line error, no traceback, bounded time and memory,
escaped output, the database unchanged on refusal, values no limit admits
refused. After any call that changed the platform, a live round and the
listings of what changed must still work (``health_steps``).

Budget: GPUPOOL_FUZZ_EXAMPLES examples per command on SQLite (default 2) and
GPUPOOL_FUZZ_EXAMPLES_POSTGRES on PostgreSQL (default 1, or GPUPOOL_FUZZ_EXAMPLES
when that is set), deterministic: CI replays the same examples every run, and
PostgreSQL's one is SQLite's first, the most hostile. scripts/fuzz-soak.sh
runs the same tests with many random examples and GPUPOOL_FUZZ_SURVEY=FILE,
which records every violated property in FILE instead of stopping at the
first one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from tests.fuzz import documents
from tests.fuzz.drivers import DRIVERS, Case, health_steps
from tests.fuzz.harness import run_step, run_steps, violations
from tests.fuzz.platform import changes

EXAMPLES = int(os.environ.get("GPUPOOL_FUZZ_EXAMPLES", "2"))
# PostgreSQL restores cost a schema each (see platform.py): in CI it replays SQLite's
# first example only, which already carries a hostile value in every strategy.
POSTGRES_EXAMPLES = int(
    os.environ.get("GPUPOOL_FUZZ_EXAMPLES_POSTGRES", os.environ.get("GPUPOOL_FUZZ_EXAMPLES", "1"))
)
SURVEY = os.environ.get("GPUPOOL_FUZZ_SURVEY")  # a JSON-lines file; set: record, never fail
RANDOM = os.environ.get("GPUPOOL_FUZZ_RANDOM") == "1"  # soak: new examples every run
SHRINK = os.environ.get("GPUPOOL_FUZZ_SHRINK") == "1"  # slow when a failure is a time-out

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM,
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=[p for p in Phase if SHRINK or p is not Phase.shrink],
)


def command_paths() -> list[str]:
    """Every leaf command of the CLI, as ``"job submit"``."""
    import typer.main

    from gpupool.cli.main import app

    def walk(command, path):
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            yield " ".join(path)
            return
        for name, sub in subcommands.items():
            yield from walk(sub, [*path, name])

    return sorted(walk(typer.main.get_command(app), []))


def test_every_command_has_a_driver():
    commands = command_paths()
    assert len(commands) > 30
    assert [c for c in commands if c not in DRIVERS] == [], "commands nobody fuzzes"
    assert [c for c in DRIVERS if c not in commands] == [], "drivers of no command"


@pytest.mark.parametrize("command", sorted(DRIVERS), ids=lambda c: c.replace(" ", "-"))
def test_no_input_breaks_the_platform(fuzz_platform, command):
    examples = POSTGRES_EXAMPLES if fuzz_platform.kind == "postgres" else EXAMPLES

    @settings(FUZZ_SETTINGS, max_examples=examples)
    @given(case=DRIVERS[command](fuzz_platform.known))
    def one_case(case: Case):
        problems = check_case(fuzz_platform, case)
        if problems and SURVEY:
            _record(fuzz_platform.kind, command, case, problems)
        elif problems:
            pytest.fail(f"{case.describe()}\n" + "\n".join(f"- {p}" for p in problems))

    one_case()


def check_case(platform, case: Case) -> list[str]:
    """Every property this case broke; the platform is put back afterwards."""
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gpupool-fuzz-") as tmp:
        documents.write_files(Path(tmp), case.files)
        before = platform.baseline
        for step in case.steps:
            outcome = run_step(platform.url, step, tmp)
            after = platform.fingerprint()
            found = violations(outcome)
            if outcome.exit_code == 2 and not outcome.timed_out:
                found += [f"database changed on refusal: {c}" for c in changes(before, after)]
            problems += [f"`{step.describe()}`: {p}" for p in found]
            before = after
        if before != platform.baseline:
            if not problems:
                problems += _health(platform, before, tmp)
            platform.restore()
    return problems


def _health(platform, after, tmp: str) -> list[str]:
    """After a change: a live round and the listings of what changed still work."""
    changed = {t for t in after if after[t] != platform.baseline.get(t)}
    problems = []
    for outcome in run_steps(platform.url, health_steps(changed), tmp):
        found = violations(outcome)
        if outcome.exit_code != 0 and not found:
            found = [f"exit {outcome.exit_code}: {outcome.stderr.strip()[:300]}"]
        problems += [f"afterwards `{outcome.step.describe()}`: {p}" for p in found]
    return problems


def _record(kind: str, command: str, case: Case, problems: list[str]) -> None:
    entry = {"db": kind, "command": command, "case": case.describe(), "problems": problems}
    with open(SURVEY, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, ensure_ascii=True) + "\n")
