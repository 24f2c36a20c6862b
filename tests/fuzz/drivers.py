"""One driver per CLI command: generated hostile values mapped onto its options.

A driver is a Hypothesis strategy of ``Case``: the files to write, then one or
more calls. Each option has plain values (so calls also succeed and store what
they were given) and a hostile strategy; a call puts hostile values in one or
two options (its focus) and plain ones elsewhere, so the hostile value gets as
far into the command as it can. Listing and showing commands first store a
hostile name with the matching ``add`` (a set-up call, judged like any other),
so that what was stored is printed back.

``DRIVERS`` maps every command path (``"job submit"``) to its driver;
tests/fuzz/test_fuzz_cli.py fails when a command of the CLI has none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import strategies as st

from gpupool import limits as lim
from tests.fuzz import documents as docs
from tests.fuzz import values as v
from tests.fuzz.harness import BATCH, CONFIG_HOME, DOCUMENT, ONE_LINE, Step
from tests.fuzz.platform import ADMIN, AGENT, AUDITOR, SUBMITTER, VOUCHER_PROGRAMME


@dataclass(frozen=True)
class Case:
    steps: tuple[Step, ...]
    files: tuple[docs.File, ...] = ()
    note: str = ""  # what a document edit was, for the findings

    def describe(self) -> str:
        text = " ; ".join(f"gpupool {step.describe()}" for step in self.steps)
        return text + (f"  [{self.note}]" if self.note else "")


@dataclass(frozen=True)
class Known:
    """What the demo platform holds, for drivers that refer to it."""

    running: tuple[int, ...]
    pending: tuple[int, ...]
    ended: tuple[int, ...]
    next_job: int
    tokens: tuple[str, ...] = ()  # ids of the demo's API tokens


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Opt:
    """An option (``--gpus``), or a positional argument when ``flag`` is None."""

    flag: str | None
    plain: st.SearchStrategy  # of Value
    hostile: st.SearchStrategy  # of Value
    required: bool = True
    multiple: bool = False
    is_flag: bool = False

    def always_hostile(self) -> Opt:
        return Opt(self.flag, self.hostile, self.hostile, True, self.multiple, self.is_flag)


def _plain(*texts: str) -> st.SearchStrategy:
    return st.sampled_from(texts).map(v.Value)


def num(flag, *plain, required=True, multiple=False, limit=None) -> Opt:
    """A number; ``limit``: the gpupool.limits bound declared for it."""
    hostile = v.hostile_number(list(plain), limit)
    return Opt(flag, _plain(*plain), hostile, required, multiple)


def name(flag, *plain, required=True, multiple=False) -> Opt:
    return Opt(flag, _plain(*plain), v.hostile_text(list(plain)), required, multiple)


def free_text(flag, *plain, required=False) -> Opt:
    return Opt(flag, _plain(*plain), v.hostile_text(list(plain), name=False), required)


def ref(flag, *plain, required=True, multiple=False) -> Opt:
    """A reference to something stored (an org, a pool): unknown text is simply not found."""
    return Opt(flag, _plain(*plain), v.hostile_text(list(plain), name=False), required, multiple)


def word(flag, *plain, required=True) -> Opt:
    return Opt(flag, _plain(*plain), v.choice(list(plain)), required)


def instant(flag, *plain, required=False) -> Opt:
    return Opt(flag, _plain(*plain), v.hostile_instant(list(plain)), required)


def period(flag, *plain, required=False) -> Opt:
    return Opt(flag, _plain(*plain), v.hostile_period(list(plain)), required)


def duration(flag, *plain, required=False) -> Opt:
    return Opt(flag, _plain(*plain), v.hostile_duration(list(plain)), required)


def grace(flag="--grace") -> Opt:
    return Opt(flag, _plain("10%+5m", "0"), v.hostile_grace(), required=False)


def fixed(flag, *plain, required=True) -> Opt:
    """Never hostile (a value whose hostile forms would only make the call long, by design)."""
    return Opt(flag, _plain(*plain), _plain(*plain), required)


def switch(name_: str) -> Opt:
    """A flag such as --json: given or not."""
    given = st.just(v.Value(""))
    return Opt(name_, given, given, required=False, is_flag=True)


def job_id(known: Known, *, states: tuple[str, ...] = ("running", "pending", "ended")) -> Opt:
    ids = [str(i) for state in states for i in getattr(known, state)] or ["1"]
    plain = st.sampled_from(ids).map(v.Value)
    hostile = st.one_of(
        v.hostile_number(ids + [str(known.next_job + 50)], lim.ID),
        st.sampled_from(["v1", "#1", "1 2", "-1", "0", "1.0", "٣"]).map(
            lambda t: v.Value(t, "non-ASCII digits in an id" if t == "٣" else None)
        ),
        plain,
    )
    return Opt(None, plain, hostile)


def actors() -> st.SearchStrategy[str]:
    """Mostly the admin (a refused permission ends a call early); sometimes the submitter,
    a stranger or a hostile name."""
    hostile = ["mallory", "", " ", "[/]", "\x1b[31madmin", "ADMIN", "admin\u200b", "@owner"]
    return st.one_of(
        st.sampled_from([ADMIN] * 8 + [SUBMITTER, AUDITOR, AGENT]),
        st.sampled_from([ADMIN] * 3 + hostile),
    )


@st.composite
def invocation(
    draw,
    command: str,
    opts: list[Opt],
    *,
    shape: str = ONE_LINE,
    actor: str | None = None,
    focus: bool = True,
    document: str | None = None,
    refuse: str | None = None,
) -> Step:
    """``command`` with every required option and some optional ones; one or two hostile."""
    hostile_at = set()
    if focus and opts and draw(st.integers(0, 9)) < 9:  # one call in ten is all plain
        hostile_at.add(draw(st.integers(0, len(opts) - 1)))
        if draw(st.integers(0, 4)) == 4:
            hostile_at.add(draw(st.integers(0, len(opts) - 1)))
    argv = command.split()
    positional = []
    refusals = [refuse] if refuse else []
    for index, opt in enumerate(opts):
        given = opt.required or index in hostile_at or draw(st.integers(0, 2)) == 0
        if not given:
            continue
        count = draw(st.integers(1, 2)) if opt.multiple else 1
        for _ in range(count):
            value = draw(opt.hostile if index in hostile_at else opt.plain)
            if value.refuse:
                refusals.append(f"{opt.flag or 'argument'} {value.refuse}")
            if opt.flag is None:
                positional.append(value.text)
            elif opt.is_flag:
                argv.append(opt.flag)
            else:
                argv.append(f"{opt.flag}={value.text}")
    if positional:
        argv += ["--", *positional]
    who = actor if actor is not None else draw(actors())
    return Step(
        tuple(argv),
        actor=who,
        shape=shape,
        refuse=refusals[0] if refusals and who == ADMIN else None,
        document=document,
    )


def single(step: st.SearchStrategy[Step]) -> st.SearchStrategy[Case]:
    return step.map(lambda s: Case((s,)))


# ---------------------------------------------------------------------------
# Plain values of the demo platform
# ---------------------------------------------------------------------------

ORGS = ("pumc-hospital", "zju-cs", "cma-forecast", "open-llm-community")
TYPES = ("A100-80G", "H100", "Ascend-910B")
DOMAINS = ("medical", "general", "education")


_HOSTILE_JOB_NAME = name("--name").always_hostile()


def job_submit_opts(*, hostile_name: bool = False) -> list[Opt]:
    return [
        ref("--org", *ORGS),
        num("--gpus", "1", "2", "8", limit=lim.GPUS_PER_JOB),
        num("--hours", "0.5", "1", "12", limit=lim.JOB_HOURS),
        ref("--gpu-type", *TYPES, required=False, multiple=True),
        _HOSTILE_JOB_NAME if hostile_name else name("--name", "train", "eval", required=False),
        num("--priority", "0", "1", "-1", required=False, limit=lim.PRIORITY),
        free_text("--key", "k1", "batch-7"),
        switch("--json"),
    ]


def _store_first(setup: st.SearchStrategy[Step], main: st.SearchStrategy[Step]):
    """Half the time, a set-up call storing hostile text, then the call under test."""

    @st.composite
    def case(draw):
        steps = [draw(setup)] if draw(st.booleans()) else []
        return Case((*steps, draw(main)))

    return case()


def _add_step(command: str, opts: list[Opt]) -> st.SearchStrategy[Step]:
    """An ``add`` whose first option (the name) is hostile, as the admin."""

    @st.composite
    def step(draw):
        hostile_name = draw(opts[0].hostile.filter(lambda x: x.text.strip() != ""))
        rest = draw(invocation(command, opts[1:], actor=ADMIN, focus=False))
        argv = (*rest.argv, "--", hostile_name.text) if opts[0].flag is None else rest.argv
        return Step(argv, actor=ADMIN, refuse=_refusal(opts[0].flag, hostile_name))

    return step()


def _refusal(option: str | None, value: v.Value) -> str | None:
    return f"{option or 'argument'} {value.refuse}" if value.refuse else None


# ---------------------------------------------------------------------------
# Platform description
# ---------------------------------------------------------------------------


def gpu_type_add_opts() -> list[Opt]:
    return [
        name(None, "X200", "npu-9"),
        ref("--vendor", "NVIDIA", "Huawei"),
        num("--memory", "80", "64", limit=lim.MEMORY_GB),
        num("--speed", "1.0", "0.8", "2", required=False, limit=lim.SPEED),
        switch("--domestic"),
    ]


def pool_add_opts() -> list[Opt]:
    return [
        name(None, "fz-pool", "hz-a100"),
        ref("--site", "Hangzhou", "Beijing"),
        ref("--gpu-type", *TYPES),
        num("--gpus", "16", "8", "64", limit=lim.POOL_GPUS),
        num("--gpus-per-node", "8", "4", required=False, limit=lim.GPUS_PER_NODE),
        num("--price", "12.0", "5", "0", limit=lim.PRICE),
    ]


def domain_add_opts() -> list[Opt]:
    return [
        name(None, "weather2", "science"),
        num("--weight", "1.0", "2.5", required=False, limit=lim.WEIGHT),
    ]


def org_add_opts() -> list[Opt]:
    return [
        name(None, "fz-org", "new-lab"),
        ref("--domain", *DOMAINS),
        num("--budget", "1000", "50000.5", required=False, limit=lim.MONEY),
    ]


def _adder(command: str, opts: Callable[[], list[Opt]]):
    return lambda known: single(invocation(command, opts()))


def _lister(command: str, add: str, opts: Callable[[], list[Opt]], extra: list[Opt] = ()):
    return lambda known: _store_first(
        _add_step(add, opts()), invocation(command, [*extra, switch("--json")], focus=True)
    )


# ---------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------


def job_submit(known: Known):
    return single(invocation("job submit", job_submit_opts()))


def job_submit_batch(known: Known):
    cells = st.one_of(
        v.hostile_number(["1", "2"]),
        v.hostile_text(["pumc-hospital", "a"]),
    )
    refusing = frozenset({"gpus", "hours", "priority", "name", "key"})
    csv = docs.csv_document(docs.BATCH_CSV, "jobs.csv", cells, refusing)
    yml = docs.yaml_document(docs.BATCH_YAML, "jobs.yaml")

    @st.composite
    def case(draw):
        doc = draw(st.one_of(csv, yml))
        step = draw(
            invocation(
                "job submit-batch",
                [switch("--json")],
                shape=BATCH,
                focus=False,
                refuse=doc.refuse,
            )
        )
        step = Step((*step.argv, "--", doc.path), step.actor, shape=BATCH, refuse=step.refuse)
        return Case((step,), doc.files, doc.edit)

    return case()


def job_list(known: Known):
    setup = invocation("job submit", job_submit_opts(hostile_name=True), actor=ADMIN, focus=False)
    states = ("pending", "running", "completed", "failed", "cancelled", "timed_out")
    main = invocation(
        "job list",
        [word("--state", *states, required=False), ref("--org", *ORGS, required=False),
         switch("--json")],
    )  # fmt: skip
    return _store_first(setup, main)


def job_show(known: Known):
    setup = invocation("job submit", job_submit_opts(hostile_name=True), actor=ADMIN, focus=False)

    @st.composite
    def case(draw):
        steps = []
        if draw(st.booleans()):
            steps.append(draw(setup))
            ident = Opt(None, _plain(str(known.next_job)), _plain(str(known.next_job)))
            steps.append(draw(invocation("job show", [ident, switch("--json")], focus=False)))
        else:
            steps.append(draw(invocation("job show", [job_id(known), switch("--json")])))
        return Case(tuple(steps))

    return case()


def job_cancel(known: Known):
    return single(invocation("job cancel", [job_id(known)]))


def job_finish(known: Known):
    opts = [
        job_id(known, states=("running",)),
        switch("--failed"),
        instant("--at", "2030-01-01T00:00:00Z"),
    ]
    return single(invocation("job finish", opts))


def job_reap(known: Known):
    return single(invocation("job reap", [grace()]))


def schedule(known: Known):
    """A round after a hostile submission: one bad job must not stop the round."""
    main = invocation("schedule", [switch("--dry-run"), grace(), switch("--json")])
    setup = invocation("job submit", job_submit_opts(), actor=ADMIN)
    return _store_first(setup, main)


# ---------------------------------------------------------------------------
# Database and users
# ---------------------------------------------------------------------------

DB_URLS = [
    ("sqlite:///fresh.db", None),
    ("", None),
    ("not a url", None),
    ("sqlite:///fifo.db", None),
    ("sqlite:///zero.db", None),
    ("sqlite:///dir.db", None),
    ("sqlite:///garbage.db", None),
    ("sqlite:////nonexistent-dir-fuzz/x.db", None),
    ("sqlite:///[/]\x1b[31m.db", None),
    ("sqlite://", None),
    ("mysql://127.0.0.1:1/x", None),
    ("postgresql://127.0.0.1:1/x", None),
    ("postgresql://postgres@127.0.0.1:5432/gpupool_fuzz_no_such_database", None),
    ("postgresql://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D%5B%2F%5D", None),
]
DB_FILES = (
    docs.File("fifo.db", kind="fifo"),
    docs.File("zero.db", kind="zero"),
    docs.File("dir.db", kind="dir"),
    docs.File("garbage.db", b"this is not a database\n" * 100),
)


def _with_db(command: str, opts: list[Opt]):
    """The command on a hostile --db (or on the platform)."""

    @st.composite
    def case(draw):
        step = draw(invocation(command, opts, actor=ADMIN))
        url = draw(st.one_of(st.none(), st.sampled_from([u for u, _ in DB_URLS])))
        if url is not None and url.startswith("postgresql://postgres@127.0.0.1:5432/test?"):
            url = None  # reaches the shared database's real schema: never write there
        return Case((Step(step.argv, ADMIN, db=url),), DB_FILES)

    return case()


def db_upgrade(known: Known):
    return _with_db("db upgrade", [])


def db_current(known: Known):
    return _with_db("db current", [])


def init(known: Known):
    return _with_db("init", [switch("--demo"), switch("--force"), switch("--no-jobs")])


def user_add_opts() -> list[Opt]:
    return [
        name(None, "bob", "carol"),
        word("--role", "submitter", "admin"),
        ref("--org", *ORGS, required=False),
    ]


def user_add(known: Known):
    return single(invocation("user add", user_add_opts()))


def user_list(known: Known):
    setup = _add_step("user add", [user_add_opts()[0], fixed("--role", "admin")])
    return _store_first(setup, invocation("user list", [switch("--json")]))


def user_remove(known: Known):
    """The demo's users (the admin is the last one: refused) and hostile names."""
    return single(invocation("user remove", [ref(None, SUBMITTER, AUDITOR, ADMIN)]))


