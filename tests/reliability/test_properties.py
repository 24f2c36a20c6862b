"""Malformed input never escapes as anything but a GpupoolError that names where.

Hypothesis mutates valid documents (drops, duplicates and truncates lines,
swaps tokens for nasty ones: negative, NaN, huge, empty, brackets, tabs, NUL,
non-ASCII) and also feeds arbitrary text, to each parser a user can reach:
policy documents, scenario files, batch job files and trace CSVs. Each parse
must either succeed or raise GpupoolError with a non-empty ``location``; any
other exception is a traceback a user would see.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpupool.model import GpupoolError, Org

ROOT = Path(__file__).resolve().parents[2]
NASTY = ["-1", "0", "nan", "inf", "1e999", "", " ", "[", "]", "{", "}", ":", ",", "'", '"',
         "yes", "null", "~", "\t", "\x00", "é", "🙂", "- x", "&a", "*a", "!!python/int", "9" * 40,
         "2026-13-45", "A100;;", "#"]  # fmt: skip
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=True,
)


@st.composite
def mutated(draw, text: str) -> str:
    """``text`` after a few random line and token edits (or arbitrary text, sometimes)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=200))
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 4))):
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
            tokens[slot] = draw(st.sampled_from(NASTY) | st.text(max_size=8))
            lines[at] = " ".join(tokens)
    return "\n".join(lines) + draw(st.sampled_from(["", "\n"]))


def _names_where(call) -> None:
    try:
        call()
    except GpupoolError as exc:
        problems = getattr(exc, "problems", None)  # a policy document lists (where, what) pairs
        if problems is not None:
            assert problems and all(where for where, _ in problems), f"no location: {exc!r}"
            return
        assert exc.location, f"no location: {exc!r}"
        for inner in getattr(exc, "errors", ()):
            assert inner.location, f"no location: {inner!r}"


def _write(tmp: Path, name: str, text: str, raw: bytes | None = None) -> Path:
    path = tmp / name
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


# -- policy documents --------------------------------------------------------

POLICIES = {p.name: p.read_text() for p in sorted((ROOT / "examples" / "policies").glob("*.yaml"))}


@SETTINGS
@given(st.sampled_from(sorted(POLICIES)).flatmap(lambda n: mutated(POLICIES[n])))
def test_malformed_policy_documents(text):
    from gpupool.policies.document import parse_policy_text

    _names_where(lambda: parse_policy_text(text, source="policy.yaml"))


# -- scenario files -----------------------------------------------------------

SCENARIO = """\
name: tiny
seed: 3
gpu_types:
  A100: {vendor: nvidia, memory_gb: 80, speed: 1.0, price_per_gpu_hour: 14.0}
  H100: {vendor: nvidia, memory_gb: 80, speed: 2.0, price_per_gpu_hour: 30.0}
pools:
  bj-a100: {site: beijing, gpu_type: A100, gpus: 16, gpus_per_node: 8}
  sh-h100: {site: shanghai, gpu_type: H100, gpus: 8, gpus_per_node: 8, price_per_gpu_hour: 31}
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
      rate_per_hour: 3
      gpus: {1: 60, 8: 40}
      runtime_hours: {lognormal: {median: 1.5, sigma: 1.1}}
      max_hours: 4
    research:
      rate_per_hour: 2
      gpus: {1: 50, 16: 50}
      runtime_hours: {uniform: {low: 0.5, high: 3}}
      gpu_types: [A100]
"""


def test_the_scenario_seed_document_is_valid(tmp_path):
    from gpupool.simulations.scenario import load_scenario

    assert load_scenario(_write(tmp_path, "s.yaml", SCENARIO)).jobs


@SETTINGS
@given(mutated(SCENARIO))
def test_malformed_scenario_files(text):
    from gpupool.simulations.scenario import load_scenario

    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), "scenario.yaml", text)
        _names_where(lambda: load_scenario(path))


# -- batch job files ----------------------------------------------------------

