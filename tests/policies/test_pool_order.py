"""``placement: {pool_order: cheapest}``: fifo and multifactor try the pools an org pays least on.

The platform mirrors examples/scenarios/subsidy-*.yaml. List price per GPU-hour
/ speed = price per effective GPU-hour:

    pool      type         price  speed  per effective GPU-hour
    bj-a100   A100         14     1.0    14
    bj-h100   H100         30     2.0    15
    gz-910b   Ascend-910B  12     0.8    15
    sh-h20    H20          11     0.9    12.22 (11 / 0.9, to the cent)

The voucher programme (as in subsidy-vouchers.yaml) pays 70% on Ascend-910B
and 30% elsewhere for an org holding vouchers. The probe is one GPU for one
reference hour, i.e. one effective GPU-hour, so the org pays, in cents:

    hospital (vouchers):  gz-910b 15 x 0.3 = 4.50;  sh-h20 12.22 - 3.67 = 8.55;
                          bj-a100 14 x 0.7 = 9.80;  bj-h100 15 x 0.7 = 10.50
    lab (no vouchers):    sh-h20 12.22; bj-a100 14; bj-h100 15 = gz-910b 15 (tie: name)

Pools are added in reverse name order, so a name order that holds is the
policy's sort, not the snapshot's order.
"""

from __future__ import annotations

import dataclasses

import pytest

from gpupool.accounting import Books, Programme, SubsidyRules, Voucher, job_cost
from gpupool.accounting.pricing import EffectiveHourPrices
from gpupool.model import Charge, GpupoolError, Job, Org, Snapshot, WaitReason, fit_gang
from gpupool.policies.fifo import FifoPolicy
from gpupool.policies.multifactor import MultifactorPolicy, multifactor_factors
from gpupool.policies.params import PolicyParams, PoolPlacement
from tests.policies.builders import SnapshotBuilder, check_invariants, random_snapshot

HOUR = 3600.0
ASCEND = "Ascend-910B"
ORGS = {"hospital": Org("hospital", "medical"), "lab": Org("lab", "general")}


def params(order: str) -> PolicyParams:
    return PolicyParams(placement=PoolPlacement(pool_order=order))


POLICIES = {
    "fifo": lambda order: FifoPolicy(params=params(order)),
    "multifactor": lambda order: MultifactorPolicy(params=params(order)),
}


def platform(free: dict[str, list[int]] | None = None) -> SnapshotBuilder:
    free = free or {}
    b = SnapshotBuilder()
    b.gpu_type("A100", 1.0).gpu_type("H100", 2.0).gpu_type("H20", 0.9)
    b.gpu_type(ASCEND, 0.8, vendor="huawei", domestic=True)
    for name, gpu_type, price in (
        ("sh-h20", "H20", 11.0),
        ("gz-910b", ASCEND, 12.0),
        ("bj-h100", "H100", 30.0),
        ("bj-a100", "A100", 14.0),
    ):
        b.pool(name, gpu_type, 8, price=price, free_per_node=free.get(name))
    return b.domain("medical", 3.0).org("hospital", "medical").org("lab", "general")


def voucher_books(balance: float = 100.0) -> Books:
    domestic = Programme(
        "domestic-compute",
        rate=0.3,
        gpu_type_rates={ASCEND: 0.7},
        exchange_rates={ASCEND: 1.5},
        uses_vouchers=True,
    )
    voucher = Voucher(1, "hospital", "domestic-compute", 100.0, balance, awarded_at=0.0)
    return Books([domestic], [voucher], orgs=ORGS)


def with_pricing(builder: SnapshotBuilder, pricing) -> Snapshot:
    return dataclasses.replace(builder.build(), pricing=pricing)


def check(snapshot: Snapshot, allocation) -> None:
    """check_invariants; its charge checks know flat rules only, so a Books charge
    (in cents) is checked here and replaced by the full price for the rest."""
    if not isinstance(snapshot.pricing, Books):
        check_invariants(snapshot, allocation)
        return
    pending = {job.id: job for job in snapshot.pending}
    full = {}
    for placement in allocation.placements:
        job, pool = pending[placement.job_id], snapshot.pool_state(placement.pool).pool
        cost = job_cost(job, pool, snapshot.gpu_types[pool.gpu_type])
        charge = allocation.charges[job.id]
        assert charge.cost == pytest.approx(cost, abs=0.01)
        assert charge.cost == pytest.approx(charge.subsidy + charge.org_pays)
        full[job.id] = Charge(cost, 0.0, cost)
    unpriced = dataclasses.replace(snapshot, pricing=None)
    check_invariants(unpriced, dataclasses.replace(allocation, charges=full))