def user_set_role(known: Known):
    opts = [
        ref(None, SUBMITTER, AUDITOR, ADMIN),
        word(None, "auditor", "submitter", "admin", "agent"),
        ref("--org", *ORGS, required=False),
        ref("--site", "Beijing", required=False),
    ]
    return single(invocation("user set-role", opts))


# ---------------------------------------------------------------------------
# Policies
# ---------------------------------------------------------------------------


def policy_doc(name_: str = "policy.yaml") -> st.SearchStrategy[docs.Doc]:
    return st.sampled_from(docs.POLICY_NAMES).flatmap(
        lambda base: docs.yaml_document(docs.example_policy(base), name_)
    )


def _with_doc(command: str, opts: list[Opt], doc: st.SearchStrategy[docs.Doc], shape=DOCUMENT):
    @st.composite
    def case(draw):
        document = draw(doc)
        step = draw(invocation(command, opts, shape=shape, document=document.path))
        refuse = step.refuse or (document.refuse if step.actor == ADMIN else None)
        argv = (*step.argv, "--", document.path)
        step = Step(argv, step.actor, shape=shape, refuse=refuse, document=document.path)
        return Case((step,), document.files, document.edit)

    return case()


def policy_validate(known: Known):
    return _with_doc("policy validate", [], policy_doc())