BATCH_CSV = (
    "org,gpus,hours,gpu_types,name,priority,key\nlab,2,1.5,A100;H100,a,0,k1\nhosp,8,3,,b,1,k2\n"
)
BATCH_YAML = (
    "jobs:\n"
    "  - {org: lab, gpus: 2, hours: 1.5, gpu_types: [A100]}\n"
    "  - org: hosp\n    gpus: 8\n    hours: 3\n"
)


@SETTINGS
@given(st.sampled_from(["csv", "yaml"]).flatmap(
    lambda kind: st.tuples(st.just(kind), mutated(BATCH_CSV if kind == "csv" else BATCH_YAML))
))  # fmt: skip
def test_malformed_batch_files(kind_and_text):
    from gpupool.scheduler.batch import load_batch

    kind, text = kind_and_text
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), f"jobs.{kind}", text)

        def load():
            _requests, errors = load_batch(path)
            for error in errors:
                assert error.location, f"no location: {error!r}"

        _names_where(load)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.binary(max_size=64))
def test_files_that_are_not_utf8_text(raw):
    from gpupool.policies.document import load_policy_file
    from gpupool.scheduler.batch import load_batch
    from gpupool.simulations.scenario import load_scenario

    with tempfile.TemporaryDirectory() as tmp:
        for load, name in ((load_batch, "jobs.csv"), (load_scenario, "s.yaml"),
                           (load_policy_file, "p.yaml")):  # fmt: skip
            path = _write(Path(tmp), name, "", raw=raw)
            _names_where(lambda load=load, path=path: load(path))


def test_a_directory_or_missing_file_is_a_located_error(tmp_path):
    from gpupool.policies.document import load_policy_file
    from gpupool.scheduler.batch import load_batch
    from gpupool.simulations.scenario import load_scenario

    for load in (load_batch, load_scenario, load_policy_file):
        for path in (tmp_path, tmp_path / "missing.yaml"):
            try:
                load(path)
            except GpupoolError:
                _names_where(lambda load=load, path=path: load(path))
            else:
                raise AssertionError(f"{load.__name__}({path}) accepted it")


# -- trace rows ---------------------------------------------------------------

PHILLY = (
    "timestamp,duration,num_gpus,gpu_time,cluster\n"
    "2017-10-02 02:49:54,102.0,1,102.0,b436b2\n"
    "2017-10-02 10:10:30,4619.0,2,9238.0,6214e9\n"
)
PODS = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    "creation_time,deletion_time,scheduled_time\n"
    "p0,4000,16384,1,1000,,BE,Running,12557717,12558568,12557728\n"
    "p1,4000,8192,2,1000,T4,LS,Failed,12558136,12559516,12558147\n"
)
NODES = "sn,cpu_milli,memory_mib,gpu,model\nn0,96000,393216,8,G2\nn1,96000,393216,4,T4\n"
ORGS = {"lab": Org("lab", "general", None), "hosp": Org("hosp", "medical", 100.0)}


def _load_trace(kind: str, path: Path):
    from gpupool.simulations import traces

    if kind == "philly":
        return traces.load_philly(path, vc_map={"b436b2": "hosp"}, default_org="lab", orgs=ORGS)
    if kind == "pods":
        return traces.load_alibaba_pods(
            path, qos_map={"BE": "lab", "LS": "hosp"}, default_org="lab", orgs=ORGS
        )
    return traces.load_alibaba_nodes(path, prices={"G2": 5.0})


@SETTINGS
@given(st.sampled_from(["philly", "pods", "nodes"]).flatmap(
    lambda kind: st.tuples(
        st.just(kind), mutated({"philly": PHILLY, "pods": PODS, "nodes": NODES}[kind])
    )
))  # fmt: skip
def test_malformed_trace_rows(kind_and_text):
    kind, text = kind_and_text
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), f"{kind}.csv", text)
        _names_where(lambda: _load_trace(kind, path))