def pool_of(allocation, job_id: int) -> str | None:
    return next((p.pool for p in allocation.placements if p.job_id == job_id), None)


# ---------------------------------------------------------------------------
# The probe prices themselves
# ---------------------------------------------------------------------------

PRICE_CASES = [
    # (case, pricing, org, {pool: org pays per effective GPU-hour}) - see the module docstring
    ("no pricing: list price", None, "lab", {"bj-a100": 14, "bj-h100": 15, "gz-910b": 15}),
    ("vouchers", voucher_books(), "hospital", {"gz-910b": 4.5, "sh-h20": 8.55, "bj-a100": 9.8}),
    ("no voucher held", voucher_books(), "lab", {"gz-910b": 15, "sh-h20": 12.22, "bj-h100": 15}),
    ("voucher spent", voucher_books(balance=0.0), "hospital", {"gz-910b": 15, "bj-a100": 14}),
    # flat: H100 20% off for all = 15 x 0.8 = 12 per effective hour, though 24 per GPU-hour
    ("flat rules", SubsidyRules(gpu_type_rates={"H100": 0.2}), "lab", {"bj-h100": 12}),
    # flat 50% for medical, 1 - 0.5 x 0.5 = 75% on Ascend: 15 x 0.25 = 3.75
    (
        "flat rates stack",
        SubsidyRules(domain_rates={"medical": 0.5}, gpu_type_rates={ASCEND: 0.5}),
        "hospital",
        {"gz-910b": 3.75, "bj-a100": 7.0},
    ),
]


@pytest.mark.parametrize(
    ("case", "pricing", "org", "want"), PRICE_CASES, ids=[c[0] for c in PRICE_CASES]
)
def test_probe_is_what_the_org_pays_per_effective_gpu_hour(case, pricing, org, want):
    snapshot = with_pricing(platform(), pricing)
    prices = EffectiveHourPrices(snapshot)
    domain = snapshot.orgs[org].domain
    for pool_name, price in want.items():
        pool = snapshot.pool_state(pool_name).pool
        assert prices.org_pays(org, domain, pool) == pytest.approx(price, abs=1e-9), pool_name


def test_flat_subsidy_caps_limit_the_probe_like_a_quote():
    # 10 of subsidy left for the org: the probe on H100 (15, 20% = 3) is not capped,
    # but with 1 left it gets 1: pays 14.
    rules = SubsidyRules(gpu_type_rates={"H100": 0.2})
    builder = platform().org("lab", "general", subsidy_cap=1.0)
    snapshot = with_pricing(builder, rules)
    pool = snapshot.pool_state("bj-h100").pool
    assert EffectiveHourPrices(snapshot).org_pays("lab", "general", pool) == pytest.approx(14.0)


def test_probes_see_the_round_start_not_jobs_booked_during_it():
    # The policy admits job 1 (uses voucher hours); the probe tracker never admits, so a
    # second look gives the round-start figure again.
    snapshot = with_pricing(platform().job(8, hours=50.0, org="hospital"), voucher_books(1.0))
    prices = EffectiveHourPrices(snapshot)
    ascend = snapshot.pool_state("gz-910b").pool
    first = prices.org_pays("hospital", "medical", ascend)
    FifoPolicy(params=params("cheapest")).allocate(snapshot)
    assert prices.org_pays("hospital", "medical", ascend) == first == pytest.approx(4.5)


# ---------------------------------------------------------------------------
# Where a one-GPU job goes, per order, for both baselines
# ---------------------------------------------------------------------------

