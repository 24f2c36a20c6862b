"""`gpupool agent run`: the loop that runs a site's starts through an executor.

Each step, in this order (every call idempotent, so a step cut short anywhere is
simply done again by the next one, by this process or a restarted one):

1. read what the executor knows of every run it launched (``states()``);
2. report to the server what this process has not reported yet (a run the
   workload manager still queues is not reported): runs running,
   runs ended or failed with their exit codes and real times (an agent that
   restarts reports every end it finds once more; the server answers
   ``unchanged``, so no end is lost and none is counted twice);
3. send the heartbeat with the runs still queued or running; stop those the server ended
   (preemption, cancellation, a timeout it reaped, a site declared lost);
4. pull the starts placed on the site and launch those the executor does not
   know. A start the site reported running before, but that the executor has no
   record of, is not launched again: it is reported failed.

A server that does not answer (AgentApiError) or a workload manager that does
not (ExecutorUnavailable) is tried again at the next step.

The agent never touches the database: it holds a token for a user with role
``agent`` at its site, and the server refuses it everything else.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from gpupool.agents.client import AgentApi, AgentApiError
from gpupool.agents.executor import (
    Executor,
    ExecutorUnavailable,
    RunKey,
    RunPhase,
    RunState,
)
from gpupool.model import GpupoolError

log = logging.getLogger("gpupool.agent")
LOST_RECORD = "the executor has no record of this run (its state was lost)"


@dataclass
class StepResult:
    reported: list[RunKey] = field(default_factory=list)
    stopped: list[RunKey] = field(default_factory=list)
    launched: list[RunKey] = field(default_factory=list)


class Agent:
    def __init__(self, api: AgentApi, executor: Executor, site: str) -> None:
        self.api = api
        self.executor = executor
        self.site = site
        self._reported: dict[RunKey, RunPhase] = {}  # what this process has reported

    def step(self) -> StepResult:
        result = StepResult()
        states = {state.key: state for state in self.executor.states()}
        self._report(states, result)
        self._obey(states, result)
        self._launch(states, result)
        return result

    def _report(self, states: dict[RunKey, RunState], result: StepResult) -> None:
        news = [
            s
            for s in states.values()
            if s.phase != RunPhase.QUEUED and self._reported.get(s.key) != s.phase
        ]
        outcomes = self.api.report(news)
        for state in news:  # a "stop" outcome is obeyed with the heartbeat's reason, next
            if state.key in outcomes:
                self._reported[state.key] = state.phase
                result.reported.append(state.key)

    def _obey(self, states: dict[RunKey, RunState], result: StepResult) -> None:
        # queued runs too: a cancel must reach a run the workload manager still holds
        running = [k for k, s in states.items() if s.phase in (RunPhase.QUEUED, RunPhase.RUNNING)]
        site, stops = self.api.heartbeat(running)
        self._check_site(site)
        for key, reason in stops.items():
            self._stop(key, reason, result)

    def _stop(self, key: RunKey, reason: str, result: StepResult) -> None:
        if key not in result.stopped:
            log.info("stopping %s: %s", key.tag, reason)
            self.executor.stop(key, reason)
            result.stopped.append(key)

    def _launch(self, states: dict[RunKey, RunState], result: StepResult) -> None:
        site, starts = self.api.starts()
        self._check_site(site)
        lost = []
        for start in starts:
            key = start.launch.key
            if key in states:
                continue
            if start.reported_running:  # launched before, by an executor that forgot it
                now = time.time()
                lost.append(RunState(key, RunPhase.FAILED, now, now, None, LOST_RECORD))
                continue
            log.info("launching %s on %s", key.tag, start.launch.pool)
            self.executor.launch(start.launch)
            result.launched.append(key)
        if lost:
            self.api.report(lost)
            result.reported.extend(state.key for state in lost)

    def _check_site(self, site: str) -> None:
        if site != self.site:
            raise GpupoolError(
                f"the token acts for site {site!r}, not {self.site!r}", location="--site"
            )

    def run(self, poll_seconds: float, once: bool = False) -> None:
        """Step every ``poll_seconds`` (once with ``once``); a server that does not
        answer is tried again at the next step."""
        while True:
            try:
                self.step()
            except (AgentApiError, ExecutorUnavailable) as exc:
                if once:
                    raise
                log.warning("%s; trying again in %gs", exc, poll_seconds)
            if once:
                return
            time.sleep(poll_seconds)
