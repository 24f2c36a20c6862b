"""The ``placement`` section of a policy document: parsed, normalised, refused where unused."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from gpupool.policies.document import PolicyDocumentError, load_policy_file, parse_policy_text
from gpupool.policies.fifo import FifoPolicy
from gpupool.policies.multifactor import MultifactorPolicy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"


def parse(text: str):
    return parse_policy_text(textwrap.dedent(text).lstrip("\n"), source="p.yaml")


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(PolicyDocumentError) as caught:
        parse(text)
    return caught.value.problems


@pytest.mark.parametrize(
    ("kind", "cls"), [("fifo", FifoPolicy), ("multifactor", MultifactorPolicy)]
)
def test_cheapest_reaches_the_policy_and_survives_a_round_trip(kind, cls):
    doc = parse(f"kind: {kind}\nplacement: {{pool_order: cheapest}}\n")
    policy = doc.build()
    assert isinstance(policy, cls) and policy.params.placement.pool_order == "cheapest"
    normal = doc.to_dict()
    assert normal["placement"] == {"pool_order": "cheapest"}
    # the normalised section, written back as YAML, parses to the same document
    again = parse(yaml.safe_dump({"kind": kind, "placement": normal["placement"]}))
    assert again.params == doc.params and again.to_dict() == normal


def test_without_the_section_the_order_is_by_value():
    doc = parse("kind: multifactor\n")
    assert doc.params.placement.pool_order == "value"
    assert doc.to_dict()["placement"] == {"pool_order": "value"}


BAD = [
    # (document, the one problem: location, message)
    (
        "kind: fifo\nseed: 1\nplacement:\n  pool_order: cheap\n",
        "p.yaml:4 placement.pool_order",
        "unknown pool order 'cheap' (did you mean 'cheapest'?)",
    ),
    (
        "kind: fifo\nplacement: {pool_order: 3}\n",
        "p.yaml:2 placement.pool_order",
        "must be one of: value, name, cheapest",
    ),
    (
        "kind: multifactor\nplacement:\n  pool_ordr: name\n",
        "p.yaml:3 placement.pool_ordr",
        "unknown field 'pool_ordr' (did you mean 'pool_order'?)",
    ),
    ("kind: fifo\nplacement: cheapest\n", "p.yaml:2 placement", "must be a mapping"),
    # kinds that do not read the section refuse it rather than ignore it
    (
        "kind: priority\nplacement: {pool_order: name}\n",
        "p.yaml:2 placement",
        "not used by kind priority; remove it",
    ),
    (
        "kind: fair-share\n\nplacement: {pool_order: cheapest}\n",
        "p.yaml:3 placement",
        "not used by kind fair-share; remove it",
    ),
]


@pytest.mark.parametrize(("text", "where", "what"), BAD)
def test_bad_placement_is_reported_with_file_line_and_field(text, where, what):
    assert problems(text) == [(where, what)]


def test_subsidy_comparison_policy_uses_the_cheapest_order():
    doc = load_policy_file(EXAMPLES / "subsidy-multifactor.yaml")
    assert doc.params.placement.pool_order == "cheapest"
