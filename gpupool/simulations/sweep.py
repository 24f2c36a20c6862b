"""Sweeps: many simulate runs over scenarios, policies, seeds and parameters, resumable.

A sweep file (YAML, docs/simulation.md 'Sweeps') names the scenario files
(schemes), the policy documents, the seeds and the parameters to vary; a
parameter is a field path into the policy document (``policy.``) or the
scenario (``scenario.``)::

    name: medical-subsidy
    scenarios: [../scenarios/synthetic.yaml]
    policies: [../policies/priority.yaml]
    seeds: 2                        # a count (from the first scenario's seed) or a list
    jobs: 400                       # optional: replay only the first N jobs
    priority_domain: medical        # whose p95 wait the report weighs
    search: grid                    # or {random: {samples: 12, seed: 1}}
    parameters:
      policy.subsidy.domain_rates.medical: {low: 0.3, high: 0.7, steps: 3}
      scenario.domains.medical.weight: [1.5, 3.0]

Each run is an ordinary :class:`~gpupool.simulations.compare.RunRequest` whose
files get the run's parameter values set in them before they are read
(``located_yaml.apply_overrides``): the simulator, the readers and their checks
are the ones ``gpupool simulate run`` uses. Every value is checked against every
file it goes into before any run starts, and a refused value is reported at the
sweep file's line.

A run's id is a digest of what decides its result (the files' bytes, the seed,
the job limit, the parameter values), so the same run keeps its id across
restarts. Each finished run is written at once, atomically, to
``OUT/runs/ID.json``; a restarted sweep runs only the ids it does not find there.
Runs go to local processes, or to a Ray cluster (``ray_address``), where every
node must see the same file paths and have gpupool installed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from gpupool import limits, located_yaml
from gpupool.files import SWEEP, FileError
from gpupool.model import GpupoolError
from gpupool.simulations.compare import RunRequest, execute, lookup, scheme_labels
from gpupool.simulations.scenario import ScenarioError, _Node

TARGETS = ("policy", "scenario")
SIGNIFICANT_DIGITS = 6  # random draws are rounded so ids and tables read cleanly
SEARCHES = ("grid", "random")


@dataclass(frozen=True)
class Parameter:
    path: str  # as written: "policy.subsidy.domain_rates.medical"
    values: tuple  # the grid's values, or the choices of a random search
    low: float | None = None  # a range {low, high}: drawn uniformly by a random search
    high: float | None = None
    where: str = ""  # file:line of its values in the sweep file

    @property
    def target(self) -> str:
        return self.path.split(".", 1)[0]

    @property
    def field(self) -> str:
        return self.path.split(".", 1)[1]

    def checked_values(self) -> tuple:
        """The values to try on each file before running: the listed ones, a range's ends."""
        return self.values or (self.low, self.high)


@dataclass(frozen=True)
class Sweep:
    name: str
    source: str
    scenarios: tuple[tuple[str, str], ...]  # (label, absolute path)
    policies: tuple[tuple[str, str], ...]
    seeds: tuple[int, ...]
    priority_domain: str
    parameters: tuple[Parameter, ...]
    search: str = "grid"
    samples: int = 0
    search_seed: int = 0
    max_jobs: int | None = None
    until_hours: float | None = None
    priority_where: str = ""  # file:line of priority_domain, for a scenario without it


@dataclass(frozen=True)
class Point:
    """One run of the sweep: what it varies and the request that runs it."""

    run_id: str
    config: int  # the (parameter values, scenario, policy) it belongs to; seeds vary inside
    scenario: str
    policy: str
    seed: int
    values: tuple[tuple[str, object], ...]  # (parameter path, value)
    request: RunRequest


# ---------------------------------------------------------------------------
# Reading the sweep file
# ---------------------------------------------------------------------------

_KEYS = (
    "name",
    "description",
    "scenarios",
    "policies",
    "seeds",
    "jobs",
    "until_hours",
    "priority_domain",
    "search",
    "parameters",
)


