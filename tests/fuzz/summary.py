"""Summarise a fuzz survey (GPUPOOL_FUZZ_SURVEY's JSON lines): each distinct finding once.

    python -m tests.fuzz.summary out/fuzz-soak.jsonl

A finding is a (command, property, message) triple with numbers, quoted values
and the database left out of the message, so a thousand examples of one defect
read as one line with a count and its shortest reproduction. Exit status 1 when
there is any finding.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict

_CALL = re.compile(r"^(afterwards )?`(?P<call>.*?)`: (?P<problem>.*)$", re.S)


def _command_of(call: str, fallback: str) -> str:
    """The command a call ran (``job submit``), its global options left out."""
    from tests.fuzz.drivers import DRIVERS

    padded = f" {call} "
    for command in sorted(DRIVERS, key=len, reverse=True):
        if f" {command} " in padded:
            return command
    return fallback


def finding_key(command: str, problem: str) -> tuple[str, str, str]:
    match = _CALL.match(problem)
    command = _command_of(match.group("call"), command) if match else command
    text = match.group("problem") if match else problem
    after = "afterwards: " if match and match.group(1) else ""
    kind = text.split(":", 1)[0]
    shape = re.sub(r"'[^']*'|\"[^\"]*\"|\d+(\.\d+)?(e[+-]?\d+)?", "…", text.split(":", 1)[-1])
    return command, after + kind, shape.strip()[:160]


def main(path: str) -> int:
    groups: dict[tuple, list] = defaultdict(list)
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            entry = json.loads(line)
            for problem in entry["problems"]:
                key = finding_key(entry["command"], problem)
                groups[key].append((len(entry["case"]), entry["db"], entry["case"], problem))
    for (command, kind, _shape), cases in sorted(groups.items()):
        _, dbs, case, problem = min(cases)
        databases = ", ".join(sorted({c[1] for c in cases}))
        print(f"[{command}] {kind}: {_shape} ({len(cases)}x; {databases})")
        print(f"    {case[:400]}")
        print(f"    -> {problem[:400]}")
    print(f"{len(groups)} distinct finding(s) in {path}")
    return 1 if groups else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
