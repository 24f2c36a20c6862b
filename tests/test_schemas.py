"""`gpupool schema KIND`: JSON Schema for editors that agrees with the readers.

Every shipped example validates against the printed schema (with a JSON Schema
validator, as an editor would) and against the pydantic model; the schemas'
key sets are the readers' own; wrong documents are refused by the schema too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpupool import located_yaml, schemas
from gpupool.cli.main import app
from gpupool.files import POLICY, SCENARIO, SWEEP
from gpupool.policies import document
from gpupool.policies import options as policy_options
from gpupool.policies import schema as policy_schema
from gpupool.scheduler import batch
from gpupool.simulations import scenario, sweep

jsonschema_rs = pytest.importorskip("jsonschema_rs")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _printed(kind: str) -> dict:
    result = CliRunner().invoke(app, ["schema", kind])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _yaml(path: Path, kind) -> object:
    return schemas.json_ready(located_yaml.to_python(located_yaml.load(path, kind)))


@pytest.mark.parametrize(
    ("kind", "folder", "file_kind"),
    [("policy", "policies", POLICY), ("scenario", "scenarios", SCENARIO)],
)
def test_every_shipped_example_validates(kind, folder, file_kind):
    validator = jsonschema_rs.validator_for(_printed(kind))
    paths = sorted((EXAMPLES / folder).glob("*.yaml"))
    assert len(paths) >= 5
    for path in paths:
        value = _yaml(path, file_kind)
        errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(value)]
        assert errors == [], path.name
        schemas.adapter(kind).validate_python(value)


def test_the_scenario_programmes_validate_as_a_programmes_file():
    validator = jsonschema_rs.validator_for(_printed("programmes"))
    path = EXAMPLES / "scenarios" / "subsidy-vouchers-sample.yaml"
    value = _yaml(path, SCENARIO)
    section = {key: value[key] for key in ("programmes", "vouchers")}
    assert validator.is_valid(section)
    assert validator.is_valid(section["programmes"])  # a bare list of programmes


def test_batch_files_in_both_shapes_validate():
    validator = jsonschema_rs.validator_for(_printed("batch"))
    job = {"org": "lab", "gpus": 8, "hours": "2.5", "gpu_types": ["A100", "H100"], "key": "r1"}
    assert validator.is_valid([job, {"org": "hosp", "gpus": "1", "hours": 1, "gpu_type": "A100"}])
    assert validator.is_valid({"jobs": [job]})
    assert not validator.is_valid([{**job, "gpu": 8}])  # a misspelt column
    assert not validator.is_valid([{"gpus": 1, "hours": 1}])  # no org
    assert not validator.is_valid({"jobs": [job], "more": []})


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("kind: priority\ndomains: {a: {weight: 0}}\n", "/domains/a/weight"),
        ("kind: fifo\npreemption: {enabled: true}\n", ""),  # fifo reads no preemption
        ("kind: fair-share\nplacement: {pool_order: name}\n", ""),  # opt-in sections
        ("kind: multifactor\noptions: {age_weigth: 1}\n", "/options"),
        ("kind: priority\nseed: -1\n", "/seed"),
        ("kind: priority\ntime_limit_s: 0\n", "/time_limit_s"),
        ("kind: lottery\n", "/kind"),
        ("kind: fifo\nsubsidy: {domain_rates: {a: 1.5}}\n", "/subsidy/domain_rates/a"),
    ],
)
def test_the_policy_schema_refuses_what_the_reader_refuses(text, path):
    validator = jsonschema_rs.validator_for(_printed("policy"))
    value = located_yaml.to_python(located_yaml.compose(text, "p.yaml"))
    errors = list(validator.iter_errors(value))
    assert errors
    paths = {"".join(f"/{part}" for part in e.instance_path) for e in errors}
    assert path in paths
    with pytest.raises(document.PolicyDocumentError):
        document.parse_policy_text(text, "p.yaml")


def _properties(schema: dict, name: str) -> set[str]:
    return set(schema["$defs"][name]["properties"])


def test_schema_keys_are_the_readers_keys():
    policy = _printed("policy")
    kinds = {
        d["properties"]["kind"]["const"]: set(d["properties"])
        for name, d in policy["$defs"].items()
        if name.endswith("Policy")
    }
    assert set(kinds) == set(document.POLICY_KINDS)
    assert set().union(*kinds.values()) == set(document.SECTIONS)
    for kind, keys in kinds.items():
        cls = document.POLICY_KINDS[kind]
        unused = set(getattr(cls, "UNUSED_SECTIONS", ()))
        opted = document.OPT_IN_SECTIONS - set(getattr(cls, "OPT_IN_SECTIONS", ()))
        assert keys == set(document.SECTIONS) - unused - opted, kind
        options = policy["$defs"][f"{policy_schema._title(kind)}Options"]["properties"]
        assert set(options) == set(policy_options.option_fields(cls)), kind

    sc = _printed("scenario")
    assert set(sc["properties"]) == set(scenario._TOP_KEYS)
    assert _properties(sc, "Stream") == set(scenario._STREAM_KEYS)
    assert _properties(sc, "SyntheticWorkload") == set(scenario._SYNTHETIC_KEYS)
    assert _properties(sc, "PhillyWorkload") == set(scenario._PHILLY_KEYS)
    assert _properties(sc, "AlibabaWorkload") == set(scenario._ALIBABA_KEYS)

    from gpupool.accounting import declarations

    programmes = _printed("programmes")
    entries = declarations.ProgrammeEntry, declarations.VoucherEntry
    for model in entries:
        assert _properties(programmes, model.__name__) == set(model.model_fields)

    columns = _properties(_printed("batch"), "BatchJob")
    assert columns == {*batch.REQUIRED, *batch.OPTIONAL, *batch._ALIASES}

    assert set(_printed("sweep")["properties"]) == set(sweep._KEYS)


def test_the_shipped_sweeps_validate_and_wrong_ones_do_not():
    validator = jsonschema_rs.validator_for(_printed("sweep"))
    paths = sorted((EXAMPLES / "sweeps").glob("*.yaml"))
    assert paths
    for path in paths:
        value = _yaml(path, SWEEP)
        assert [e.message for e in validator.iter_errors(value)] == [], path.name
        schemas.adapter("sweep").validate_python(value)
    good = {"scenarios": "s.yaml", "policies": ["p.yaml"], "priority_domain": "medical"}
    assert validator.is_valid({**good, "parameters": {"policy.seed": [1, 2]}})
    assert not validator.is_valid({**good, "parameters": {"budget.x": [1]}})  # no target
    assert not validator.is_valid({**good, "parameters": {"policy.seed": []}})
    assert not validator.is_valid({**good, "search": {"random": {"seed": 1}}})  # no samples
    assert not validator.is_valid({**good, "seed": 3})  # a misspelt key


def test_unknown_kind_is_a_one_line_error():
    result = CliRunner().invoke(app, ["schema", "policies"])
    assert (result.exit_code, result.stderr) == (
        2,
        "error: KIND: unknown file format 'policies'; one of: policy, scenario, programmes, "
        "batch, sweep\n",
    )
    from gpupool.cli import schema

    assert schema.KINDS == schemas.KINDS


def test_the_readers_validate_with_the_printed_models_and_the_cli_start_does_not():
    """The models are the readers' own: reading a policy document validates with the
    model `schema policy` prints. The CLI's start-up never pays for pydantic."""
    cls = document.POLICY_KINDS["priority"]
    read = policy_schema.kind_model(
        "priority", cls, document.SECTIONS, document.unused_sections(cls)
    )
    printed = _printed("policy")["$defs"][read.__name__]
    assert set(printed["properties"]) == set(read.model_fields)
    with pytest.raises(document.PolicyDocumentError) as caught:  # the model's own check
        document.parse_policy_text("kind: priority\ndomains: {a: {weight: 0}}\n", "p.yaml")
    assert caught.value.problems == [("p.yaml:2 domains.a.weight", "must be > 0")]
    assert printed["properties"]["domains"]["additionalProperties"]["$ref"].endswith(
        "/DomainSettings"
    )
    code = (
        "import sys; import gpupool.cli.main; "
        "print(sorted(m for m in ('pydantic', 'gpupool.located_schema') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