def load_sweep(path: str | Path) -> Sweep:
    """Parse a sweep file (every field checked at ``file:line field``); the files it names
    are read by :func:`check_sweep`."""
    path = Path(path)
    source = str(path)
    try:
        root = located_yaml.load(path, SWEEP, source)
    except FileError as exc:
        raise ScenarioError(exc.message, location=exc.location) from None
    if root is None:
        raise ScenarioError("empty sweep file", location=f"{source}:1")
    top = _Node(root, "", source, yaml.SafeLoader("")).fields(
        required=("scenarios", "policies", "priority_domain"), optional=_KEYS
    )
    base = path.parent
    scenarios = _files(top["scenarios"], base)
    policies = _files(top["policies"], base)
    search, samples, search_seed = _search(top.get("search"))
    parameters = tuple(_parameter(top["parameters"], key) for key in _keys(top.get("parameters")))
    sweep = Sweep(
        name=top["name"].name() if "name" in top else path.stem,
        source=source,
        scenarios=tuple(zip(scheme_labels(scenarios), scenarios, strict=True)),
        policies=tuple(zip(scheme_labels(policies), policies, strict=True)),
        seeds=_seeds(top.get("seeds"), scenarios[0]),
        priority_domain=top["priority_domain"].name(),
        priority_where=top["priority_domain"].where(),
        parameters=parameters,
        search=search,
        samples=samples,
        search_seed=search_seed,
        max_jobs=top["jobs"].integer(minimum=1, limit=limits.MAX_JOBS) if "jobs" in top else None,
        until_hours=(
            top["until_hours"].number(minimum=0, limit=limits.SIM_HOURS)
            if "until_hours" in top
            else None
        ),
    )
    _check_shape(sweep, top)
    return sweep


def _check_shape(sweep: Sweep, top: dict[str, _Node]) -> None:
    """A grid's ranges need steps; the runs must stay within SWEEP_RUNS."""
    for parameter in sweep.parameters:
        if sweep.search == "grid" and not parameter.values:
            raise ScenarioError(
                "a range needs steps: N in a grid search (or use search: {random: ...})",
                location=parameter.where,
            )
    files = len(sweep.scenarios) * len(sweep.policies)
    runs = _configurations(sweep) * files * len(sweep.seeds)
    if not limits.SWEEP_RUNS.holds(runs):
        bound = limits.SWEEP_RUNS
        node = top.get("parameters") or top.get("seeds") or top["scenarios"]
        node.fail(f"{runs:,} runs: must be {bound.span()} ({bound.label})")


def _configurations(sweep: Sweep) -> int:
    """How many sets of parameter values, counted without listing them."""
    if sweep.search == "random":
        return sweep.samples
    return math.prod(len(parameter.values) for parameter in sweep.parameters)


def _files(node: _Node, base: Path) -> list[str]:
    """One path or a list of paths, relative to the sweep file, each a regular file."""
    items = [node] if node.node.tag.endswith(":str") else node.sequence()
    if not items:
        node.fail("name at least one file")
    paths = []
    for item in items:
        path = Path(os.path.normpath(base / Path(item.text()).expanduser())).absolute()
        if not path.is_file():
            item.fail(f"{'not a regular file' if path.exists() else 'no such file'}: {path}")
        paths.append(str(path))
    return paths


def _seeds(node: _Node | None, first_scenario: str) -> tuple[int, ...]:
    """``seeds: 3`` (three seeds from the first scenario's) or ``seeds: [1, 5]``."""
    if node is None or node.node.tag.endswith(":int"):
        count = 1 if node is None else node.integer(minimum=1, limit=limits.SEEDS)
        from gpupool.simulations.scenario import load_scenario

        start = load_scenario(first_scenario, max_jobs=1).seed
        return tuple(start + index for index in range(count))
    seeds = tuple(item.integer(minimum=0, limit=limits.SEED) for item in node.sequence())
    if not seeds:
        node.fail("give at least one seed")
    if len(set(seeds)) < len(seeds):
        node.fail("a seed is listed twice")
    return seeds


def _search(node: _Node | None) -> tuple[str, int, int]:
    """``grid`` or ``{random: {samples: N, seed: S}}``."""
    if node is None:
        return "grid", 0, 0
    if node.node.tag.endswith(":str"):
        if node.text() != "grid":
            node.fail(f"expected grid or {{random: {{samples: N, seed: S}}}}, got {node.text()!r}")
        return "grid", 0, 0
    spec = node.fields(required=("random",))["random"].fields(
        required=("samples",), optional=("samples", "seed")
    )
    samples = spec["samples"].integer(minimum=1, limit=limits.SWEEP_VALUES)
    seed = spec["seed"].integer(minimum=0, limit=limits.SEED) if "seed" in spec else 0
    return "random", samples, seed


