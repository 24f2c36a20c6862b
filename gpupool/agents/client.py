"""The agent's side of /api/v1/agent: three calls, each one HTTP request.

Wire shapes are the server's (gpupool.server.schemas: Starts, RunReports,
Heartbeat, Orders); this module turns them into the executor contract's types.
An error answer or an unreachable server raises AgentApiError; the agent loop
logs it and tries again at its next poll (every call is idempotent).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gpupool.agents.executor import Launch, Payload, RunKey, RunPhase, RunState
from gpupool.model import GpupoolError

API = "/api/v1"
TIMEOUT_SECONDS = 30.0


class AgentApiError(GpupoolError):
    """The server refused a call or could not be reached."""


@dataclass(frozen=True)
class Start:
    """A start as pulled: the executor's Launch, and whether the site reported it running."""

    launch: Launch
    reported_running: bool


class AgentApi:
    def __init__(self, url: str, token: str) -> None:
        import httpx

        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url + API,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=TIMEOUT_SECONDS,
        )

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        import httpx

        try:
            response = self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise AgentApiError(
                f"cannot reach the server {self.url}: {type(exc).__name__}: {exc}",
                location="GPUPOOL_URL",
            ) from None
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code >= 400:
            detail = data.get("detail") if isinstance(data, dict) else None
            raise AgentApiError(
                f"the server answered {response.status_code}: {detail or response.text[:200]}",
                location=f"{method} {API}{path}",
            )
        return data

    def starts(self) -> tuple[str, list[Start]]:
        """(the token's site, the starts placed there)."""
        data = self._call("GET", "/agent/starts")
        return data["site"], [_start(item) for item in data["starts"]]

    def report(self, states: Iterable[RunState]) -> dict[RunKey, str]:
        """Report runs; each key's outcome (recorded, unchanged, stop)."""
        reports = [_report(state) for state in states]
        if not reports:
            return {}
        data = self._call("POST", "/agent/reports", {"reports": reports})
        return {RunKey(r["job_id"], r["run_id"]): r["outcome"] for r in data["results"]}

    def heartbeat(self, running: Iterable[RunKey]) -> tuple[str, dict[RunKey, str]]:
        """(the site, the runs to stop -> why)."""
        keys = [{"job_id": k.job_id, "run_id": k.run_id} for k in running]
        data = self._call("POST", "/agent/heartbeat", {"running": keys})
        return data["site"], {RunKey(s["job_id"], s["run_id"]): s["reason"] for s in data["stop"]}


def _start(item: dict) -> Start:
    raw = item["payload"]
    payload = Payload(
        argv=tuple(raw.get("argv") or ()),
        script=raw.get("script"),
        workdir=raw.get("workdir"),
        env=dict(raw.get("env") or {}),
        image=raw.get("image"),
        stdout=raw.get("stdout"),
        stderr=raw.get("stderr"),
    )
    launch = Launch(
        key=RunKey(item["job_id"], item["run_id"]),
        pool=item["pool"],
        gpu_type=item["gpu_type"],
        vendor=item["vendor"],
        nodes=tuple((int(node), tuple(int(i) for i in gpus)) for node, gpus in item["nodes"]),
        time_limit_s=float(item["time_limit_s"]),
        payload=payload,
    )
    return Start(launch, item.get("run_started_at") is not None)


def _report(state: RunState) -> dict:
    return {
        "job_id": state.key.job_id,
        "run_id": state.key.run_id,
        "phase": RunPhase(state.phase).value,
        "started_at": state.started_at,
        "ended_at": state.ended_at,
        "exit_code": state.exit_code,
        "detail": state.detail[:256],
    }
