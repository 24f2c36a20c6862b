"""The class x group LP of a round (GLOP, OR-Tools' model builder), in sample form.

Data: job classes (interchangeable pending jobs) and pool groups (pools of
one GPU type and node size); one column per class and group it allows.
Variables: x[col], jobs of the class planned on the group (fractional).
Constraints, one group each: class sizes; node shapes (GPUs and gang slots
per threshold, NodeRows); each domain's borrowing room; budgets (Money).
Objective: priority x GPUs x speed (the class's speed on the group's type: Job.speed_on),
a hair less on dearer GPUs.
Solve: GLOP; the planned counts, and each row group's duals (read by
benchmarks/priority_bound.py).
"""

from __future__ import annotations

import math

import numpy as np

from gpupool.policies._borrowing import DomainLimits
from gpupool.policies._classes import JobClass, PoolGroup
from gpupool.policies.priority.money import Money


class NodeRows:
    """Capacity rows of one pool group, from its nodes counted by free GPUs.

    Free GPUs are not all alike: a node with 3 free cannot hold a 4-GPU gang.
    For each threshold s (gang sizes the LP sees, 1, and the node size P) two
    rows hold in every packing fit_gang can make:
    - GPUs: gangs of s or more GPUs use at most the free GPUs of nodes with at
      least s free;
    - slots: gangs of s or more number at most sum over nodes of floor(free/s);
      a multi-node gang fills floor(gpus/P) whole nodes (all their slots), and
      at s = P needs ceil(gpus/P) whole free nodes.
    s = 1 gives the plain free-GPU row; s = P's slot row the whole-node row.
    """

    def __init__(self, groups: tuple[PoolGroup, ...], counts, sizes: list[set[int]]):
        self.keys: list[tuple[int, int, int]] = []  # (group, threshold, 0 GPUs / 1 slots)
        caps = []
        for g in groups:
            per_node, count = g.gpus_per_node, counts[g.index]
            thresholds = sorted({s for s in sizes[g.index] if 1 < s < per_node} | {1, per_node})
            for s in thresholds:
                self.keys.append((g.index, s, 0))
                caps.append(sum(f * n for f, n in enumerate(count) if f >= s))
                if s > 1:
                    self.keys.append((g.index, s, 1))
                    caps.append(sum((f // s) * n for f, n in enumerate(count)))
        self.cap = np.array(caps, dtype=float)
        # the keys as arrays; a group's rows are consecutive
        row_group = np.array([g for g, _, _ in self.keys], dtype=np.int64)
        self.threshold = np.array([s for _, s, _ in self.keys], dtype=np.int64)
        self.kind = np.array([k for _, _, k in self.keys], dtype=np.int64)
        self.row_group = row_group
        self.row_per_node = np.array([g.gpus_per_node for g in groups], dtype=np.int64)[row_group]
        self.rows_in_group = np.bincount(row_group, minlength=len(groups))
        self.first_row = np.cumsum(self.rows_in_group) - self.rows_in_group

    def coefficients(self, rows: np.ndarray, gpus: np.ndarray) -> np.ndarray:
        """Coefficient of row ``rows[k]`` for a gang of ``gpus[k]`` GPUs (0 below its threshold)."""
        threshold, kind, per_node = self.threshold[rows], self.kind[rows], self.row_per_node[rows]
        multi = np.where(
            threshold == per_node,
            np.ceil(gpus / per_node),
            (gpus // per_node) * (per_node // threshold),
        )
        slots = np.where(gpus <= per_node, 1.0, multi)
        coef = np.where(kind == 0, gpus.astype(float), slots)
        return np.where(gpus >= threshold, coef, 0.0)

    def pairs(self, col_group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (row, column) of the same group, row-major per column: (rows, columns)."""
        per_column = self.rows_in_group[col_group]
        columns = np.repeat(np.arange(len(col_group)), per_column)
        first = np.cumsum(per_column) - per_column  # each column's first pair
        within = np.arange(len(columns)) - np.repeat(first, per_column)
        return self.first_row[col_group][columns] + within, columns


class ClassLp:
    """A class x group LP: build with the round's data, ``solve`` once."""

    def __init__(
        self,
        classes: list[JobClass],
        groups: tuple[PoolGroup, ...],
        limits: DomainLimits,
        counts: list[list[int]],
        tiebreak: float,
        money: Money,
    ):
        self.classes = classes
        self.groups = groups
        self.money = money
        sizes: list[set[int]] = [set() for _ in groups]
        for c in classes:
            for g in c.groups:
                sizes[g].add(c.gpus)
        self.nodes = NodeRows(groups, counts, sizes)
        room = {d: limits.headroom(d) for d in sorted({c.domain for c in classes})}
        self.domains = [d for d, r in room.items() if r < math.inf]
        self.domain_cap = np.array([max(0.0, room[d]) for d in self.domains])
        self.orgs = sorted({c.org for c in classes if c.org})
        self.capped_orgs = [o for o in self.orgs if o in money.cap]
        self.tiebreak = tiebreak
        # one LP column per (class, allowed group)
        self.col_class = np.array([c.index for c in classes for _ in c.groups], dtype=np.int64)
        self.col_group = np.array([g for c in classes for g in c.groups], dtype=np.int64)
        self._solved = None  # (solver, rows per group) once solved with a solution
        self._duals = None
        self.glop = ""  # GLOP parameters (PolicyParams.glop_parameters: seed, time limit)

    def solve(self) -> list[dict[int, float]]:
        """Planned (fractional) job counts per class and group."""
        import pandas as pd
        from ortools.linear_solver.python import model_builder as mb

        planned: list[dict[int, float]] = [{} for _ in self.classes]
        n = len(self.col_class)
        if n == 0:
            return planned

        # Data, per column
        gpus = np.array([c.gpus for c in self.classes], dtype=np.int64)[self.col_class]
        speed = self._column_speeds()
        prio = np.array([c.priority for c in self.classes])[self.col_class]
        price = np.array([g.price_per_effective_gpu_hour for g in self.groups])
        relative_price = (price / max(price.max(), 1e-12))[self.col_group]
        class_size = np.array([len(c.jobs) for c in self.classes], dtype=float)
        cost, pay = self._column_money()
        columns = np.arange(n)

        model = mb.Model()
        # Variables: jobs of the column's class planned on its group, 0..its class size
        x = [model.new_num_var(0.0, size, None) for size in class_size[self.col_class].tolist()]

        rows: dict[str, tuple[np.ndarray, list]] = {}
        # Constraints
        # 1. a class plans at most its jobs
        rows["classes"] = _add_rows(model, x, self.col_class, columns, np.ones(n), class_size)
        # 2. node shapes: per group and threshold, GPUs and gang slots of nodes that fit
        node_rows, node_cols = self.nodes.pairs(self.col_group)
        coef = self.nodes.coefficients(node_rows, gpus[node_cols])
        used = coef > 0
        rows["nodes"] = _add_rows(
            model, x, node_rows[used], node_cols[used], coef[used], self.nodes.cap
        )
        # 3. each domain's borrowing room, in effective GPUs (gpupool.policies._borrowing)
        col_domain = self._column_index(self.domains, lambda c: c.domain)
        capped = col_domain >= 0
        effective = (gpus * speed)[capped]
        rows["domains"] = _add_rows(
            model, x, col_domain[capped], columns[capped], effective, self.domain_cap
        )
        # 4. budgets (Money): org share per budgeted org; cost per org with a subsidy cap;
        #    cost over all budgeted orgs within their budgets and the platform's subsidy
        budget = self.money.budget
        col_org = self._column_index(self.orgs, lambda c: c.org)
        paid = col_org >= 0
        org_budget = np.array([budget[o] for o in self.orgs])
        rows["pay"] = _add_rows(model, x, col_org[paid], columns[paid], pay[paid], org_budget)
        col_capped = self._column_index(self.capped_orgs, lambda c: c.org)
        with_cap = col_capped >= 0
        limit = np.array([budget[o] + self.money.cap[o] for o in self.capped_orgs])
        rows["cost"] = _add_rows(
            model, x, col_capped[with_cap], columns[with_cap], cost[with_cap], limit
        )
        platform = sum(budget.values()) + self.money.platform
        keys = np.zeros(int(paid.sum()), dtype=np.int64) if platform < math.inf else col_org[:0]
        some = columns[paid][: len(keys)]
        rows["platform"] = _add_rows(
            model, x, keys, some, cost[paid][: len(keys)], np.array([platform])
        )

        # Objective: priority-weighted effective GPUs, given up a hair on dearer GPUs
        value = prio * gpus * speed * (1.0 - self.tiebreak * relative_price)
        model.maximize(mb.LinearExpr.weighted_sum(x, value.tolist()))

        # Solve
        solver = mb.Solver("GLOP")
        if self.glop:
            solver.set_solver_specific_parameters(self.glop)
        status = solver.solve(model)
        if status not in (mb.SolveStatus.OPTIMAL, mb.SolveStatus.FEASIBLE):
            return planned
        values = solver.values(pd.Series(x)).to_numpy()
        self._solved = (solver, rows)
        for col in np.nonzero(values > 1e-6)[0]:
            planned[self.col_class[col]][int(self.col_group[col])] = float(values[col])
        return planned

    @property
    def duals(self) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
        """Per row group: (keys, |dual| of each row); None before a solve with a solution.

        Only benchmarks/priority_bound.py reads them, so they are read on demand.
        """
        if self._solved is None:
            return None
        if self._duals is None:
            solver, rows = self._solved
            self._duals = {
                name: (keys, np.abs(np.array([solver.dual_value(r) for r in rs], dtype=float)))
                for name, (keys, rs) in rows.items()
            }
        return self._duals

    def _column_index(self, names: list[str], of_class) -> np.ndarray:
        """Index of each column's class attribute in ``names``; -1 where absent."""
        index = {d: i for i, d in enumerate(names)}
        by_class = np.array([index.get(of_class(c), -1) for c in self.classes], dtype=np.int64)
        return by_class[self.col_class] if len(by_class) else by_class

    def _column_speeds(self) -> np.ndarray:
        """Per column: its class's speed on its group's GPU type (Job.speed_on)."""
        speed = self.money.speed[self.col_group]  # a copy: the types' own speeds
        start = 0
        for c in self.classes:
            end = start + len(c.groups)
            if c.jobs and c.jobs[0].speeds:  # a class of its own only where one is named
                speed[start:end] = self.money.speeds_of(c.jobs[0], c.groups)
            start = end
        return speed

    def _column_money(self) -> tuple[np.ndarray, np.ndarray]:
        """Per column: a member's mean lowest cost and lowest org share (budgeted orgs only)."""
        cost, pay = np.zeros(len(self.col_class)), np.zeros(len(self.col_class))
        start = 0
        for c in self.classes:
            end = start + len(c.groups)
            if c.org:
                hours = np.array([sum(j.hours for j in c.jobs) / len(c.jobs)])
                col_cost, col_pay = self.money.cost_and_pay(
                    c.org, c.domain, c.gpus, hours, np.array(c.groups, dtype=np.int64), c.jobs[0]
                )
                cost[start:end], pay[start:end] = col_cost[0], col_pay[0]
            start = end
        return cost, pay


def _add_rows(model, x: list, keys: np.ndarray, columns: np.ndarray, coefs, upper: np.ndarray):
    """``sum coef x <= upper[key]`` for each distinct key, terms in column order.

    Returns (the distinct keys, their constraints).
    """
    from ortools.linear_solver.python import model_builder as mb

    order = np.argsort(keys, kind="stable")
    keys, columns, coefs = keys[order], columns[order], np.asarray(coefs, dtype=float)[order]
    distinct, starts = np.unique(keys, return_index=True)
    ends = starts[1:].tolist() + [len(keys)] if len(keys) else []
    rows = []
    for key, lo, hi in zip(distinct.tolist(), starts.tolist(), ends, strict=True):
        terms = [x[c] for c in columns[lo:hi].tolist()]
        expr = mb.LinearExpr.weighted_sum(terms, coefs[lo:hi].tolist())
        rows.append(model.add_linear_constraint(expr, ub=float(upper[key])))
    return distinct.astype(np.int64), rows