def _keys(node: _Node | None) -> list[tuple[_Node, _Node]]:
    if node is None or node.is_null():
        return []
    return [(node.key(key), value) for key, value in node.mapping().items()]


def _parameter(section: _Node, key_value: tuple[_Node, _Node]) -> Parameter:
    key, node = key_value
    path = key.text()
    target, _, field = path.partition(".")
    if target not in TARGETS or not field:
        key.fail(f"a parameter is policy.FIELD or scenario.FIELD, got {path!r}")
    try:
        located_yaml.split_path(field)
    except ValueError as exc:
        key.fail(str(exc))
    where = node.where()
    if node.node.tag.endswith(":seq"):
        values = tuple(_plain_value(item) for item in node.sequence())
        if not values:
            node.fail("give at least one value")
        return Parameter(path, values, where=where)
    spec = node.fields(required=("low", "high"), optional=("steps",))
    low, high = spec["low"].number(), spec["high"].number()
    if high < low:
        spec["high"].fail(f"must be >= low ({low:g}), got {high:g}")
    steps = spec["steps"].integer(minimum=1, limit=limits.SWEEP_VALUES) if "steps" in spec else 0
    values = tuple(_rounded(low + (high - low) * i / max(1, steps - 1)) for i in range(steps))
    return Parameter(path, values, low=low, high=high, where=where)


def _plain_value(node: _Node) -> object:
    value = node.plain()
    if isinstance(value, float) and not -1e300 <= value <= 1e300:
        node.fail(f"must be a finite number, got {node.node.value!r}")
    return value


