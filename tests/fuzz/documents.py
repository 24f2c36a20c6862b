"""Hostile documents: policy, scenario, programme and batch files, traces, special files.

A ``Doc`` is the files one call needs (written into the example's own
directory) and the path the command is given. Documents start from a valid one
and get one hostile edit:

- YAML: a leaf replaced by a raw YAML snippet (``.inf``, ``1.0e+30``, a
  400-digit integer, ``'٣'``, ``[/]``, a tag, a list where a number goes), a
  key renamed to hostile text, a merge key, a duplicate key, 5,000-level
  nesting, an alias bomb, a BOM, a NUL, bytes that are not UTF-8, or a
  line-level mutation;
- CSV: a cell replaced by a hostile value, duplicate columns, a BOM, a
  200,000-character field, an unbalanced quote, a NUL, a time zone in a trace
  timestamp;
- instead of a regular file: a FIFO, a link to /dev/zero, a 4 GiB sparse file,
  a directory, nothing at all.

``refuse`` says why the document must be refused whatever the limits are
(a bomb, a duplicate key, a FIFO, a number no limit admits where the valid
document had a number).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from hypothesis import strategies as st

from tests.fuzz.values import (
    CONTROL,
    MARKUP,
    _number_refusal,
    _text_refusal,
)

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class File:
    name: str
    content: bytes = b""
    kind: str = "data"  # data | fifo | zero | sparse | dir | missing


@dataclass(frozen=True)
class Doc:
    path: str
    files: tuple[File, ...]
    refuse: str | None = None
    edit: str = ""  # what was done to the valid document, for the findings


def write_files(directory: Path, files: tuple[File, ...]) -> None:
    for spec in files:
        path = directory / spec.name
        path.parent.mkdir(parents=True, exist_ok=True)
        if spec.kind == "data":
            path.write_bytes(spec.content)
        elif spec.kind == "fifo":
            os.mkfifo(path)
        elif spec.kind == "zero":
            path.symlink_to("/dev/zero")
        elif spec.kind == "sparse":
            with open(path, "wb") as handle:
                handle.truncate(4 * 2**30)  # 4 GiB of zeros that take no disk
        elif spec.kind == "dir":
            path.mkdir()


# ---------------------------------------------------------------------------
# Special files, for any command that reads a file
# ---------------------------------------------------------------------------

SPECIAL = {
    "fifo": "a FIFO (reading it would wait forever)",
    "zero": "a link to /dev/zero (endless)",
    "sparse": "a 4 GiB file",
    "dir": "a directory",
    "missing": "a file that does not exist",
}


def special_file(name: str) -> st.SearchStrategy[Doc]:
    return st.sampled_from(sorted(SPECIAL)).map(
        lambda kind: Doc(name, (File(name, kind=kind),), refuse=SPECIAL[kind], edit=kind)
    )


# ---------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------

# raw YAML for a scalar's place, with why it must be refused where a number was
NUMERIC_SNIPPETS = [
    ".inf",
    "-.inf",
    ".nan",
    "1.0e+30",
    "1.0e+308",
    "1e308",
    "1" + "0" * 400,
    str(2**63),
    str(2**64),
    "'٣'",
    "１",
    "'1_000'",
    "1_000",
    "0x10",
    "-1",
    "0",
    "1.0e-300",
    "5.0e-324",
    "1000000000",
    "99999999999",
    "2026-11-02",
    "~",
    "yes",
    "''",
    "[1, 2]",
    "{a: 1}",
    "!!binary aGVsbG8=",
    "!!python/object/apply:os.system ['true']",
    "*nowhere",
]
TEXT_SNIPPETS = [
    "'[/]'",
    "'[link=file:///etc/passwd]x[/link]'",
    '"\\e[31mred\\e[0m"',
    '"\\u202eevil"',
    '"pumc\\u200bhospital"',
    '"two\\nlines"',
    '"nul\\0x"',
    "'" + "y" * 5000 + "'",
    "'" + "z" * 200_000 + "'",
    "'٣'",
    "!!str 1e30",
]


def _snippet_refusal(snippet: str, was_number: bool) -> str | None:
    if not was_number:
        return None
    try:
        parsed = yaml.safe_load(snippet)
    except yaml.YAMLError:
        return None
    if isinstance(parsed, bool) or not isinstance(parsed, int | float | str):
        return None
    why = _number_refusal(str(parsed))
    return f"{why} where the document had a number" if why else None


def _paths(tree, prefix=()):
    """Every (path, leaf) of a YAML tree; mapping keys are strings."""
    if isinstance(tree, dict):
        for key, child in tree.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(tree, list):
        for index, child in enumerate(tree):
            yield from _paths(child, (*prefix, index))
    else:
        yield prefix, tree


def _set(tree, path, new):
    node = tree
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = new


def _rename(tree, path, new_key):
    node = tree
    for part in path[:-2]:
        node = node[part]
    mapping = node[path[-2]] if len(path) > 1 else tree
    if not isinstance(mapping, dict):
        return False
    key = path[-1] if len(path) > 1 else path[0]
    mapping[new_key] = mapping.pop(key)
    return True


PLACEHOLDER = "HOSTILE_SNIPPET_0"


@st.composite
def yaml_document(draw, base: str, name: str, extra_files: tuple[File, ...] = ()) -> Doc:
    """``base`` (valid YAML) with one hostile edit, as file ``name``."""
    edit = draw(
        st.sampled_from(
            ["leaf"] * 6
            + ["key"] * 2
            + ["merge", "duplicate", "nest", "bomb", "bom", "nul", "latin1", "lines", "special"]
        )
    )
    if edit == "special":
        return draw(special_file(name))
    tree = yaml.safe_load(base)
    refuse = None
    if edit == "leaf":
        leaves = list(_paths(tree))
        path, old = draw(st.sampled_from(leaves))
        was_number = isinstance(old, int | float) and not isinstance(old, bool)
        snippet = draw(st.sampled_from(NUMERIC_SNIPPETS if was_number else TEXT_SNIPPETS))
        if draw(st.integers(0, 4)) == 0:
            snippet = draw(st.sampled_from(NUMERIC_SNIPPETS + TEXT_SNIPPETS))
        _set(tree, path, PLACEHOLDER)
        text = _dump(tree).replace(PLACEHOLDER, snippet, 1)
        refuse = _snippet_refusal(snippet, was_number)
        label = f"{'.'.join(map(str, path))}: {snippet[:60]}"
    elif edit == "key":
        keyed = [path for path, _ in _paths(tree) if path and isinstance(path[-1], str)]
        path = draw(st.sampled_from(keyed))
        new_key = draw(st.sampled_from([*MARKUP, *CONTROL, "ＭＥＤＩＣＡＬ", "k" * 3000, ""]))
        _rename(tree, path, new_key)
        text = _dump(tree)
        why = _text_refusal(new_key)
        refuse = f"{why} as a key" if why else None
        label = f"key {'.'.join(map(str, path))} -> {new_key[:40]!r}"
    elif edit == "merge":
        text, label = _with_merge_key(base), "merge key <<"
    elif edit == "duplicate":
        text, refuse = _with_duplicate_key(base), "a duplicate key"
        label = "duplicate key"
    elif edit == "nest":
        depth = draw(st.sampled_from([200, 5_000, 50_000]))
        text = base + "\ndeep: " + "[" * depth + "]" * depth + "\n"
        refuse = f"{depth}-level nesting" if depth >= 5_000 else None
        label = f"nesting {depth}"
    elif edit == "bomb":
        text, refuse, label = base + "\n" + ALIAS_BOMB, "an alias bomb", "alias bomb"
    elif edit == "bom":
        text, label = "\ufeff" + base, "BOM"
    elif edit == "nul":
        text, refuse, label = base + "\n# \x00\n", "a NUL byte", "NUL"
    elif edit == "latin1":
        raw = (base + "\n# caf\xe9\n").encode("latin-1", errors="replace")
        return Doc(name, (File(name, raw), *extra_files), "bytes that are not UTF-8", "latin-1")
    else:
        text, label = draw(mutated_lines(base)), "line mutation"
    data = text.encode("utf-8", errors="surrogatepass")
    return Doc(name, (File(name, data), *extra_files), refuse, label)


def _dump(tree) -> str:
    return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True, width=1_000_000)


# A 421-byte "billion laughs": 9 levels of 9 references, 9^9 strings once expanded.
ALIAS_BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
    "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
)


def _top_mapping_key(text: str) -> str | None:
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z_][\w-]*):\s*(#.*)?$", line)
        if match:
            return match.group(1)
    return None


def _with_merge_key(text: str) -> str:
    """A top-level section rewritten to merge an anchored mapping into itself."""
    key = _top_mapping_key(text)
    if key is None:
        return text + "\nbase: &base {x: 1}\nother:\n  <<: *base\n"
    return text.replace(f"\n{key}:", f"\nmerged: &merged {{x: 1}}\n{key}:\n  <<: *merged", 1)


def _with_duplicate_key(text: str) -> str:
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[A-Za-z_][\w-]*:\s*\S", line) and not line.startswith("-"):
            return "\n".join([*lines[: index + 1], line, *lines[index + 1 :]]) + "\n"
    return text + "\n" + text


NASTY_TOKENS = ["-1", "0", "nan", "inf", "1e999", "", "[", "]", "{", "}", ":", ",", "'", '"',
                "yes", "null", "~", "\t", "é", "- x", "&a", "*a", "!!python/int", "9" * 40,
                "2026-13-45", "#", "<<"]  # fmt: skip


@st.composite
def mutated_lines(draw, text: str) -> str:
    """``text`` after a few line and token edits (as tests/reliability/test_properties.py)."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        if not lines:
            break
        at = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.sampled_from(["drop", "dup", "token", "cut", "indent"]))
        if edit == "drop":
            del lines[at]
        elif edit == "dup":
            lines.insert(at, lines[at])
        elif edit == "indent":
            lines[at] = draw(st.sampled_from(["  ", "\t", " "])) + lines[at]
        elif edit == "cut":
            lines[at] = lines[at][: draw(st.integers(0, len(lines[at])))]
        else:
            tokens = lines[at].replace(",", " , ").replace(":", " : ").split(" ")
            slot = draw(st.integers(0, len(tokens) - 1))
            tokens[slot] = draw(st.sampled_from(NASTY_TOKENS))
            lines[at] = " ".join(tokens)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------