PLACE_CASES = [
    # (case, pricing, org, job's GPU types, pool under "name", pool under "cheapest")
    ("vouchers steer to Ascend", voucher_books(), "hospital", (), "bj-a100", "gz-910b"),
    ("no vouchers: list price", voucher_books(), "lab", (), "bj-a100", "sh-h20"),
    ("no pricing: list price", None, "hospital", (), "bj-a100", "sh-h20"),
    ("tie at 15 goes by name", None, "lab", ("H100", ASCEND), "bj-h100", "bj-h100"),
    ("tie, Ascend allowed first", None, "lab", (ASCEND, "H100"), "bj-h100", "bj-h100"),
    ("flat rules", SubsidyRules(gpu_type_rates={"H100": 0.2}), "lab", (), "bj-a100", "bj-h100"),
    ("voucher spent", voucher_books(0.0), "hospital", (ASCEND, "A100"), "bj-a100", "bj-a100"),
]


@pytest.mark.parametrize("kind", sorted(POLICIES))
@pytest.mark.parametrize(
    ("case", "pricing", "org", "types", "by_name", "cheapest"),
    PLACE_CASES,
    ids=[c[0] for c in PLACE_CASES],
)
def test_one_job_goes_to_the_first_pool_of_the_order(
    kind, case, pricing, org, types, by_name, cheapest
):
    snapshot = with_pricing(platform().job(1, org=org, types=types), pricing)
    for order, want in (("name", by_name), ("cheapest", cheapest)):
        allocation = POLICIES[kind](order).allocate(snapshot)
        check(snapshot, allocation)
        assert pool_of(allocation, 1) == want, order


@pytest.mark.parametrize("kind", sorted(POLICIES))
def test_cheapest_pool_full_takes_the_next_cheapest(kind):
    # Ascend has 0 free: hospital's next cheapest is sh-h20 (8.55), not bj-a100 (9.80)
    builder = platform({"gz-910b": [0]}).job(2, org="hospital")
    snapshot = with_pricing(builder, voucher_books())
    allocation = POLICIES[kind]("cheapest").allocate(snapshot)
    assert pool_of(allocation, 1) == "sh-h20"


@pytest.mark.parametrize("kind", sorted(POLICIES))
def test_two_orgs_in_one_round_each_get_their_own_cheapest(kind):
    builder = platform().job(1, org="hospital").job(1, org="lab").job(1, org="hospital")
    snapshot = with_pricing(builder, voucher_books())
    allocation = POLICIES[kind]("cheapest").allocate(snapshot)
    assert [pool_of(allocation, i) for i in (1, 2, 3)] == ["gz-910b", "sh-h20", "gz-910b"]


def test_default_order_is_value_and_a_bad_order_is_refused():
    assert PolicyParams().placement.pool_order == "value"
    with pytest.raises(GpupoolError, match="pool_order") as caught:
        PoolPlacement(pool_order="cheap")
    assert caught.value.location == "placement.pool_order"


# ---------------------------------------------------------------------------
# Multifactor: the reservation and the backfill check follow the same order
# ---------------------------------------------------------------------------


def test_backfill_leaves_the_cheapest_pool_when_it_would_delay_the_reservation():
    # gz-910b: 6 of 8 GPUs busy until +2 h. Job 10 (8 GPUs, Ascend only, medical) is on
    # top and reserved on gz-910b at +2 h. Job 11 (hospital, 2 GPUs, 3 h = 3.75 h on
    # Ascend) would hold gz-910b's last 2 GPUs past +2 h: it goes to its next cheapest,
    # sh-h20. Job 12 (1 GPU, 1 h = 1.25 h on Ascend) ends before +2 h: gz-910b is fine.
    builder = (
        platform()
        .running(6, "gz-910b", org="lab", ends_in_hours=2.0)
        .job(8, org="hospital", types=(ASCEND,), id=10)
        .job(2, hours=3.0, org="hospital", id=11)
        .job(1, hours=1.0, org="hospital", id=12)
    )
    snapshot = with_pricing(builder, voucher_books())
    allocation = MultifactorPolicy(params=params("cheapest")).allocate(snapshot)
    check(snapshot, allocation)
    assert allocation.waiting == {10: WaitReason.NO_CAPACITY}
    assert (pool_of(allocation, 11), pool_of(allocation, 12)) == ("sh-h20", "gz-910b")


