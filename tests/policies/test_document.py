"""Policy documents: every kind of problem, with its exact line; parsing; the registry."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gpupool.accounting import SubsidyRules
from gpupool.model import GpupoolError
from gpupool.policies import document
from gpupool.policies.document import (
    POLICY_KINDS,
    KindRegistry,
    PolicyDocumentError,
    load_policy_file,
    parse_policy_text,
)
from gpupool.policies.fifo import FifoPolicy
from gpupool.policies.multifactor import MultifactorPolicy
from gpupool.policies.params import Aging, DomainShare, Preemption

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(PolicyDocumentError) as caught:
        parse_policy_text(textwrap.dedent(text).lstrip("\n"), source="p.yaml")
    return caught.value.problems


FULL = """
kind: multifactor
description: test
domains:
  medical:   {weight: 3.0, guarantee: {fraction: 0.25}, borrow_limit: 0.10}
  education: {weight: 2.0, guarantee: {gpus: {H100: 16, Ascend-910B: 32}}}
  general:   {weight: 1.0}
aging: {per_hour: 0.05, max_boost: 2.0}
subsidy:
  domain_rates: {medical: 0.5, education: 0.5}
  gpu_type_rates: {Ascend-910B: 0.3}
  org_cap: 20000
  period_budget: 500000
