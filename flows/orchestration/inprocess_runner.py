"""Serve deployments and run their flow runs inside this long-lived process.

Prefect's own runner (`prefect.serve`, and workers) starts a new Python process
for every flow run and finds runs by polling every `PREFECT_RUNNER_POLL_FREQUENCY`
seconds (an integer, 1 at least). For a pipeline whose answer is a cache hit
that is most of the time a REST call takes: measured here, p50 2.7 s from
`create_flow_run` to the output, of which ~0.5 s waiting for the poll and
~1.5 s starting the process (Python, Prefect and the project imported again).

This runner keeps the same contract (deployments named after their pipeline, no
work pool, runs created by the UI, the REST API or schedules) and changes only
how a run is picked up and where it runs:

- it hears of new runs at once from Prefect's event stream
  (`prefect.flow-run.Scheduled` events of its deployments, over the API's
  websocket), and polls `get_scheduled_flow_runs` every `poll_seconds` for runs
  scheduled ahead of time and for anything the stream missed;
- it claims a run by proposing `Pending` (the server refuses a second claim, so
  several runners, or a Prefect runner, never run the same flow run twice);
- it runs the flow with Prefect's own flow engine (`run_flow`), in this process,
  concurrently up to `limit` runs: same states, task runs, logs, results and
  artifacts as a subprocess run, without starting one;
- a run set to Cancelling (UI, API) is cancelled: its asyncio task is cancelled
  and the run marked Cancelled;
- every run uses the one Prefect API client of this process (an `AsyncClientContext`
  around the runner, which Prefect's `get_client()` hands out on this loop), and the one
  synchronous client (a `SyncClientContext`: Prefect's result store asks the server for its
  default result storage with a sync client at the start of every flow run). Without them
  each run built three clients (flow engine, result storage, suspension observer), each
  loading the CA bundle into a new SSL context: 38 % of `frugal serve`'s CPU under load.
  Measured on flows of one task run in one process: 2.0 SSL contexts and 147 ms of CPU for
  them per flow run with a client per run, 1.1 and 78 ms with one client (a loaded 2-core host).

- Prefect's flow engine starts, for every run of a deployment, a watcher for a *suspension*
  request (`prefect.flow_engine.observe_flow_run_suspension`: a thread with its own event loop
  and a websocket subscription to the server's events, the run waiting until it is connected,
  and up to 0.2 s joining it at the end). Pipelines never suspend, and cancellation is watched
  here (`_cancel_requested`), so this runner does not start it (`_no_suspension_watcher`):
  measured on a PostgreSQL server, a run's Pending -> Running went from 155-219 ms to 61-94 ms.

What is traded: runs share this process, so a run that exhausts memory or
blocks the event loop affects the others (the pipelines' steps are async and
short), and code changes need a restart (pipeline YAML changes do not: the
catalog reloads an edited file).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect import Flow
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.context import AsyncClientContext, SyncClientContext
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventRelatedFilter,
    EventResourceFilter,
)
from prefect.flow_engine import run_flow
from prefect.results import aget_default_result_storage
from prefect.states import Cancelled, Failed, Pending

log = logging.getLogger("frugal.runner")


class InProcessRunner:
    """Runs the flow runs of `deployments` ((flow, RunnerDeployment) pairs) in this process."""

    def __init__(
        self,
        deployments: Iterable[tuple[Flow[..., Any], Any]],
        *,
        limit: int = 16,
        poll_seconds: float = 2.0,
        ready: Callable[[str], None] | None = None,
    ) -> None:
        self.deployments = list(deployments)
        self.limit = limit
        self.poll_seconds = poll_seconds
        self.flows: dict[UUID, Flow[..., Any]] = {}
        self.running: dict[UUID, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(limit)
        self._client: Any = None
        self.started = asyncio.Event()
        #: called once with a line saying what is served where, when runs can be taken
        self.ready = ready

    async def register(self) -> None:
        """Create or update every deployment (no work pool: this process runs them).

        The runs' result storage, and whether flow results are persisted, are decided here, once,
        as Prefect decides them (the server's default result storage, an admin setting, or else
        the local results path). Left unset, Prefect's engine asks the server at the start of
        every run, three times (`GET /admin/storage`, 4-8 ms each on an idle SQLite server). The
        REST call's p50 did not move beyond the noise (bench_rest.py --gap 1.5: 297-330 ms
        before, 306-308 after); what it saves is three requests per run to the server."""
        storage = await aget_default_result_storage()
        persist = await _default_persist_result()
        for flow, deployment in self.deployments:
            deployment_id = await deployment.aapply()
            if flow.result_storage is None:
                flow.result_storage = storage  # the attributes, not `with_options` (which wants a saved block)
            if flow.persist_result is None:
                flow.persist_result = persist
            self.flows[deployment_id] = flow

    async def serve(self) -> None:
        _no_suspension_watcher()
        # one client for the runner and every run; one sync client for what Prefect asks synchronously
        with SyncClientContext():
            await self._serve()

    async def _serve(self) -> None:
        async with AsyncClientContext() as client_context:
            self._client = client = client_context.client
            await self.register()
            names = ", ".join(f"{f.name}/{d.name}" for f, d in self.deployments)
            log.info("serving %s in process (limit %d runs at once)", names, self.limit)
            if self.ready is not None:
                where = str(client.api_url).rstrip("/")
                self.ready(f"serving {names} at {where} (in this process, {self.limit} runs at once); Ctrl-C stops")
            self.started.set()
            try:
                await asyncio.gather(self._listen(), self._poll())
            finally:
                for task in list(self.running.values()):
                    task.cancel()
                await asyncio.gather(*self.running.values(), return_exceptions=True)

    # -- finding runs --------------------------------------------------------------------------

    async def _listen(self) -> None:
        """New runs, at once, from the event stream; reconnects on its own."""
        related = EventRelatedFilter(resources_in_roles=[(f"prefect.deployment.{d}", "deployment") for d in self.flows])
        event_filter = EventFilter(
            occurred=EventOccurredFilter(since=datetime.now(UTC)),  # type: ignore[arg-type]
            event=EventNameFilter(name=["prefect.flow-run.Scheduled"]),
            resource=EventResourceFilter(id_prefix=["prefect.flow-run."]),
            related=related,
        )
        while True:
            try:
                async with get_events_subscriber(filter=event_filter, reconnect_on_clean_close=True) as events:
                    async for event in events:
                        run_id = UUID(event.resource.id.rsplit(".", 1)[-1])
                        if run_id not in self.running:
                            flow_run = await self._client.read_flow_run(run_id)
                            await self._maybe_start(flow_run)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the poll loop still finds every run; retry the stream shortly
                log.warning("event stream interrupted (%s); polling meanwhile", exc)
                await asyncio.sleep(self.poll_seconds)

    async def _poll(self) -> None:
        """Runs scheduled ahead of time, runs the stream missed, and cancellations."""
        while True:
            try:
                runs = await self._client.get_scheduled_flow_runs_for_deployments(
                    deployment_ids=list(self.flows), scheduled_before=datetime.now(UTC), limit=self.limit
                )
                for flow_run in runs:
                    await self._maybe_start(flow_run)
                await self._cancel_requested()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API may be restarting: log and keep polling
                log.warning("polling for flow runs failed: %s", exc)
            await asyncio.sleep(self.poll_seconds)

    async def _cancel_requested(self) -> None:
        if not self.running:
            return
        cancelling_state = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLING]))
        cancelling = await self._client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(self.running)), state=cancelling_state)
        )
        for flow_run in cancelling:
            task = self.running.get(flow_run.id)
            if task is not None:
                task.cancel()

    # -- running them --------------------------------------------------------------------------

    async def _maybe_start(self, flow_run: FlowRun) -> None:
        flow = self.flows.get(flow_run.deployment_id) if flow_run.deployment_id else None
        if flow is None or flow_run.id in self.running or flow_run.state is None or flow_run.state.type != StateType.SCHEDULED:
            return
        if flow_run.next_scheduled_start_time and flow_run.next_scheduled_start_time > datetime.now(UTC):
            return  # scheduled ahead: the poll loop starts it when it is due
        claim = await self._client.set_flow_run_state(flow_run.id, Pending(), force=False)
        if claim.status != SetStateStatus.ACCEPT:
            return  # someone else claimed it
        self.running[flow_run.id] = asyncio.create_task(self._run(flow, flow_run), name=f"flow-run-{flow_run.id}")

    async def _run(self, flow: Flow[..., Any], flow_run: FlowRun) -> None:
        async with self._slots:
            try:
                coro = run_flow(flow, flow_run=flow_run, return_type="state")
                await coro  # type: ignore[misc]
            except asyncio.CancelledError:
                await self._set_final(flow_run, Cancelled(message="cancelled while running in process"))
            except Exception as exc:  # e.g. parameters the flow's signature does not take: fail the run, say why
                log.warning("flow run %s could not run: %s", flow_run.id, exc)
                await self._set_final(flow_run, Failed(message=f"{type(exc).__name__}: {exc}"))
            finally:
                self.running.pop(flow_run.id, None)

    async def _set_final(self, flow_run: FlowRun, state: Any) -> None:
        current = await self._client.read_flow_run(flow_run.id)
        if current.state is None or not current.state.is_final():
            await self._client.set_flow_run_state(flow_run.id, state, force=True)


async def _default_persist_result() -> bool | None:
    """Whether Prefect would persist a flow's result by default (its own answer, asked once); None
    on a Prefect release without that function: the engine then decides it on each run, as before."""
    try:
        from prefect.results import _aget_default_persist_result  # private, Prefect 3.4+: not in every release
    except ImportError:
        return None
    return bool(await _aget_default_persist_result())


@contextmanager
def _not_watched(*args: Any, **kwargs: Any) -> Iterator[None]:
    yield


def _no_suspension_watcher() -> None:
    """Runs in this process start no suspension watcher (see the module's docstring)."""
    import prefect.flow_engine as engine

    if hasattr(engine, "observe_flow_run_suspension"):  # Prefect 3.6+; older ones have none to skip
        engine.observe_flow_run_suspension = _not_watched  # type: ignore[assignment]


async def serve_in_process(
    deployments: Iterable[tuple[Flow[..., Any], Any]],
    *,
    limit: int = 16,
    poll_seconds: float = 2.0,
    ready: Callable[[str], None] | None = None,
) -> None:
    await InProcessRunner(deployments, limit=limit, poll_seconds=poll_seconds, ready=ready).serve()
