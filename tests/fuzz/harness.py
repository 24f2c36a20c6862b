"""Run one CLI call in a forked child, bounded in time and memory, and judge it.

Why a fork and not plain CliRunner in the test process: a hostile input may
hang (a FIFO), or grow without bound (a YAML alias bomb); in-process that would
take the test run down with it. The child inherits every module the parent
already imported (so a call costs milliseconds, not an interpreter start), sets
RLIMIT_AS, runs typer's CliRunner on ``gpupool.cli.main.app`` and hands back
exit code, stdout, stderr, any escaped exception and its peak memory. The
parent kills it at the time bound.

The properties every call must keep (``violations``):

- exit code 0 or 2, no other, not killed, not past the time bound;
- no ``Traceback`` in stdout or stderr, no exception escaping the command;
- on exit 2, stderr in one of the documented shapes: one non-empty line
  ``error: ...`` (after the log lines `scheduler run` and `schedule` write);
  a batch file's ``error: FILE:LINE ...`` per bad row then ``error: N bad
  row(s) in FILE; nothing submitted``; a policy document's ``FILE:LINE
  field: message`` per problem;
- memory: peak resident growth within the bound, no MemoryError;
- no terminal control characters (ESC, C0 other than tab/newline, DEL, C1,
  bidi overrides and isolates) in what it printed: user text must be escaped
  (``--json`` output must instead parse as JSON, whose escaping is its own);
- on exit 2 the database is unchanged (a refused permission may add its
  ``denied`` audit row, which is the documented trace of a refusal);
- a value that no sane limit admits (``Step.refuse``) is refused with exit 2.
"""

from __future__ import annotations

import json
import os
import re
import resource
import select
import signal
import tempfile
import time
import traceback
from dataclasses import dataclass, field

# Bounds: generous, the machines running this are shared and loaded. They are
# hang and blow-up detectors, not speed goals (those live in benchmarks/).
TIMEOUT_S = float(os.environ.get("GPUPOOL_FUZZ_TIMEOUT", "60"))
MEMORY_MB = int(os.environ.get("GPUPOOL_FUZZ_MEMORY_MB", "512"))
# The hard stop on address space, above the measured bound: the call fails with
# MemoryError there instead of swapping the machine.
ADDRESS_SPACE_HEADROOM_MB = MEMORY_MB * 2

CONFIG_HOME = "xdg-config"  # the child's XDG_CONFIG_HOME, under the case's directory
ONE_LINE = "one-line"
BATCH = "batch"
DOCUMENT = "document"

# Printed text must not carry these: they come only from user data (CliRunner is
# no terminal, so rich itself emits no escape sequences).
_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"  # C0 (not \t \n), DEL, C1, bidi
)
# the daemon's and `schedule`'s documented log lines (one per round, on stderr)
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING) ")
_BATCH_SUMMARY = re.compile(r"^error: (\d+) bad row\(s\) in .*; nothing submitted$")


@dataclass(frozen=True)
class Step:
    """One CLI call: ``gpupool --db URL --as ACTOR *argv``."""

    argv: tuple[str, ...]
    actor: str | None = "admin"  # None: the platform owner (no --as), always an admin
    db: str | None = None  # None: the platform under test
    shape: str = ONE_LINE  # what stderr may look like on exit 2
    refuse: str | None = None  # why this call must be refused (a value no limit admits)
    document: str | None = None  # the document path a DOCUMENT-shaped error names

    def describe(self) -> str:
        who = "" if self.actor is None else f"--as {_shell_word(self.actor)} "
        db = "" if self.db is None else f"--db {self.db!r} "
        return db + who + " ".join(_shell_word(a) for a in self.argv)


def _shell_word(text: str) -> str:
    shown = repr(text) if not re.fullmatch(r"[\w@%+=:,./-]+", text) else text
    return shown if len(shown) <= 120 else shown[:100] + f"...<{len(text)} chars>"