def test_reservation_on_equal_start_goes_to_the_cheapest_pool_and_backfill_follows():
    # bj-a100 and gz-910b both have 6 GPUs busy until +2 h. Job 10 (hospital, 8 GPUs,
    # A100 or Ascend) is reserved at +2 h on its cheapest pool, gz-910b (4.50 < 9.80);
    # under name order on bj-a100. Job 11 (lab, 2 GPUs, 3 h, A100 or Ascend; lab pays 14
    # on A100, 15 on Ascend, so both orders try bj-a100 first) would delay a reservation
    # on the pool it takes:
    # - cheapest: the reservation is on gz-910b, so bj-a100 is free to take;
    # - name: the reservation is on bj-a100, so it goes to gz-910b (not reserved).
    types = ("A100", ASCEND)
    builder = (
        platform()
        .running(6, "bj-a100", org="lab", ends_in_hours=2.0)
        .running(6, "gz-910b", org="lab", ends_in_hours=2.0)
        .job(8, org="hospital", types=types, id=10)
        .job(2, hours=3.0, org="lab", types=types, id=11)
    )
    snapshot = with_pricing(builder, voucher_books())
    for order, want in (("cheapest", "bj-a100"), ("name", "gz-910b")):
        allocation = MultifactorPolicy(params=params(order)).allocate(snapshot)
        check(snapshot, allocation)
        assert allocation.waiting == {10: WaitReason.NO_CAPACITY}, order
        assert pool_of(allocation, 11) == want, order


def test_backfill_never_delays_the_reserved_job_on_random_platforms():
    """The top blocked job can start no later than it could before anything backfilled.

    Random platforms with flat subsidies per domain and GPU type, so orgs of
    different domains order the pools differently.
    """
    policy = MultifactorPolicy(params=params("cheapest"))
    checked = backfilled = 0
    for seed in range(60):
        snapshot = random_snapshot(seed, jobs=30, pools=4, running=8)
        allocation = policy.allocate(snapshot)
        head, before, behind = _top_blocked(snapshot, allocation, policy)
        if head is None:
            continue
        promised = earliest_start(snapshot, head, before)
        if promised is None:
            continue
        after = earliest_start(snapshot, head, before + behind)
        assert after is not None and after <= promised, f"seed {seed}: job {head.id} delayed"
        checked += 1
        backfilled += bool(behind)
    assert checked >= 20 and backfilled >= 10  # the property was put to the test


def _top_blocked(snapshot: Snapshot, allocation, policy: MultifactorPolicy):
    """The first job in priority order that found no room, and the starts before/behind it."""

    def key(job: Job):
        return (-multifactor_factors(snapshot, job, policy)["priority"], job.submitted_at, job.id)

    order = sorted(snapshot.pending, key=key)
    placed = {p.job_id: p for p in allocation.placements}
    for i, job in enumerate(order):
        if allocation.waiting.get(job.id) is WaitReason.NO_CAPACITY:
            before = [placed[j.id] for j in order[:i] if j.id in placed]
            behind = [placed[j.id] for j in order[i + 1 :] if j.id in placed]
            return job, before, behind
    return None, [], []


def earliest_start(snapshot: Snapshot, job: Job, started: list) -> float | None:
    """When ``job``'s gang first fits some allowed pool, given running jobs and ``started``.

    Written apart from the policy: at each candidate time, every holder that
    has ended by then gives its GPUs back.
    """
    now = snapshot.now
    pending = {j.id: j for j in snapshot.pending}
    holders = [(max(r.expected_end, now), r.placement) for r in snapshot.running]
    free = {state.pool.name: list(state.free_per_node) for state in snapshot.pools}
    for placement in started:
        pool = snapshot.pool_state(placement.pool).pool
        speed_type = snapshot.gpu_types[pool.gpu_type]
        end = now + pending[placement.job_id].runtime_hours_on(speed_type) * HOUR
        holders.append((end, placement))
        for index, taken in placement.nodes:
            free[pool.name][index] -= taken
    starts = []
    for state in snapshot.pools:
        pool = state.pool
        if not job.allows(pool.gpu_type):
            continue
        for at in sorted({now} | {end for end, p in holders if p.pool == pool.name}):
            projected = list(free[pool.name])
            for end, placement in holders:
                if placement.pool == pool.name and end <= at:
                    for index, taken in placement.nodes:
                        projected[index] += taken
            if fit_gang(projected, job.gpus, pool.gpus_per_node) is not None:
                starts.append(at)
                break
    return min(starts, default=None)