def _rounded(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


# ---------------------------------------------------------------------------
# Checking the files and every value before anything runs
# ---------------------------------------------------------------------------


def check_sweep(sweep: Sweep) -> None:
    """Read every scenario and policy, with each parameter value set, as a run would;
    a refused value is an error at its line in the sweep file."""
    from gpupool.policies.document import check_names, load_policy_file
    from gpupool.simulations.scenario import load_scenario

    scenarios = {label: load_scenario(path, max_jobs=1) for label, path in sweep.scenarios}
    documents = {label: load_policy_file(path) for label, path in sweep.policies}
    for scenario in scenarios.values():
        for document in documents.values():
            check_names(document, scenario.gpu_types, scenario.domains)
        if sweep.priority_domain not in scenario.domains:
            raise ScenarioError(
                f"scenario {scenario.name!r} has no domain {sweep.priority_domain!r}",
                location=sweep.priority_where,
            )
    for parameter in sweep.parameters:
        for value in parameter.checked_values():
            _check_value(sweep, parameter, value, scenarios)


def _check_value(sweep: Sweep, parameter: Parameter, value: object, scenarios) -> None:
    from gpupool.policies.document import check_names, load_policy_file
    from gpupool.simulations.scenario import load_scenario

    override = ((parameter.field, value),)
    files = sweep.policies if parameter.target == "policy" else sweep.scenarios
    for _, path in files:
        try:
            if parameter.target == "policy":
                document = load_policy_file(path, override)
                for scenario in scenarios.values():
                    check_names(document, scenario.gpu_types, scenario.domains)
            else:
                load_scenario(path, max_jobs=1, overrides=override)
        except GpupoolError as exc:
            problem = " / ".join(str(exc).splitlines())
            raise ScenarioError(
                f"{value!r} is refused by {Path(path).name}: {problem}", location=parameter.where
            ) from None


# ---------------------------------------------------------------------------
# The runs
# ---------------------------------------------------------------------------


def _combinations(sweep: Sweep) -> Iterator[tuple[tuple[str, object], ...]]:
    """Parameter values of each configuration: the grid's product, or random draws."""
    paths = [parameter.path for parameter in sweep.parameters]
    if sweep.search == "grid":
        for values in itertools.product(*(p.values for p in sweep.parameters)):
            yield tuple(zip(paths, values, strict=True))
        return
    rng = random.Random(sweep.search_seed)
    for _ in range(sweep.samples):
        yield tuple((p.path, _draw(p, rng)) for p in sweep.parameters)


def _draw(parameter: Parameter, rng: random.Random) -> object:
    if parameter.low is None:
        return rng.choice(parameter.values)
    return _rounded(rng.uniform(parameter.low, parameter.high))


def plan(sweep: Sweep) -> list[Point]:
    """Every run: configurations (values x scenario x policy) x seeds, seeds innermost."""
    digests = {path: _digest(path) for _, path in (*sweep.scenarios, *sweep.policies)}
    points, config = [], 0
    for values in _combinations(sweep):
        for scenario_label, scenario in sweep.scenarios:
            for policy_label, policy in sweep.policies:
                for seed in sweep.seeds:
                    request = _request(sweep, scenario, policy, policy_label, seed, values)
                    run_id = _run_id(request, digests)
                    points.append(
                        Point(run_id, config, scenario_label, policy_label, seed, values, request)
                    )
                config += 1
    return _unique(points)


def _request(sweep, scenario, policy, label, seed, values) -> RunRequest:
    def overrides(target: str) -> tuple[tuple[str, object], ...]:
        return tuple(
            (path.split(".", 1)[1], value)
            for path, value in values
            if path.split(".", 1)[0] == target
        )

    return RunRequest(
        scenario=scenario,
        policy=policy,
        label=label,
        seed=seed,
        until_hours=sweep.until_hours,
        max_jobs=sweep.max_jobs,
        scenario_overrides=overrides("scenario"),
        policy_overrides=overrides("policy"),
    )


def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _run_id(request: RunRequest, digests: dict[str, str]) -> str:
    """A digest of everything that decides the run's result (not the files' names)."""
    identity = {
        "scenario": digests[request.scenario],
        "policy": digests[request.policy],
        "seed": request.seed,
        "max_jobs": request.max_jobs,
        "until_hours": request.until_hours,
        "scenario_overrides": [list(pair) for pair in request.scenario_overrides],
        "policy_overrides": [list(pair) for pair in request.policy_overrides],
    }
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _unique(points: list[Point]) -> list[Point]:
    """A random search may draw a configuration twice: it runs once."""
    seen: set[str] = set()
    kept = []
    for point in points:
        if point.run_id not in seen:
            seen.add(point.run_id)
            kept.append(point)
    return kept


# ---------------------------------------------------------------------------
# Results written as runs finish
# ---------------------------------------------------------------------------


class RunStore:
    """``OUT/runs/ID.json``: one finished run's metrics, written atomically."""

    def __init__(self, out: Path) -> None:
        self.directory = out / "runs"

    def done(self) -> set[str]:
        if not self.directory.is_dir():
            return set()
        return {path.stem for path in self.directory.glob("*.json")}

    def write(self, point: Point, metrics: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {"id": point.run_id, "seed": point.seed, "metrics": metrics}
        final = self.directory / f"{point.run_id}.json"
        partial = self.directory / f".{point.run_id}.json.partial"
        with partial.open("w", encoding="utf-8") as handle:
            json.dump(record, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, final)  # a killed sweep leaves no half-written result

    def metrics(self, run_id: str) -> dict:
        return json.loads((self.directory / f"{run_id}.json").read_text(encoding="utf-8"))[
            "metrics"
        ]


def run_metrics(request: RunRequest) -> dict:
    """One run's metrics (what a worker process or Ray task sends back)."""
    return execute(request)[1].metrics


def run_sweep(
    points: Sequence[Point],
    store: RunStore,
    *,
    workers: int | None = None,
    ray_address: str | None = None,
    on_done: Callable[[Point], None] | None = None,
) -> int:
    """Run the points ``store`` lacks, writing each as it finishes; how many ran."""
    done = store.done()
    todo = [point for point in points if point.run_id not in done]
    if not todo:
        return 0
    requests = [point.request for point in todo]
    if ray_address is not None:
        results = _on_ray(requests, ray_address)
    else:
        results = _on_processes(requests, workers)
    for index, metrics in results:
        store.write(todo[index], metrics)
        if on_done:
            on_done(todo[index])
    return len(todo)


def _on_processes(
    requests: Sequence[RunRequest], workers: int | None
) -> Iterator[tuple[int, dict]]:
    from concurrent.futures import ProcessPoolExecutor, as_completed

    workers = max(1, min(workers or os.cpu_count() or 1, len(requests)))
    if workers == 1:
        for index, request in enumerate(requests):
            yield index, run_metrics(request)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_metrics, request): i for i, request in enumerate(requests)}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            for future in futures:
                future.cancel()