@dataclass
class Outcome:
    step: Step
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    exception: str | None = None  # formatted traceback of an exception the CLI let escape
    error: str | None = None  # that exception in one line: its type and first message line
    wall_s: float = 0.0
    rss_growth_mb: float = 0.0
    timed_out: bool = False
    signal: int | None = None  # the child died of this signal
    extra: list[Outcome] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Running a call
# ---------------------------------------------------------------------------


def run_steps(url: str, steps: list[Step], cwd: str, timeout_s: float = TIMEOUT_S) -> list[Outcome]:
    """Every step in one forked child, in order (the health check's several reads).

    The child may run ``timeout_s`` per step; ``violations`` judges each step's own time.
    """
    handle, payload = tempfile.mkstemp(prefix="fuzz-outcome-", suffix=".json", dir=cwd)
    os.close(handle)
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        _child(url, steps, cwd, payload)
    status, timed_out = _wait(pid, timeout_s * len(steps))
    wall = time.monotonic() - started
    try:
        with open(payload, encoding="utf-8") as handle:
            results = json.load(handle)
    except (OSError, ValueError):
        results = []
    finally:
        os.unlink(payload)
    outcomes = []
    for index, step in enumerate(steps):
        if index < len(results):
            outcome = Outcome(step=step, **results[index])
        else:  # the child died or was killed during this step (or before)
            outcome = Outcome(step=step, timed_out=timed_out, wall_s=wall)
            if not timed_out and os.WIFSIGNALED(status):
                outcome.signal = os.WTERMSIG(status)
            elif not timed_out:
                outcome.exit_code = os.WEXITSTATUS(status)
                outcome.exception = "the child process ended without reporting"
            outcomes.append(outcome)
            break
        outcomes.append(outcome)
    return outcomes


def run_step(url: str, step: Step, cwd: str, timeout_s: float = TIMEOUT_S) -> Outcome:
    return run_steps(url, [step], cwd, timeout_s)[0]


def _wait(pid: int, timeout_s: float) -> tuple[int, bool]:
    """(wait status, killed at the time bound)."""
    deadline = time.monotonic() + timeout_s
    fd = os.pidfd_open(pid)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                return status, True
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                _, status = os.waitpid(pid, 0)
                return status, False
    finally:
        os.close(fd)


def _child(url: str, steps: list[Step], cwd: str, payload_path: str) -> None:
    code = 0
    try:
        os.setsid()  # a stray SIGINT to the test run's group is not ours
        os.chdir(cwd)
        # `login` and `logout` write and remove a saved login: only the case's own, never
        # the user's; and no server configured outside the test reaches a call
        os.environ["XDG_CONFIG_HOME"] = os.path.join(cwd, CONFIG_HOME)
        for name in ("GPUPOOL_URL", "GPUPOOL_TOKEN", "GPUPOOL_DATABASE_URL", "GPUPOOL_USER"):
            os.environ.pop(name, None)
        baseline_kb = _rss_kb()
        limit = _address_space_kb() * 1024 + ADDRESS_SPACE_HEADROOM_MB * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        results = []
        for step in steps:
            results.append(_invoke(url, step, baseline_kb))
            _write_payload(payload_path, results)
    except BaseException:  # the harness itself failed: say so, never fall back into pytest
        traceback.print_exc()
        code = 70
    finally:
        os._exit(code)


def _write_payload(path: str, results: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(results, handle, ensure_ascii=True)


def _invoke(url: str, step: Step, baseline_kb: int) -> dict:
    from typer.testing import CliRunner

    from gpupool.cli.main import app

    who = [] if step.actor is None else ["--as", step.actor]
    argv = ["--db", step.db if step.db is not None else url, *who, *step.argv]
    started = time.monotonic()
    result = CliRunner().invoke(app, argv, catch_exceptions=True)
    wall = time.monotonic() - started
    exception = error = None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        exception = "".join(traceback.format_exception(result.exception))
        error = _one_line(result.exception)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "exit_code": result.exit_code,
        "stdout": _bounded(result.stdout),
        "stderr": _bounded(result.stderr),
        "exception": exception,
        "error": error,
        "wall_s": round(wall, 3),
        "rss_growth_mb": round(max(0, peak_kb - baseline_kb) / 1024, 1),
    }


def _one_line(exc: BaseException) -> str:
    kind = type(exc)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    lines = str(exc).strip().splitlines()
    return f"{name}: {lines[0]}" if lines else name


def _bounded(text: str, limit: int = 2_000_000) -> str:
    """Enough of an output to judge (a listing of 100,000-character names is long)."""
    if len(text) <= limit:
        return text
    return (
        text[: limit // 2] + f"\n...<{len(text) - limit} characters cut>...\n" + text[-limit // 2 :]
    )


def _status_kb(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _rss_kb() -> int:
    return _status_kb("VmRSS")


def _address_space_kb() -> int:
    return _status_kb("VmSize")


# ---------------------------------------------------------------------------
# Judging a call
# ---------------------------------------------------------------------------


def violations(outcome: Outcome) -> list[str]:
    """Which of the properties this call broke (the database is judged apart)."""
    step = outcome.step
    if outcome.timed_out:
        return [f"time: still running after {TIMEOUT_S:g} s (killed)"]
    if outcome.wall_s > TIMEOUT_S:
        return [f"time: took {outcome.wall_s:.0f} s (bound {TIMEOUT_S:g} s)"]
    if outcome.signal is not None:
        return [f"crash: the call died of signal {signal.Signals(outcome.signal).name}"]
    found = []
    if outcome.exception is not None:
        error = outcome.error or outcome.exception.strip().splitlines()[-1]
        kind = "memory" if error.startswith("MemoryError") else "traceback"
        found.append(f"{kind}: exception escaped the command: {error[:300]}")
    elif "Traceback (most recent call last)" in outcome.stdout + outcome.stderr:
        found.append("traceback: a traceback was printed")
    if outcome.exit_code not in (0, 2):
        found.append(f"exit: exit code {outcome.exit_code}")
    if outcome.rss_growth_mb > MEMORY_MB:
        found.append(f"memory: grew {outcome.rss_growth_mb:.0f} MB (bound {MEMORY_MB} MB)")
    as_json = "--json" in step.argv and outcome.exit_code == 0
    printed = outcome.stderr if as_json else outcome.stdout + outcome.stderr
    control = _CONTROL.search(printed)
    if control is not None:
        found.append(f"escaping: printed the raw control character {control.group()!r}")
    if as_json and not _is_json(outcome.stdout):
        found.append(f"output: --json printed no JSON: {outcome.stdout[:200]!r}")
    if outcome.exit_code == 2 and outcome.exception is None:
        shape = stderr_shape_problem(outcome.stderr, step)
        if shape:
            found.append(f"stderr: {shape}")
    if outcome.exit_code == 0 and step.refuse:
        found.append(f"limits: accepted {step.refuse}")
    return found


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def stderr_shape_problem(stderr: str, step: Step) -> str | None:
    """None when stderr is one of the shapes allowed for this command's refusals."""
    lines = stderr.rstrip("\n").split("\n") if stderr.strip() else []
    if step.argv[:2] == ("scheduler", "run") or step.argv[:1] == ("schedule",):
        lines = [line for line in lines if not _LOG_LINE.match(line)]
    if not lines:
        return "exit 2 with nothing on stderr"
    if len(lines) == 1 and _is_error_line(lines[0]):
        return None
    if step.shape == BATCH and all(_is_error_line(line) for line in lines):
        summary = _BATCH_SUMMARY.match(lines[-1])
        if summary and int(summary.group(1)) == len(lines) - 1:
            return None
    if step.shape == DOCUMENT and step.document and len(lines) <= 100:
        named = (step.document + ":", "error: ")
        if all(line.startswith(named) and line.strip() for line in lines):
            return None
    if len(lines) == 1:
        return f"not an 'error: ...' line: {lines[0]!r:.200}"
    shown = " | ".join(line[:120] for line in lines[:4])
    return f"{len(lines)} lines on stderr: {shown!r:.400}"


def _is_error_line(line: str) -> bool:
    return line.startswith("error: ") and len(line.strip()) > len("error:")