def policy_apply(known: Known):
    return _with_doc("policy apply", [free_text("--comment", "tune weights")], policy_doc())


def policy_whatif(known: Known):
    opts = [
        duration("--since", "30d", "12h", "2026-01-01"),
        instant("--until", "2026-12-01"),
        switch("--json"),
        Opt("--out", _plain("whatif-out"), _plain("whatif-out", "no/such/dir", "x.csv", "."),
            required=False),
    ]  # fmt: skip
    return _with_doc("policy whatif", opts, policy_doc())


def _version(*plain: str) -> Opt:
    hostile = st.one_of(
        v.hostile_number(list(plain)),
        st.sampled_from(["v1", "V2", "v", "vv1", "v-1", "v٣", "v1.0", "1 ", "latest"]).map(
            lambda t: v.Value(t, v._date_refusal(t))
        ),
    )
    return Opt(None, _plain(*plain), hostile)


def policy_show(known: Known):
    version = _version("1", "v2")
    version = Opt(None, version.plain, version.hostile, required=False)
    return single(invocation("policy show", [version, switch("--json")]))


def policy_history(known: Known):
    setup = invocation("policy rollback", [fixed(None, "1"), free_text("--comment", "x")])
    return _store_first(setup, invocation("policy history", [switch("--json")]))