seed: 3
time_limit_s: 2.5
options: {age_weight: 10, favor_small: true}
"""


def test_full_document_parses_into_params_and_options():
    doc = parse_policy_text(FULL, source="full.yaml")
    assert doc.kind == "multifactor" and doc.source == "full.yaml" and doc.text == FULL
    assert doc.params.domain_weights == {"medical": 3.0, "education": 2.0, "general": 1.0}
    assert doc.params.shares == {
        "medical": DomainShare(fraction=0.25, borrow_limit=0.10),
        "education": DomainShare(gpus={"H100": 16, "Ascend-910B": 32}),
    }
    assert doc.params.aging == Aging(per_hour=0.05, max_boost=2.0)
    assert doc.params.preemption == Preemption()
    assert doc.params.subsidy == SubsidyRules(
        domain_rates={"medical": 0.5, "education": 0.5},
        gpu_type_rates={"Ascend-910B": 0.3},
        org_cap=20000.0,
        period_budget=500000.0,
    )
    assert (doc.params.seed, doc.params.time_limit_s) == (3, 2.5)
    assert doc.options == {"age_weight": 10.0, "favor_small": True}
    policy = doc.build()
    assert isinstance(policy, MultifactorPolicy)
    assert (policy.params, policy.age_weight, policy.favor_small) == (doc.params, 10.0, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        doc.kind = "fifo"


def test_to_dict_is_normalised_so_equivalent_documents_compare_equal():
    flow = parse_policy_text("kind: fifo\nsubsidy: {org_cap: 5, domain_rates: {b: 0.1, a: 0.2}}\n")
    block = parse_policy_text(
        "kind: fifo\nsubsidy:\n  domain_rates:\n    a: 0.2\n    b: 0.1\n  org_cap: 5.0\nseed: 0\n"
    )
    assert flow.to_dict() == block.to_dict()
    assert list(flow.to_dict()["subsidy"]["domain_rates"]) == ["a", "b"]
    assert parse_policy_text(FULL).to_dict()["domains"]["education"] == {
        "weight": 2.0,
        "guarantee": {"gpus": {"Ascend-910B": 32, "H100": 16}},
        "borrow_limit": None,
    }


def test_fifo_defaults():
    doc = parse_policy_text("kind: fifo\n")
    assert doc.build() == FifoPolicy()
    assert doc.options == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # bad values, each at its own line, all reported at once
        (
            """
            kind: priority
            domains:
              medical:
                weight: 0
                guarantee: {fraction: 1.5}
                borrow_limit: -0.1
              education: {weight: two}
            aging: {per_hour: -1, max_boost: 2}
            preemption: {enabled: maybe, min_gap: -2}
            seed: -1
            time_limit_s: 0
            """,
            [
                ("p.yaml:4 domains.medical.weight", "must be > 0"),
                ("p.yaml:5 domains.medical.guarantee.fraction", "must be > 0 and <= 1"),
                ("p.yaml:6 domains.medical.borrow_limit", "must be between 0 and 1"),
                ("p.yaml:7 domains.education.weight", "must be a number"),
                ("p.yaml:8 aging.per_hour", "must be >= 0"),
                ("p.yaml:9 preemption.enabled", "must be true or false"),
                ("p.yaml:9 preemption.min_gap", "must be >= 0"),
                ("p.yaml:10 seed", "must be >= 0"),
                ("p.yaml:11 time_limit_s", "must be > 0"),
            ],
        ),
        # subsidy section
        (
            """
            kind: fifo
            subsidy:
              domain_rates: {medical: 1.2}
              gpu_type_rates: [0.3]
              org_cap: lots
              period_budget: -5
            """,
            [
                ("p.yaml:3 subsidy.domain_rates.medical", "must be between 0 and 1"),
                ("p.yaml:4 subsidy.gpu_type_rates", "must be a mapping"),
                ("p.yaml:5 subsidy.org_cap", "must be a number or null"),
                ("p.yaml:6 subsidy.period_budget", "must be >= 0"),
            ],
        ),
        # unknown keys, with and without a close match
        (
            """
            kind: priority
            domains:
              medical: {wieght: 3}
            agin: {per_hour: 1}
            preemption: {enabled: true, ratio: 1}
            """,
            [
                (
                    "p.yaml:3 domains.medical.wieght",
                    "unknown field 'wieght' (did you mean 'weight'?)",
                ),
                ("p.yaml:4 agin", "unknown field 'agin' (did you mean 'aging'?)"),
                (
                    "p.yaml:5 preemption.ratio",
                    "unknown field 'ratio'; expected one of: enabled, min_gap, min_run_minutes,"
                    " restart_minutes, checkpoint_minutes, max_per_job",
                ),
            ],
        ),
        # guarantees: exactly one form, whole GPUs, fractions adding up to at most 1
        (
            """
            kind: priority
            domains:
              a: {guarantee: {fraction: 0.6}}
              b: {guarantee: {fraction: 0.6}}
              c: {guarantee: {fraction: 0.1, gpus: {H100: 1}}}
              d: {guarantee: {gpus: {H100: 1.5, A100: -1}}}
              e: 3
            """,
            [
                ("p.yaml:2 domains", "guaranteed fractions add up to 1.2; must be <= 1"),
                (
                    "p.yaml:5 domains.c.guarantee",
                    "give exactly one of 'gpus' (per GPU type) or 'fraction'",
                ),
                ("p.yaml:6 domains.d.guarantee.gpus.A100", "must be >= 0"),
                ("p.yaml:6 domains.d.guarantee.gpus.H100", "must be an integer"),
                ("p.yaml:7 domains.e", "must be a mapping"),
            ],
        ),
        # kind: missing, misspelt; duplicate keys
        (
            "seed: 1\n",
            [("p.yaml:1 kind", "required: one of priority, fair-share, fifo, multifactor")],
        ),
        (
            "kind: fair_share\n",
            [("p.yaml:1 kind", "unknown kind 'fair_share' (did you mean 'fair-share'?)")],
        ),
        (
            "kind: [fifo]\n",
            [("p.yaml:1 kind", "must be a string: one of priority, fair-share, fifo, multifactor")],
        ),
        (
            "kind: fifo\nseed: 1\nseed: 2\n",
            [("p.yaml:3 seed", "duplicate key (first at line 2, again at line 3)")],
        ),
        # sections a kind does not use
        (
            "kind: fifo\ndomains: {a: {weight: 2}}\npreemption: {enabled: false}\n",
            [
                ("p.yaml:2 domains", "not used by kind fifo; remove it"),
                ("p.yaml:3 preemption", "not used by kind fifo; remove it"),
            ],
        ),
        # kind options: unknown (with hint), wrong type, options of a kind that takes none
        (
            """
            kind: multifactor
            options:
              age_wieght: 5
              backfill: 1
              size_weight: "big"
            """,
            [
                (
                    "p.yaml:3 options.age_wieght",
                    "unknown option 'age_wieght' (did you mean 'age_weight'?)",
                ),
                ("p.yaml:4 options.backfill", "must be true or false"),
                ("p.yaml:5 options.size_weight", "must be a number"),
            ],
        ),
        (
            "kind: fifo\noptions: {x: 1}\n",
            [("p.yaml:2 options.x", "unknown option; kind fifo takes none")],
        ),
        # not YAML, not a mapping, empty
        (
            "kind: fifo\nseed: [1\n",
            [("p.yaml:3", "invalid YAML: expected ',' or ']', but got '<stream end>'")],
        ),
        (
            "kind: fifo\n  seed: 1\n",
            [("p.yaml:2", "invalid YAML: mapping values are not allowed here")],
        ),
        ("- kind: fifo\n", [("p.yaml:1", "must be a mapping")]),
        ("# nothing\n", [("p.yaml:1", "empty document; expected a 'kind:' mapping")]),
    ],
)
def test_every_problem_is_reported_with_its_line(text, expected):
    assert problems(text) == expected


def test_error_is_a_gpupool_error_listing_problems_one_per_line():
    error = PolicyDocumentError([("f.yaml:2 seed", "must be >= 0"), ("f.yaml:3 kind", "x")])
    assert isinstance(error, GpupoolError)
    assert str(error) == "f.yaml:2 seed: must be >= 0\nf.yaml:3 kind: x"


def test_load_policy_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("kind: fifo\nseed: x\n")
    with pytest.raises(PolicyDocumentError) as caught:
        load_policy_file(path)
    assert caught.value.problems == [(f"{path}:2 seed", "must be an integer")]
    with pytest.raises(PolicyDocumentError) as caught:
        load_policy_file(tmp_path / "missing.yaml")
    assert caught.value.problems == [
        (f"{tmp_path / 'missing.yaml'}", "cannot read: No such file or directory")
    ]


@pytest.mark.parametrize(
    "name", ["priority.yaml", "fair-share.yaml", "fifo.yaml", "multifactor.yaml"]
)
def test_examples_are_valid_and_build(name):
    try:
        doc = load_policy_file(EXAMPLES / name)
    except PolicyDocumentError as exc:
        if "not available" in str(exc):
            pytest.skip(str(exc))
        raise
    assert doc.kind == name.removesuffix(".yaml")
    assert doc.build().allocate is not None


@dataclasses.dataclass(frozen=True)
class _NeedsOption:
    params: object
    mode: str  # required: no default
    levels: tuple[int, ...] = ()
    limit: float | None = None


def test_options_checked_against_any_registered_class(monkeypatch):
    registry = KindRegistry({"broken": "gpupool.no_such_module:X"})
    registry["custom"] = _NeedsOption
    monkeypatch.setattr(document, "POLICY_KINDS", registry)
    assert problems("kind: custom\n") == [("p.yaml:1 options.mode", "required option is missing")]
    assert problems("kind: custom\noptions: {mode: a, levels: [1, x], limit: no}\n") == [
        ("p.yaml:2 options.levels", "must be a list of an integer"),
        ("p.yaml:2 options.limit", "must be a number or null"),
    ]
    doc = parse_policy_text("kind: custom\noptions: {mode: a, levels: [1, 2], limit: null}\n")
    assert doc.options == {"mode": "a", "levels": (1, 2), "limit": None}
    assert problems("kind: broken\n") == [
        (
            "p.yaml:1 kind",
            "policy kind 'broken' is not available: No module named 'gpupool.no_such_module'",
        )
    ]


def test_registry_lists_the_four_kinds_and_resolves_lazily():
    assert list(POLICY_KINDS) == ["priority", "fair-share", "fifo", "multifactor"]
    assert POLICY_KINDS["fifo"] is FifoPolicy
    assert "multifactor" in POLICY_KINDS and len(POLICY_KINDS) == 4


def test_loading_a_document_does_not_import_solvers():
    code = (
        "import sys; from gpupool.policies.document import parse_policy_text; "
        "parse_policy_text('kind: fifo'); "
        "print(sorted(m for m in ('ortools', 'simpy', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