@st.composite
def csv_document(
    draw,
    base: str,
    name: str,
    cells: st.SearchStrategy,
    refusing_columns: frozenset[str] = frozenset(),
    extra_files: tuple[File, ...] = (),
) -> Doc:
    """``base`` (header + rows) with one hostile edit. ``cells`` draws Values; a refused
    value in one of ``refusing_columns`` must refuse the whole document."""
    lines = base.splitlines()
    header = lines[0].split(",")
    edit = draw(
        st.sampled_from(
            ["cell"] * 6 + ["dup-column", "bom", "huge-field", "quote", "nul", "crlf", "special"]
        )
    )
    refuse = None
    if edit == "special":
        return draw(special_file(name))
    if edit == "cell":
        row = draw(st.integers(1, len(lines) - 1))
        column = draw(st.integers(0, len(header) - 1))
        cell = draw(cells)
        fields = lines[row].split(",")
        fields[column] = _csv_quote(cell.text)
        lines[row] = ",".join(fields)
        if cell.refuse and header[column] in refusing_columns:
            refuse = f"{cell.refuse} in column {header[column]}"
        label = f"{header[column]} = {cell.text[:60]!r}"
    elif edit == "dup-column":
        column = draw(st.integers(0, len(header) - 1))
        lines = [line + "," + line.split(",")[column] for line in lines]
        refuse, label = f"column {header[column]} twice", "duplicate column"
    elif edit == "bom":
        lines[0] = "\ufeff" + lines[0]
        label = "BOM"
    elif edit == "huge-field":
        fields = lines[1].split(",")
        fields[-1] = "h" * 200_000
        lines[1] = ",".join(fields)
        label = "200,000-character field"
    elif edit == "quote":
        lines[1] = lines[1] + ',"unbalanced'
        label = "unbalanced quote"
    elif edit == "nul":
        lines[1] = lines[1] + "\x00"
        refuse, label = "a NUL byte", "NUL"
    else:
        label = "CRLF"
    newline = "\r\n" if edit == "crlf" else "\n"
    data = (newline.join(lines) + newline).encode("utf-8", errors="surrogatepass")
    return Doc(name, (File(name, data), *extra_files), refuse, label)


def _csv_quote(text: str) -> str:
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


# ---------------------------------------------------------------------------
# The valid documents the edits start from
# ---------------------------------------------------------------------------


def example_policy(name: str) -> str:
    return (ROOT / "examples" / "policies" / name).read_text(encoding="utf-8")


POLICY_NAMES = ["fifo.yaml", "priority.yaml", "multifactor.yaml", "fair-share.yaml"]

BATCH_CSV = (
    "org,gpus,hours,gpu_types,name,priority,key\n"
    "pumc-hospital,2,1.5,A100-80G;H100,a,0,k1\n"
    "zju-cs,8,3,,b,1,k2\n"
)
BATCH_YAML = """\
jobs:
  - {org: pumc-hospital, gpus: 2, hours: 1.5, gpu_types: [A100-80G, H100], name: a, key: k1}
  - {org: zju-cs, gpus: 8, hours: 3, name: b, priority: 1}
"""
PROGRAMME_YAML = """\
programmes:
  - name: fuzz-programme
    period: 2026-Q4
    budget: 1000
    domains: [medical]
    rate: 0.5
    gpu_type_rates: {Ascend-910B: 0.8}
    exchange_rates: {A100-80G: 1.0}
    vouchers: true
    org_cap: 200
    end_of_period: {carry_over: 0.5}
    when_exhausted: wait
"""
# A few jobs over two simulated hours on 24 GPUs: a run takes a fraction of a second.
SCENARIO_YAML = """\
name: tiny
seed: 3
gpu_types:
  A100: {vendor: nvidia, memory_gb: 80, speed: 1.0, price_per_gpu_hour: 14.0}
  H100: {vendor: nvidia, memory_gb: 80, speed: 2.0, price_per_gpu_hour: 30.0}
pools:
  bj-a100: {site: beijing, gpu_type: A100, gpus: 16, gpus_per_node: 8}
  sh-h100: {site: shanghai, gpu_type: H100, gpus: 8, gpus_per_node: 8}
domains:
  medical: {weight: 2.0}
  research: {weight: 1.0}
orgs:
  pumc: {domain: medical, budget: 1000}
  cas: {domain: research, budget: null}
workload:
  kind: synthetic
  hours: 2
  estimate: {factor: 1.5}
  domains:
    medical:
      rate_per_hour: 2
      gpus: {1: 60, 8: 40}
      runtime_hours: {lognormal: {median: 1.0, sigma: 1.1}}
      max_hours: 4
    research:
      rate_per_hour: 1
      gpus: {1: 50, 16: 50}
      runtime_hours: {uniform: {low: 0.5, high: 3}}
      gpu_types: [A100]
programmes:
  - {name: health, period: quarterly, budget: 500, domains: [medical], rate: 0.5, vouchers: true}
vouchers:
  - {org: pumc, programme: health, amount: 10, awarded_at: 0}
"""
TRACE_SCENARIO_YAML = """\
name: tiny-trace
seed: 1
gpu_types:
  A100: {vendor: nvidia, memory_gb: 80, speed: 1.0, price_per_gpu_hour: 14.0}
pools:
  bj-a100: {site: beijing, gpu_type: A100, gpus: 16, gpus_per_node: 8}
domains:
  research: {weight: 1.0}
orgs:
  lab: {domain: research, budget: null}
workload:
  kind: philly
  path: trace.csv
  gpu_types: [A100]
  estimate: exact
  default_org: lab
"""
TRACE_CSV = (
    "timestamp,duration,num_gpus,gpu_time,cluster\n"
    "2017-10-02 02:49:54,102.0,1,102.0,b436b2\n"
    "2017-10-02 03:10:30,4619.0,2,9238.0,6214e9\n"
    "2017-10-02 04:00:00,600.0,8,4800.0,6214e9\n"
)
ALIBABA_SCENARIO_YAML = """\
name: tiny-alibaba
seed: 1
gpu_types:
  T4: {vendor: nvidia, memory_gb: 16, speed: 1.0, price_per_gpu_hour: 3.0}
  G2: {vendor: undisclosed, speed: 1.0, price_per_gpu_hour: 12.0}
pools:
  T4: {site: alibaba, gpu_type: T4, gpus: 4, gpus_per_node: 2}
  G2: {site: alibaba, gpu_type: G2, gpus: 16, gpus_per_node: 8}
domains:
  best-effort: {weight: 0.5}
  latency-sensitive: {weight: 2.0}
orgs:
  batch: {domain: best-effort, budget: null}
  online: {domain: latency-sensitive, budget: null}
workload:
  kind: alibaba
  pods: pods.csv
  site: alibaba
  estimate: exact
  qos_map: {LS: online, BE: batch}
  default_org: batch
"""
ALIBABA_PODS_CSV = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,"
    "deletion_time,scheduled_time\n"
    "pod-0,4000,16384,1,1000,,BE,Running,12557717,12558568,12557728\n"
    "pod-1,4000,8192,1,1000,T4,LS,Failed,12558136,12559516,12558147\n"
    "pod-2,8000,8192,8,1000,G2,BE,Running,12561850,12562960,12561878\n"
    "pod-3,4000,8192,2,1000,,LS,Pending,12563853,12563866,\n"
)