def policy_diff(known: Known):
    return single(invocation("policy diff", [_version("1"), _version("2"), switch("--json")]))


def policy_rollback(known: Known):
    opts = [_version("1", "2"), free_text("--comment", "back to FIFO")]
    return single(invocation("policy rollback", opts))


# ---------------------------------------------------------------------------
# Programmes, vouchers, reports
# ---------------------------------------------------------------------------


def programme_add_opts() -> list[Opt]:
    return [
        name(None, "fz-programme", "edu-2026"),
        period("--period", "2026-Q4", "quarterly", "2026"),
        num("--budget", "1000", "250000", required=False, limit=lim.MONEY),
        num("--rate", "0.5", "1", required=False),
        ref("--domain", *DOMAINS, required=False, multiple=True),
        ref("--org", *ORGS, required=False, multiple=True),
        pairs("--gpu-type-rate", "0.8"),
        pairs("--exchange", "1.5"),
        switch("--vouchers"),
        num("--org-cap", "100", required=False, limit=lim.MONEY),
        word("--end", "expire", "carry-over:0.5", required=False),
        word("--when-exhausted", "wait", "full-price", required=False),
    ]


def pairs(flag_: str, plain: str) -> Opt:
    good = [f"{t}={plain}" for t in TYPES]
    hostile = st.tuples(
        st.one_of(st.sampled_from(TYPES).map(v.Value), v.hostile_text(name=False)),
        v.hostile_number([plain]),
    ).map(lambda tv: v.Value(f"{tv[0].text}={tv[1].text}", tv[1].refuse))
    return Opt(flag_, _plain(*good), st.one_of(hostile, v.hostile_text(name=False)), False, True)


def programme_add(known: Known):
    files = docs.yaml_document(docs.PROGRAMME_YAML, "programmes.yaml")

    @st.composite
    def from_file(draw):
        doc = draw(files)
        step = draw(invocation("programme add", [], focus=False))
        refuse = doc.refuse if step.actor == ADMIN else None
        argv = (*step.argv, f"--file={doc.path}")
        return Case((Step(argv, step.actor, refuse=refuse),), doc.files, doc.edit)

    return st.one_of(single(invocation("programme add", programme_add_opts())), from_file())