def _on_ray(requests: Sequence[RunRequest], address: str) -> Iterator[tuple[int, dict]]:
    """One Ray task per run on the cluster at ``address``; results as they finish."""
    try:
        import ray
    except ImportError:
        raise GpupoolError(
            "needs the ray package: pip install 'gpupool[ray]'", location="--ray"
        ) from None
    _probe(address)
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        message = " ".join(str(exc).split())[:300]
        raise GpupoolError(
            f"cannot connect to the Ray cluster at {address}: {message}", location="--ray"
        ) from None
    try:
        task = ray.remote(num_cpus=1, max_retries=1)(run_metrics)
        pending = {task.remote(request): index for index, request in enumerate(requests)}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                yield pending.pop(ref), _ray_result(ray, ref)
    finally:
        ray.shutdown()


RAY_PROBE_S = 5.0


def _probe(address: str) -> None:
    """Refuse a HOST:PORT nothing listens on at once: ray.init would retry for minutes.
    Other forms (``auto``, ``ray://...``) go to Ray as they are."""
    import socket

    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=RAY_PROBE_S).close()
    except OSError as exc:
        raise GpupoolError(
            f"cannot connect to the Ray cluster at {address}: {exc.strerror or exc}",
            location="--ray",
        ) from None


def _ray_result(ray, ref) -> dict:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, GpupoolError):  # a run's own error, shown as one line
            raise exc.cause from None
        raise


# ---------------------------------------------------------------------------
# The table: one row per run
# ---------------------------------------------------------------------------

TRADE_OFFS = (  # (column, metric path, sense): what the report's Pareto front weighs
    ("priority_p95_wait_hours", "domains.{domain}.queueing_delay_hours.p95", "min"),
    ("subsidy", "platform.subsidy", "min"),
    ("utilisation", "platform.utilisation", "max"),
)


def table_rows(sweep: Sweep, points: Sequence[Point], store: RunStore) -> list[dict]:
    """One row per run: its labels, parameter values, the trade-offs, every metric."""
    rows = []
    for point in points:
        metrics = store.metrics(point.run_id)
        row: dict[str, object] = {
            "run_id": point.run_id,
            "config": point.config,
            "scenario": point.scenario,
            "policy": point.policy,
            "seed": point.seed,
        }
        row.update(dict(point.values))
        for column, path, _ in TRADE_OFFS:
            row[column] = lookup(metrics, path.format(domain=sweep.priority_domain))
        row.update(flatten({k: v for k, v in metrics.items() if k not in ("scenario", "policy")}))
        rows.append(row)
    return rows


def flatten(metrics: dict, prefix: str = "") -> dict[str, object]:
    """Nested metrics as ``a.b.c`` columns; lists are left out (metrics.json has them)."""
    flat: dict[str, object] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        elif not isinstance(value, list | tuple):
            flat[name] = value
    return flat


def write_table(rows: Sequence[dict], path: Path) -> Path:
    """CSV, columns in first-seen order (runs of other scenarios may add domains);
    floats as Python writes them, so a re-read gives the same numbers."""
    import csv

    columns = list(dict.fromkeys(column for row in rows for column in row))
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if value is None else value for key, value in row.items()})
    os.replace(partial, path)
    return path


def write_parquet(rows: Sequence[dict], path: Path) -> Path:
    """The same table as Parquet, for pandas/Polars/DuckDB; a column whose values are of
    several kinds (a parameter that is a number in one run, a word in another) is text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(dict.fromkeys(column for row in rows for column in row))
    arrays = [_column_array(pa, [row.get(column) for row in rows]) for column in columns]
    partial = path.with_name(f".{path.name}.partial")
    pq.write_table(pa.Table.from_arrays(arrays, names=columns), partial)
    os.replace(partial, path)
    return path


def _column_array(pa, values: list):
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if value is None else str(value) for value in values])


# ---------------------------------------------------------------------------
# Pareto front
# ---------------------------------------------------------------------------


def pareto_front(points: Sequence[Sequence[float]], senses: Sequence[str]) -> list[int]:
    """Indices of the points no other point dominates (as good in every objective and
    better in one); ``senses``: "min" or "max" per objective. Equal points are all kept."""
    signs = [1 if sense == "min" else -1 for sense in senses]
    costs = [[sign * value for sign, value in zip(signs, point, strict=True)] for point in points]
    front = []
    for index, cost in enumerate(costs):
        if not any(_dominates(other, cost) for other in costs):
            front.append(index)
    return front


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )
