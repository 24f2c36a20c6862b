import pytest
import yaml

from gpupool.accounting.declarations import parse_programmes, parse_vouchers
from gpupool.accounting.periods import PeriodSpec, label_bounds, parse_instant
from gpupool.model import GpupoolError

DOC = """\
programmes:
  - name: health-q4
    period: 2026-Q4
    budget: 100000
    domains: [medical]
    rate: 0.5
    gpu_type_rates: {Ascend-910B: 0.8}
    vouchers: true
    exchange_rates: {A100: 1.0, H100: 0.6, Ascend-910B: 1.5}
    org_cap: 20000
    end_of_period: {carry_over: 0.5}
    when_exhausted: wait
  - name: edu
    period: quarterly
    orgs: [thu]
    rate: 0.3
vouchers:
  - {org: pumc, programme: health-q4, amount: 500, awarded_at: 2026-10-01}
  - {id: 9, org: pumc, programme: health-q4, amount: 50, balance: 20, awarded_at: 2026-10-02,
     expires_at: 2026-11-01}
"""


def parse(text):
    node = yaml.compose(text)
    programmes = parse_programmes(node, "s.yaml")
    return programmes, parse_vouchers(node, "s.yaml", programmes)


def test_a_full_declaration():
    (health, edu), (first, second) = parse(DOC)
    assert health.period == PeriodSpec("fixed", *label_bounds("2026-Q4"))
    assert (health.rate, health.rate_for("Ascend-910B"), health.carry_over) == (0.5, 0.8, 0.5)
    assert health.exchange_rates == {"A100": 1.0, "H100": 0.6, "Ascend-910B": 1.5}
    assert (health.uses_vouchers, health.when_exhausted, health.org_cap) == (True, "wait", 20000.0)
    assert edu.period == PeriodSpec(kind="quarter") and edu.orgs == frozenset({"thu"})
    assert (first.id, first.balance, first.expires_at) == (1, 500.0, label_bounds("2026-Q4")[1])
    assert (second.id, second.balance) == (9, 20.0)
    assert second.expires_at == parse_instant("2026-11-01", "x")


@pytest.mark.parametrize(
    ("old", "new", "location", "message"),
    [
        (
            "rate: 0.5",
            "rate: 1.5",
            "s.yaml:6 programmes[0].rate",
            "must be between 0 and 1",
        ),
        ("2026-Q4", "2026-Q5", "s.yaml:3 programmes[0].period", "period is a label like 2026-Q4"),
        ("budget: 100000", "budgte: 1", "s.yaml:4 programmes[0].budgte", "unknown field 'budgte'"),
        (
            "when_exhausted: wait",
            "when_exhausted: never",
            "s.yaml:12 programmes[0].when_exhausted",
            "unknown value 'never'; expected one of: full_price, wait",
        ),
        (
            "H100: 0.6",
            "H100: 0",
            "s.yaml:9 programmes[0].exchange_rates.H100",
            "must be > 0",
        ),
        (
            "carry_over: 0.5",
            "carry_over: 2",
            "s.yaml:11 programmes[0].end_of_period",
            "end_of_period is 'expire' or {carry_over",
        ),
        ("name: edu", "name: health-q4", "s.yaml:13 programmes[1].name", "declared twice"),
        (
            "amount: 500",
            "amount: -5",
            "s.yaml:18 vouchers[0].amount",
            "must be >= 0",
        ),
        (
            "programme: health-q4, amount: 500",
            "programme: edu, amount: 500",
            "s.yaml:18 vouchers[0].programme",
            "programme 'edu' does not use vouchers",
        ),
        ("balance: 20", "balance: 80", "s.yaml:19 vouchers[1].balance", "between 0 and its amount"),
        (
            "awarded_at: 2026-10-01}",
            "awarded_at: soon}",
            "s.yaml:18 vouchers[0].awarded_at",
            "expected a date or time",
        ),
    ],
)
def test_errors_name_file_line_and_field(old, new, location, message):
    assert old in DOC
    with pytest.raises(GpupoolError) as err:
        parse(DOC.replace(old, new, 1))
    assert err.value.location == location
    assert message in err.value.message


def test_missing_required_field():
    with pytest.raises(GpupoolError) as err:
        parse("vouchers:\n  - {org: pumc, amount: 5, awarded_at: 0}\nprogrammes: []\n")
    assert (err.value.location, err.value.message) == (
        "s.yaml:2 vouchers[0].programme",
        "programme is required",
    )


def test_plain_dicts_and_name_keyed_mappings():
    programmes = parse_programmes({"programmes": {"p": {"rate": 0.25}}}, "admin")
    assert programmes[0].name == "p" and programmes[0].rate == 0.25
    with pytest.raises(GpupoolError) as err:
        parse_programmes([{"name": "p", "rate": "high"}], "admin")
    assert err.value.location == "admin programmes[0].rate"


class Located(dict):
    """What the scenario loader hands over: entries that know their lines."""

    location = "scenario.yaml:30 vouchers[0]"

    def where(self, key):
        return f"scenario.yaml:31 vouchers[0].{key}"


def test_entries_that_already_know_their_location():
    with pytest.raises(GpupoolError) as err:
        parse_vouchers((Located(org="a", programme="p", amount=0, awarded_at=0),), "scenario.yaml")
    assert err.value.location == "scenario.yaml:31 vouchers[0].amount"
    assert err.value.message == "a voucher amount must be > 0"