def programme_list(known: Known):
    opts = programme_add_opts()
    setup = _add_step("programme add", [opts[0], opts[1]])
    return _store_first(setup, invocation("programme list", [switch("--json")]))


def voucher_award_opts() -> list[Opt]:
    return [
        ref(None, *ORGS),
        ref("--programme", VOUCHER_PROGRAMME),
        num("--amount", "5", "0.5", limit=lim.VOUCHER_HOURS),
        instant("--expires", "2027-06-30", "2027-01-01T00:00:00Z"),
        instant("--at", "2026-12-01T00:00:00Z"),
    ]


def voucher_award(known: Known):
    return single(invocation("voucher award", voucher_award_opts()))


def voucher_list(known: Known):
    setup = invocation("voucher award", voucher_award_opts(), actor=ADMIN)
    main = invocation("voucher list", [ref("--org", *ORGS, required=False), switch("--json")])
    return _store_first(setup, main)


def _out_path(flag_: str, plain: str) -> Opt:
    """A report's output file; every hostile one is unwritable or not the option's format."""
    unwritable = ["no/such/dir/out", ".", "[/].out", "\x1b[31m.out", ""]
    hostile = st.one_of(
        st.just(v.Value(plain)),
        st.sampled_from(unwritable).map(lambda t: v.Value(t, "an unwritable output path")),
    )
    return Opt(flag_, _plain(plain), hostile, required=False)


def report_usage(known: Known):
    opts = [
        period("--period", "2026-Q4", "2026-Q3"),
        word("--by", "domain", "org", "gpu-type", "site", "pool", required=False),
        switch("--json"),
        _out_path("--csv", "usage.csv"),
        _out_path("--png", "usage.png"),
    ]
    return single(invocation("report usage", opts))


def report_subsidies(known: Known):
    opts = [
        ref("--programme", VOUCHER_PROGRAMME, "health-2026", required=False),
        switch("--json"),
        _out_path("--csv", "subsidies.csv"),
        _out_path("--png", "subsidies.png"),
    ]
    setup = _add_step("programme add", programme_add_opts()[:2])
    return _store_first(setup, invocation("report subsidies", opts))


# ---------------------------------------------------------------------------
# The scheduler daemon and the simulator
# ---------------------------------------------------------------------------


# refused, or a handful of rounds (a large valid count would run long by design)
MAX_ROUNDS = ["0", "-1", "1.5", "nan", "inf", "1e309", "٣", "1_0", "１", str(2**64),
              "1" + "0" * 400, "", "two"]  # fmt: skip


def scheduler_run(known: Known):
    """One round (a hostile --interval is never waited), or a hostile --max-rounds at 0 s."""
    max_rounds = Opt(
        "--max-rounds",
        _plain("1"),
        st.sampled_from(MAX_ROUNDS).map(
            lambda t: v.Value(t, v._number_refusal(t) or v._limit_refusal(t, lim.ROUNDS))
        ),
    )
    interval = num("--interval", "0", "0.01", limit=lim.INTERVAL_SECONDS)
    on_interval = [interval, fixed("--max-rounds", "1"), grace(), switch("--wait")]
    on_rounds = [max_rounds, fixed("--interval", "0"), grace(), switch("--wait")]

    on_interval[0] = on_interval[0].always_hostile()
    on_rounds[0] = on_rounds[0].always_hostile()
    return st.sampled_from([on_interval, on_rounds]).flatmap(
        lambda opts: single(invocation("scheduler run", opts, focus=False))
    )


TRACE_CELLS = st.one_of(
    st.sampled_from(
        [
            "2017-10-02 02:49:54+08:00",
            "2017-10-02T02:49:54Z",
            "2017-10-02 02:49:54 UTC",
            "9999-12-31 23:59:59",
            "0001-01-01 00:00:00",
            "99999999999999",
            "12557717.5",
            "1e308",
            "-5",
            "nan",
            "٣",
        ]
    ).map(v.Value),
    v.hostile_number(["1", "60"]),
    v.hostile_text(["b436b2"], name=False),
)


def _trace_edit(csv: str, name: str, scenario: str) -> st.SearchStrategy[docs.Doc]:
    """A hostile edit of a trace file, given to the scenario that reads it."""
    return docs.csv_document(csv, name, TRACE_CELLS).map(
        lambda d: docs.Doc(
            "scenario.yaml",
            (*d.files, docs.File("scenario.yaml", scenario.encode())),
            d.refuse if d.edit in SPECIAL_EDITS else None,  # a trace may drop bad rows
            f"{name}: {d.edit}",
        )
    )


def scenario_doc() -> st.SearchStrategy[docs.Doc]:
    trace = docs.File("trace.csv", docs.TRACE_CSV.encode())
    pods = docs.File("pods.csv", docs.ALIBABA_PODS_CSV.encode())
    synthetic = docs.yaml_document(docs.SCENARIO_YAML, "scenario.yaml")
    trace_yaml = docs.yaml_document(docs.TRACE_SCENARIO_YAML, "scenario.yaml", (trace,))
    alibaba_yaml = docs.yaml_document(docs.ALIBABA_SCENARIO_YAML, "scenario.yaml", (pods,))
    return st.one_of(
        synthetic,
        trace_yaml,
        _trace_edit(docs.TRACE_CSV, "trace.csv", docs.TRACE_SCENARIO_YAML),
        alibaba_yaml,
        _trace_edit(docs.ALIBABA_PODS_CSV, "pods.csv", docs.ALIBABA_SCENARIO_YAML),
    )


SPECIAL_EDITS = frozenset(docs.SPECIAL)
VALID_POLICY = docs.File("fifo.yaml", docs.example_policy("fifo.yaml").encode())
VALID_SCENARIO = docs.File("scenario.yaml", docs.SCENARIO_YAML.encode())


def _simulation(command: str, extra: list[Opt]):
    """A tiny run: a hostile scenario, policy or option, the rest plain and small."""

    @st.composite
    def case(draw):
        target = draw(st.sampled_from(["scenario", "policy", "options"]))
        files, note, refuse = [VALID_POLICY, VALID_SCENARIO], "", None
        scenario, policy = "scenario.yaml", "fifo.yaml"
        shape = ONE_LINE
        if target == "scenario":
            doc = draw(scenario_doc())
            files = [VALID_POLICY, *doc.files]
            note, refuse = doc.edit, doc.refuse
        elif target == "policy":
            doc = draw(policy_doc("hostile-policy.yaml"))
            files, policy = [VALID_SCENARIO, *doc.files], doc.path
            note, refuse, shape = doc.edit, doc.refuse, DOCUMENT
        opts = [*extra, Opt("--out", _plain("sim-out"), _plain("sim-out"), required=True)]
        step = draw(invocation(command, opts, focus=target == "options", actor=ADMIN))
        if "--until" not in " ".join(step.argv):
            step = Step((*step.argv, "--until=2"), ADMIN, refuse=step.refuse)
        argv = (*step.argv, f"--policy={policy}", "--", scenario)
        step = Step(argv, ADMIN, shape=shape, refuse=step.refuse or refuse, document=policy)
        return Case((step,), tuple(files), note)

    return case()


def simulate_run(known: Known):
    return _simulation(
        "simulate run",
        [
            num("--seed", "0", "7", required=False, limit=lim.SEED),
            num("--until", "2", "0.5", required=False, limit=lim.SIM_HOURS),
            num("--jobs", "5", "1", required=False, limit=lim.MAX_JOBS),
        ],
    )


def simulate_compare(known: Known):
    return _simulation(
        "simulate compare",
        [
            num("--seeds", "1", "2", limit=lim.SEEDS),
            num("--until", "2", "0.5", required=False, limit=lim.SIM_HOURS),
            num("--jobs", "5", required=False, limit=lim.MAX_JOBS),
            num("--workers", "1", required=False, limit=lim.WORKERS),
        ],
    )


# ---------------------------------------------------------------------------
# Tokens, the audit log, the server
# ---------------------------------------------------------------------------

USERS = (SUBMITTER, ADMIN, AUDITOR)


def token_create_opts() -> list[Opt]:
    return [
        ref(None, *USERS),
        Opt("--expires", _plain("90d", "12h", "never"), v.hostile_duration(["90d"]), False),
        word("--scope", "read", "write", required=False),
        switch("--json"),
    ]


def token_create(known: Known):
    return single(invocation("token create", token_create_opts()))


def token_list(known: Known):
    setup = invocation("token create", token_create_opts(), actor=ADMIN, focus=False)
    main = invocation("token list", [ref("--user", *USERS, required=False), switch("--json")])
    return _store_first(setup, main)


def token_revoke(known: Known):
    """The demo's tokens by id, gpt_<id> and hostile ids; revoking one's own or another's."""
    ids = [*known.tokens, *(f"gpt_{t}" for t in known.tokens)] or ["k3x9q2mz"]
    hostile = st.one_of(
        v.hostile_text(ids, name=False),
        st.sampled_from(["gpt_", "gpt__", "gpt_[/]_x", "k3x9q2m", "0" * 8, "%", "*"]).map(v.Value),
    )
    return single(invocation("token revoke", [Opt(None, _plain(*ids), hostile)]))


def audit_list(known: Known):
    opts = [
        ref("--actor", ADMIN, SUBMITTER, "@owner", "anonymous", required=False),
        duration("--since", "7d", "2026-01-01"),
        word("--outcome", "ok", "denied", required=False),
        ref("--action", "job", "policy.apply", "authenticate", required=False),
        num("--limit", "200", "5", required=False, limit=lim.ID),
        switch("--json"),
    ]
    return single(invocation("audit list", opts, actor=None))


# `serve` would listen and never return: every call has exactly one value the command
# must refuse before it binds, the rest plain (127.0.0.1, any free port, one worker).
# Were one accepted, the server would listen on 127.0.0.1 only, and the time bound ends it.
SERVE_REFUSED = {
    "--host": ["", " ", "[/]", "\x1b[31mlocal", "x" * 100_000, "127.0.0.1:8080",
               "http://127.0.0.1", "-x", "256.256.256.256", "127.0.0.1\n", "::1%[/]",
               "ｌｏｃａｌｈｏｓｔ", "local_host", "\u202elocal"],
    "--port": ["-1", "65536", "70000", str(2**64), "٣", "１", "1_000", "0x50", "nan", "inf",
               "", "80 81", "1" + "0" * 400],
    "--workers": ["0", "65", "-1", "٣", "1.5", str(2**64), "inf", "", "1e309"],
    "--max-body": ["1", "1023", "-1", "1e309", "٣", "", str(2**64)],
    "--log-level": ["", "[/]", "verbose", "\x1b[31minfo", "info\ndebug"],
    "--forwarded-allow-ips": ["\x1b[31m*", "x" * 100_000, "127.0.0.1\n*"],
}  # fmt: skip
SERVE_PLAIN = {"--host": "127.0.0.1", "--port": "0", "--workers": "1"}


