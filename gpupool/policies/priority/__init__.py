"""``priority``: jobs start in priority order; an LP decides where they go.

Value of starting job j on GPU type t: priority(j) x gpus(j) x speed(t), i.e.
priority-weighted effective GPUs put to work (effective GPU-hours per hour).

The rule that decides WHO starts is simple and promised to users: jobs are
tried in start order (priority, then submitted, then id) and a job starts if
it fits, within guarantees and borrow limits (gpupool.policies._borrowing)
and its org's budget, in what the jobs before
it left (free GPUs, or GPUs of running jobs it may preempt). So a job never
waits while a lower-priority job takes the GPUs it could have used, and raising
a job's priority never stops it starting (docs/policies-design.md has the
argument). The LP decides WHERE each job goes, which is what makes more of the
lower-priority jobs fit: a flexible job leaves the fast GPUs to a job that can
only run there, a gang lands where it wastes fewest whole nodes.

A round, in numbered steps:

1. Score and group: priorities (gpupool.policies._classes), pool groups (GPU
   type x node size), job classes (domain, org when it has a budget, gang
   size, allowed groups, priority bucket).
2. Plan: one GLOP LP over class x group counts, with GPU capacity and whole
   free nodes per group (multi-node gangs need them), each domain's borrowing
   room in effective GPUs, and each budgeted org's budget. Its classes are
   valued at their *domain's* priority only (weight and guarantee boosts; no
   Job.priority, no aging), so one job's raise cannot change the plan. A tiny
   price term breaks ties towards cheaper GPUs.
3. Start, one pass in start order: each job tries the groups its class was
   planned on (fastest first, while the plan has room for it), then groups
   with spare planned capacity, then the rest; on real nodes (best fit,
   fit_gang semantics), checked against guarantees and borrow limits and the
   round's BudgetTracker. With preemption enabled, a job that found no room
   may stop running jobs whose priority is at least ``min_gap`` lower, or, to
   get back to its domain's guarantee, borrowers of any priority, in the pool
   where that frees the fewest GPUs.
4. Report: objective = the value started. (A proven upper bound on it, which
   only benchmarks read, is benchmarks/priority_bound.py.)

Modules: policy (PriorityPolicy, the steps), plan (step 2's plan and promising
classes), class_lp (the LP, in OR-Tools sample form), money (budget rows, read
through one pricing protocol), preemptor (step 3's preemption and reclaim).
"""

from gpupool.policies.priority.policy import PriorityPolicy

__all__ = ["PriorityPolicy"]
