"""Request bodies and response shapes, for validation and the OpenAPI document.

Request fields that the service layer validates (numbers given as numbers or
text, names) are passed through loosely typed, so a bad value gets the same
one-line message as on the command line (``--gpus: must be a positive whole
number, got 'x'``), not a second wording. String lengths are capped here at
the database column sizes, so an over-long value is a 422, never a driver error.

Response models mirror the service's ``*_view`` dicts (the CLI's ``--json``).
They allow extra keys so a view that grows a field passes it through; the
OpenAPI document then still describes every field it had.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(max_length=128)]
LongName = Annotated[str, Field(max_length=256)]
Number = int | float | str
Text = Annotated[str, Field(max_length=64)]
FileName = Annotated[str, Field(max_length=255)]
Comment = Annotated[str, Field(max_length=10_000)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _View(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- jobs --------------------------------------------------------------------


class JobSubmit(_Request):
    org: Name
    gpus: Number
    hours: Number
    gpu_types: list[Name] = Field(default_factory=list, max_length=64)
    name: LongName = ""
    priority: Number = 0
    key: Annotated[str, Field(max_length=128)] | None = Field(
        None, description="Idempotency key: a retry with the same key returns the same job."
    )
    payload: dict[str, Any] | None = Field(
        None,
        description="What to run: argv (a list) or script (text), workdir, env ({NAME: "
        "value}), image, stdout, stderr (docs/sites.md).",
    )
    job_class: Text = Field("", description="The job's class (job-classes); empty: none.")


class JobBatch(_Request):
    filename: FileName = Field(
        "jobs.csv", description="Its suffix (.csv, .yaml, .yml) picks the format; errors cite it."
    )
    content: str = Field(..., description="The file's text: a CSV or YAML list of jobs.")


class JobFinish(_Request):
    failed: bool = False
    at: Text | None = Field(None, description="When it ended, ISO 8601 (default: now).")


class Grace(_Request):
    grace: Text | None = Field(None, description="Timeout grace past the estimate, e.g. 10%+5m.")


class SubmitResult(_View):
    id: int
    created: bool


class JobView(_View):
    id: int
    name: str
    org: str
    domain: str
    gpus: int
    gpu_types: list[str]
    hours: float
    priority: int
    job_class: str | None = None
    state: str
    submitted_at: str | None
    started_at: str | None
    ended_at: str | None
    pool: str | None
    wait_reason: str | None
    end_reason: str | None
    submitted_by: str


class JobPage(_View):
    """One page of `job list`, in id order."""

    jobs: list[JobView]
    limit: int
    next_after: int | None = Field(
        description="The next page is ?after=<this> (same filters); null on the last page."
    )
    previous_before: int | None = Field(
        description="The page before is ?before=<this>; null on the first page."
    )


class PlacementView(_View):
    pool: str
    nodes: list[list[int]]
    started_at: str | None
    ended_at: str | None
    reason: str | None
    end_reason: str | None = None
    run_started_at: str | None = None
    exit_code: int | None = None
    run_detail: str | None = None


class JobDetail(JobView):
    payload: dict[str, Any] | None = None
    placements: list[PlacementView]
    accounting: dict[str, Any] | None


class Reaped(_View):
    timed_out: list[int]


# --- platform ----------------------------------------------------------------


class GpuTypeAdd(_Request):
    name: Text
    vendor: Text
    memory_gb: Number
    speed: Number = 1.0
    domestic: bool = False


class GpuTypeView(_View):
    name: str
    vendor: str
    memory_gb: int
    speed: float
    domestic: bool


class JobClassAdd(_Request):
    name: Text
    speeds: dict[Text, Number] = Field(
        ..., max_length=1000, description="GPU type name -> the class's speed there (A100 = 1)."
    )


class JobClassView(_View):
    name: str
    speeds: dict[str, float]


class PoolAdd(_Request):
    name: Text
    site: Text
    gpu_type: Text
    gpus: Number
    gpus_per_node: Number = 8
    price_per_gpu_hour: Number


class PoolView(_View):
    name: str
    site: str
    gpu_type: str
    gpus: int
    gpus_per_node: int
    price_per_gpu_hour: float
    free_gpus: int


class DomainAdd(_Request):
    name: Text
    weight: Number = 1.0


class DomainView(_View):
    name: str
    weight: float


class OrgAdd(_Request):
    name: Name
    domain: Text
    budget: Number | None = None


class OrgView(_View):
    name: str
    domain: str
    budget: float | None


class UserAdd(_Request):
    name: Name
    role: Text
    org: Name | None = None
    site: Text | None = Field(None, description="The site an agent acts for.")


class UserView(_View):
    name: str
    role: str
    org: str | None
    site: str | None = None


class UserRole(_Request):
    role: Text
    org: Name | None = None
    site: Text | None = Field(None, description="The site an agent acts for.")


class UserRemoved(UserView):
    tokens_removed: int = Field(description="API tokens of the user removed with it.")


# --- policy ------------------------------------------------------------------


class PolicyText(_Request):
    content: str = Field(..., description="The policy document (YAML).")
    filename: FileName = Field("policy.yaml", description="Named in file:line errors.")


class PolicyApply(PolicyText):
    comment: Comment = ""


class PolicyRollback(_Request):
    version: Annotated[str, Field(max_length=32)] | int
    comment: Comment = ""


class PolicyWhatIf(PolicyText):
    since: Text = "30d"
    until: Text | None = None
    files: bool = Field(
        False,
        description="Also return `files`: {name: text} of `policy whatif --out` "
        "(whatif.json, jobs-current.csv, jobs-proposed.csv), bounded in size.",
    )


class PolicyValid(_View):
    kind: str
    domains: int


class PolicyVersionView(_View):
    version: int
    kind: str
    applied_by: str
    applied_at: str | None
    active: bool
    comment: str


class PolicyVersionText(PolicyVersionView):
    document: str


class PolicyDiffView(_View):
    old: int
    new: int
    changes: list[str]
    diff: str


# --- scheduling --------------------------------------------------------------


class ScheduleRequest(_Request):
    dry_run: bool = False
    grace: Text | None = None


class StartedView(_View):
    job: int
    org: str
    gpus: int
    pool: str
    nodes: list[list[int]]
    cost: float
    subsidy: float
    org_pays: float
    why: str | None


class WaitingView(_View):
    job: int
    org: str
    gpus: int
    reason: str


class ScheduleView(_View):
    round: int | None
    dry_run: bool
    policy: str
    started: list[StartedView]
    waiting: list[WaitingView]
    preempted: list[int]
    timed_out: list[int]
    skipped: dict[str, str]
    quarantined: dict[str, str] = Field(
        default_factory=dict, description="Jobs failed for bad stored data, and why."
    )
    set_aside: dict[str, str] = Field(
        default_factory=dict, description="Stored rows the round left out, and why."
    )
    lost: dict[str, str] = Field(
        default_factory=dict,
        description="Running jobs of lost sites this round requeued or failed (docs/sites.md).",
    )
    solve_seconds: float


# --- programmes, vouchers, reports -------------------------------------------


class ProgrammesAdd(_Request):
    programmes: list[dict[str, Any]] | None = Field(
        None, max_length=1000, description="Declarations, as in a programmes: YAML list."
    )
    content: str | None = Field(None, description="Or a YAML file's text with a programmes list.")
    filename: FileName = "programmes.yaml"


class ProgrammeView(_View):
    name: str
    period: str
    budget: float | None
    rate: float
    domains: list[str]
    orgs: list[str]
    vouchers: bool
    org_cap: float | None
    when_exhausted: str
    job_cap: float | None = None
    pacing: str = "none"
    org_share: float | None = None


class VoucherAward(_Request):
    org: Name
    programme: Name
    amount: Number
    expires: Text | None = None
    at: Text | None = None


class VoucherView(_View):
    id: int
    org: str
    programme: str | None
    amount: float
    balance: float
    awarded_at: str | None
    expires_at: str | None


class UsageRow(_View):
    period: str
    gpu_hours: float
    effective_gpu_hours: float
    cost: float
    subsidy: float
    org_pays: float
    jobs: int


class SubsidyRow(_View):
    programme: str
    period: str
    org: str | None
    budget: float | None
    subsidy: float
    cost: float
    org_pays: float
    effective_gpu_hours: float
    voucher_hours: float


# --- health ------------------------------------------------------------------


class Health(_View):
    status: str


class Readiness(_View):
    status: str
    revision: str | None = None
    reason: str | None = None


class ExportView(_View):
    kind: str
    site: str | None
    text: str


# --- site agents -------------------------------------------------------------

RunId = Annotated[int, Field(gt=0, le=2_147_483_647)]
Epoch = Annotated[float, Field(ge=0, le=7_258_118_400, allow_inf_nan=False)]


class RunKeyIn(_Request):
    job_id: RunId
    run_id: RunId = Field(description="The placement's id (a start's run_id).")


class RunReportIn(RunKeyIn):
    phase: Literal["running", "ended", "failed"]
    started_at: Epoch | None = Field(None, description="Epoch seconds, as the site saw them.")
    ended_at: Epoch | None = None
    exit_code: Annotated[int, Field(ge=-255, le=1_000_000)] | None = None
    detail: Annotated[str, Field(max_length=256)] = ""


class RunReports(_Request):
    reports: list[RunReportIn] = Field(max_length=1_000)


class Heartbeat(_Request):
    running: list[RunKeyIn] = Field(
        default_factory=list, max_length=10_000, description="The runs the site runs now."
    )


class StartView(_View):
    job_id: int
    run_id: int
    pool: str
    gpu_type: str
    vendor: str
    nodes: list[list[Any]] = Field(description="[[node index, [GPU index, ...]], ...]")
    time_limit_s: float
    started_at: float
    run_started_at: float | None
    payload: dict[str, Any]


class Starts(_View):
    site: str
    starts: list[StartView]


class ReportOutcome(_View):
    job_id: int
    run_id: int
    outcome: str = Field(description="recorded, unchanged, or stop (the server ended it).")


class ReportResults(_View):
    site: str
    results: list[ReportOutcome]


class StopOrder(_View):
    job_id: int
    run_id: int
    reason: str


class Orders(_View):
    site: str
    stop: list[StopOrder]


class SiteView(_View):
    name: str
    agent: str
    last_seen_at: str | None
    reachable: bool