def serve(known: Known):
    @st.composite
    def case(draw):
        flag = draw(st.sampled_from(sorted(SERVE_REFUSED)))
        value = draw(st.sampled_from(SERVE_REFUSED[flag]))
        argv = ["serve", *(f"{f}={t}" for f, t in SERVE_PLAIN.items() if f != flag)]
        argv.append(f"{flag}={value}")
        return Case((Step(tuple(argv), ADMIN, refuse=f"{flag} {value[:40]!r}: not servable"),))

    return case()


# `login` checks its token against a server: no server runs in the suite, so every call is
# refused. The URL is always loopback (port 1, where nothing listens) or malformed.
LOGIN_URLS = ["", "ftp://127.0.0.1:1", "http://[/]", "http://127.0.0.1:99999",
              "http://127.0.0.1:-1", "http://127.0.0.1:٣", "http://127.0.0.1:1/\x1b[31m",
              "https://127.0.0.1:1", "http://127.0.0.1:1/" + "a" * 100_000, "http://:1",
              "http://127.0.0.1:1?x=[/]", "[/]", "\u202ehttp://127.0.0.1:1",
              "http://[::1"]  # fmt: skip
CREDENTIALS = f"{CONFIG_HOME}/gpupool/credentials"


def login(known: Known):
    opts = [
        Opt(None, _plain("http://127.0.0.1:1"), st.sampled_from(LOGIN_URLS).map(v.Value)),
        Opt("--token", _plain("gpt_abcdefgh_secret"), v.hostile_text(["gpt_x"], name=False)),
    ]

    @st.composite
    def case(draw):
        step = draw(invocation("login", opts))
        return Case((Step(step.argv, step.actor, refuse="login without a server"),))

    return case()


def schema(known: Known):
    """A format's JSON Schema: no platform is read; an unknown format is one line."""

    @st.composite
    def case(draw):
        kind = word(None, "policy", "scenario", "programmes", "batch")
        return Case((draw(invocation("schema", [kind])),))

    return case()


def logout(known: Known):
    """After nothing, a saved login, or a hostile file (or directory) where it is kept."""
    saved = [
        (),
        (docs.File(CREDENTIALS, b'{"url": "http://127.0.0.1:1", "token": "gpt_x"}'),),
        (docs.File(CREDENTIALS, b"\x00\xff[/]\x1b[31m"),),
        (docs.File(CREDENTIALS, b'{"url": "[/]\\u001b[31m"}'),),
        (docs.File(CREDENTIALS, kind="dir"),),
        (docs.File(CREDENTIALS, kind="fifo"),),
    ]

    @st.composite
    def case(draw):
        step = draw(invocation("logout", []))
        return Case((step,), draw(st.sampled_from(saved)))

    return case()


# ---------------------------------------------------------------------------
# Job classes, sites and their agents, exports
# ---------------------------------------------------------------------------


def job_class_add_opts() -> list[Opt]:
    speeds = ["A100-80G=1.0", "H100=2.5", "Ascend-910B=0.6"]
    return [
        name(None, "llm-train", "cv-small"),
        Opt("--speed", _plain(*speeds), v.hostile_text(speeds, name=False), multiple=True),
    ]


def job_class_remove(known: Known):
    setup = _add_step("job-class add", job_class_add_opts())
    return _store_first(setup, invocation("job-class remove", [ref(None, "llm-train", "none")]))


def site_list(known: Known):
    return single(invocation("site list", [switch("--json")]))


def export_kueue(known: Known):
    opts = [
        ref("--site", "Beijing", "Guiyang"),
        Opt("--resource", _plain("MI250=amd.com/gpu"), v.hostile_text(["MI250=x"], name=False),
            required=False, multiple=True),
        _out_path("--out", "kueue.yaml"),
        switch("--json"),
    ]  # fmt: skip
    return single(invocation("export kueue", opts))


def export_slurm(known: Known):
    opts = [ref("--site", "Beijing", "Hefei", required=False), _out_path("--out", "acct.sh")]
    return single(invocation("export slurm", opts))


def agent_starts(known: Known):
    return single(invocation("agent starts", [switch("--json")]))


def agent_run(known: Known):
    """One step (--once) with no server to talk to: refused, whatever the options."""
    once = Opt("--once", st.just(v.Value("")), st.just(v.Value("")), is_flag=True)
    opts = [
        ref("--site", "Beijing"),
        word("--executor", "local", "slurm", required=False),
        num("--poll", "0.01", required=False, limit=lim.INTERVAL_SECONDS),
        num("--kill-grace", "1", required=False),
        fixed("--state-dir", "agent-state"),
        once,
    ]

    @st.composite
    def case(draw):
        step = draw(invocation("agent run", opts))
        return Case((Step(step.argv, step.actor, refuse="an agent without a server"),))

    return case()


SWEEP_YAML = """\
scenarios: [scenario.yaml]
policies: [fifo.yaml]
seeds: 1
search: grid
parameters:
  policy.domains.medical.weight: [1.0, 2.0]
"""
HOSTILE_SWEEPS = [
    SWEEP_YAML.replace("[1.0, 2.0]", "{low: 1, high: 2, steps: 100000}"),
    SWEEP_YAML.replace("policy.domains", "policy.[/]\x1b[31m"),
    SWEEP_YAML.replace("scenario.yaml", "../../../etc/passwd"),
    SWEEP_YAML.replace("seeds: 1", "seeds: 1e309"),
    SWEEP_YAML.replace("search: grid", "search: {random: {samples: -1, seed: 1}}"),
    SWEEP_YAML + "parameters: {}\n",
    "\x00\xff",
    "[" * 5000,
]


def simulate_sweep(known: Known):
    """A two-run sweep on one process, or a hostile sweep file (refused before any run)."""

    @st.composite
    def case(draw):
        text = draw(st.sampled_from([SWEEP_YAML, *HOSTILE_SWEEPS]))
        sweep = docs.File("sweep.yaml", text.encode("utf-8", "surrogateescape"))
        argv = ("simulate", "sweep", "--workers=1", "--out=sweep-out", "--", "sweep.yaml")
        refuse = None if text == SWEEP_YAML else "a hostile sweep file"
        return Case((Step(argv, ADMIN, refuse=refuse),), (VALID_POLICY, VALID_SCENARIO, sweep))

    return case()


# ---------------------------------------------------------------------------
# Every command
# ---------------------------------------------------------------------------

DRIVERS: dict[str, Callable[[Known], st.SearchStrategy[Case]]] = {
    "init": init,
    "schedule": schedule,
    "job submit": job_submit,
    "job submit-batch": job_submit_batch,
    "job list": job_list,
    "job show": job_show,
    "job cancel": job_cancel,
    "job finish": job_finish,
    "job reap": job_reap,
    "db upgrade": db_upgrade,
    "db current": db_current,
    "policy validate": policy_validate,
    "policy apply": policy_apply,
    "policy show": policy_show,
    "policy history": policy_history,
    "policy diff": policy_diff,
    "policy rollback": policy_rollback,
    "policy whatif": policy_whatif,
    "user add": user_add,
    "user list": user_list,
    "user remove": user_remove,
    "user set-role": user_set_role,
    "scheduler run": scheduler_run,
    "simulate run": simulate_run,
    "simulate compare": simulate_compare,
    "programme add": programme_add,
    "programme list": programme_list,
    "report usage": report_usage,
    "report subsidies": report_subsidies,
    "voucher award": voucher_award,
    "voucher list": voucher_list,
    "gpu-type add": _adder("gpu-type add", gpu_type_add_opts),
    "gpu-type list": _lister("gpu-type list", "gpu-type add", gpu_type_add_opts),
    "pool add": _adder("pool add", pool_add_opts),
    "pool list": _lister("pool list", "pool add", pool_add_opts),
    "domain add": _adder("domain add", domain_add_opts),
    "domain list": _lister("domain list", "domain add", domain_add_opts),
    "org add": _adder("org add", org_add_opts),
    "token create": token_create,
    "token list": token_list,
    "token revoke": token_revoke,
    "audit list": audit_list,
    "serve": serve,
    "login": login,
    "logout": logout,
    "schema": schema,
    "org list": _lister(
        "org list", "org add", org_add_opts, [ref("--domain", *DOMAINS, required=False)]
    ),
    "job-class add": _adder("job-class add", job_class_add_opts),
    "job-class list": _lister("job-class list", "job-class add", job_class_add_opts),
    "job-class remove": job_class_remove,
    "site list": site_list,
    "export kueue": export_kueue,
    "export slurm": export_slurm,
    "agent starts": agent_starts,
    "agent run": agent_run,
    "simulate sweep": simulate_sweep,
}

# After any call that changed the platform, a live round and the listings that
# show what changed must still work (exit 0): one bad row stored must not stop
# rounds or break an admin's screen.
HEALTH_BY_TABLE = {
    "jobs": ("job list",),
    "placements": ("job list",),
    "pools": ("pool list",),
    "gpu_types": ("gpu-type list", "pool list"),
    "domains": ("domain list", "org list"),
    "orgs": ("org list",),
    "programmes": ("programme list", "report subsidies"),
    "vouchers": ("voucher list",),
    "ledger_entries": ("report usage", "report subsidies"),
    "policy_versions": ("policy history",),
    "users": ("user list",),
    "tokens": ("token list",),
    "audit_log": ("audit list",),
    "job_classes": ("job-class list",),
    "sites": ("site list",),
}


def health_steps(changed_tables: set[str]) -> list[Step]:
    commands = ["schedule"]
    for table in sorted(changed_tables):
        commands += [c for c in HEALTH_BY_TABLE.get(table, ()) if c not in commands]
    # as the owner: `init --force` may have replaced the admin the platform had
    return [Step(tuple(command.split()), None) for command in commands]
