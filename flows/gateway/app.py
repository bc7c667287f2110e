"""The gateway's ASGI application: OpenAI's Chat Completions API in front of the pipelines.

    POST /v1/chat/completions   a pipeline run inline; `stream: true` answers as SSE chunks
    GET  /v1/models             the pipelines (frugal/<name>) and the mapped model names
    GET  /healthz               the process is up
    GET  /readyz                ready to answer (503 while starting or shutting down)
    GET  /metrics               Prometheus metrics

Every response says what happened in headers (`x-frugal-cache`, `x-frugal-route`,
`x-frugal-model`, `x-frugal-cost-usd`), every request is in the cost ledger, and one access
log line per request (`frugal.gateway.access`, JSON) holds neither the prompt nor the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from flows import ledger
from flows.engine.executor import execute
from flows.engine.runners import InlineRunner
from flows.gateway import metrics
from flows.gateway.malloc_arenas import limit_malloc_arenas
from flows.gateway.mapping import Target, inputs_for, listed_models, resolve
from flows.gateway.openai_wire import ChatRequest, WireError, completion_body, completion_id, models_body, stream_chunks, usage_of
from flows.gateway.tenants import RateLimiter, Spending, Tenant, find_tenant, ledger_totals, load_keys
from flows.gateway.warm import warm
from tasks.core.errors import (
    ConfigError,
    FrugalError,
    InputError,
    ModelAuthError,
    ModelRequestError,
    ModelTimeout,
    ModelUnavailable,
    StepError,
)
from tasks.core.settings import GatewaySettings, get_settings

log = logging.getLogger("frugal.gateway")
access = logging.getLogger("frugal.gateway.access")
JSON = "application/json"
NO_TENANT = Tenant(name="default", namespace="default", key_sha256="0" * 64)


class Gateway:
    """The state one worker process keeps: tenants, limits, spending, readiness."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.tenants = load_keys(settings.keys_file)
        self.models = settings.model_map()
        self.rates = RateLimiter()
        self.spending = Spending()
        self.ready = False
        self._refresher: asyncio.Task[None] | None = None

    # -- lifespan ---------------------------------------------------------------------------
    async def start(self) -> None:
        ledger.install()
        await asyncio.to_thread(warm, set(self.models.values()))  # /readyz says ready once a miss loads nothing
        await self.refresh_spending()
        self._refresher = asyncio.create_task(self._refresh_forever())
        self.ready = True
        log.info("gateway ready: %d tenant(s), models %s", len(self.tenants), ", ".join(listed_models(self.models)))

    async def stop(self) -> None:
        self.ready = False
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if not await asyncio.to_thread(ledger.flush, 10.0):
            log.warning("gateway: some cost-ledger entries could not be written before shutdown")

    async def refresh_spending(self) -> None:
        if not any(t.budget_usd_per_day is not None for t in self.tenants.values()):
            return
        day = self.spending.day
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        try:
            from_ledger = await asyncio.to_thread(ledger.read_entries, midnight)
        except FrugalError as exc:
            log.warning("gateway: budgets counted in this process only: the cost ledger cannot be read: %s", exc)
            return
        self.spending.reset(day, ledger_totals(from_ledger))

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.budget_refresh_seconds)
            await self.refresh_spending()

    # -- requests ---------------------------------------------------------------------------
    def tenant_of(self, request: Request) -> Tenant:
        if not self.tenants:
            return NO_TENANT
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header[:7].lower() == "bearer " else request.headers.get("api-key", "").strip()
        if not key:
            raise WireError(401, "Missing API key: send `Authorization: Bearer <key>`", code="invalid_api_key")
        tenant = find_tenant(self.tenants, key)
        if tenant is None:
            raise WireError(401, "Incorrect API key provided", code="invalid_api_key")
        return tenant

    def admit(self, tenant: Tenant) -> None:
        wait = self.rates.retry_after(tenant)
        if wait is not None:
            raise WireError(
                429,
                f"Rate limit reached for tenant '{tenant.name}': {tenant.requests_per_minute} requests per minute",
                code="rate_limit_exceeded",
                headers={"retry-after": str(max(1, round(wait)))},
            )
        budget = tenant.budget_usd_per_day
        if budget is not None and self.spending.spent(tenant.namespace) >= budget:
            raise WireError(
                429,
                f"Tenant '{tenant.name}' spent its budget of ${budget} for today (UTC); it renews at 00:00 UTC",
                code="insufficient_quota",
            )


def _wire_error(exc: BaseException) -> WireError:
    """Our errors in OpenAI's words (status, type, code); never the prompt or a key."""
    cause: BaseException | None = exc
    while isinstance(cause, StepError) and cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, InputError):
        return WireError(400, str(cause), code="invalid_request")
    if isinstance(cause, ModelTimeout):
        return WireError(504, f"The model did not answer in time: {cause}", code="model_timeout")
    if isinstance(cause, ModelUnavailable):
        return WireError(503, f"The model is unavailable: {cause}", code="model_unavailable")
    if isinstance(cause, ModelAuthError):
        return WireError(502, f"The upstream model refused the gateway's credentials: {cause}", code="upstream_auth")
    if isinstance(cause, ModelRequestError):
        return WireError(400, f"The model refused the request: {cause}", code="upstream_rejected")
    if isinstance(cause, ConfigError):
        return WireError(500, f"The gateway is misconfigured: {cause}", code="config_error")
    if isinstance(exc, FrugalError):
        return WireError(500, str(exc), code="pipeline_error")
    return WireError(500, "The server had an error while processing your request", code="internal_error")


def _headers(output: dict[str, Any]) -> dict[str, str]:
    cost = output.get("cost")
    return {
        "x-frugal-cache": str(output.get("cache", "")),
        "x-frugal-route": str(output.get("route", "")),
        "x-frugal-model": str(output.get("model", "")),
        "x-frugal-cost-usd": "" if cost is None else str(Decimal(str(cost))),
    }


def create_app(settings: GatewaySettings | None = None) -> Starlette:
    limit_malloc_arenas()  # each worker process, before its threads start (flows.gateway.malloc_arenas)
    gateway = Gateway(settings or get_settings().gateway)

    def error_response(error: WireError) -> Response:
        return Response(error.body(), status_code=error.status, media_type=JSON, headers=error.headers)

    def log_access(request: Request, status: int, started: float, tenant: str, pipeline: str, output: dict[str, Any]) -> None:
        if gateway.settings.access_log:
            access.info(
                json.dumps(
                    {
                        "method": request.method,
                        "path": request.url.path,
                        "status": status,
                        "ms": round((time.perf_counter() - started) * 1000, 3),
                        "tenant": tenant,
                        "pipeline": pipeline,
                        "cache": output.get("cache"),
                        "route": output.get("route"),
                        "model": output.get("model"),
                        "cost_usd": None if output.get("cost") is None else str(output.get("cost")),
                    }
                )
            )

    async def chat_completions(request: Request) -> Response:
        started = time.perf_counter()
        tenant_name, pipeline_name = "-", "-"
        output: dict[str, Any] = {}
        status = 200
        try:
            tenant = gateway.tenant_of(request)
            tenant_name = tenant.name
            body = await request.body()
            if len(body) > gateway.settings.max_request_bytes:
                raise WireError(413, f"Request body over {gateway.settings.max_request_bytes} bytes", code="request_too_large")
            try:
                chat = ChatRequest.model_validate(orjson.loads(body))
            except orjson.JSONDecodeError as exc:
                raise WireError(400, f"The request body is not valid JSON: {exc}", code="invalid_json") from exc
            except ValidationError as exc:
                first = exc.errors()[0]
                param = ".".join(str(p) for p in first["loc"]) or None
                raise WireError(400, f"Invalid request: {param}: {first['msg']}", param=param, code="invalid_value") from exc
            refused = chat.refused()
            if refused is not None:
                raise WireError(
                    400,
                    f"Unsupported parameter: '{refused}' is not supported by this gateway",
                    param=refused,
                    code="unsupported_parameter",
                )
            target: Target = resolve(chat.model, gateway.models)
            pipeline_name = target.pipeline.spec.name
            if gateway.tenants and "namespace" not in target.pipeline.spec.inputs:
                raise WireError(
                    400,
                    f"pipeline '{pipeline_name}' has no namespace input, so tenants would share its cache",
                    code="model_not_supported",
                    param="model",
                )
            gateway.admit(tenant)
            inputs = inputs_for(chat, target, tenant.namespace)
            try:
                result = await execute(target.pipeline, inputs, InlineRunner())
            except Exception as exc:  # every failure becomes an OpenAI error; ours say what to fix
                error = _wire_error(exc)
                if error.status >= 500 and not isinstance(exc, FrugalError):
                    log.exception("gateway: pipeline %s failed", pipeline_name)
                raise error from exc
            output = result.output if isinstance(result.output, dict) else {"text": str(result.output)}
            gateway.spending.add(tenant.namespace, output.get("cost"))
            _count(tenant_name, output)
            text = str(output.get("text") or "")
            model = str(output.get("model") or chat.model)
            finish = str(output.get("finish_reason") or "stop")
            cid = completion_id()
            headers = _headers(output)
            metrics.LATENCY.labels(pipeline_name, str(output.get("cache", ""))).observe(time.perf_counter() - started)
            if chat.stream:
                usage = usage_of(output) if chat.stream_options and chat.stream_options.include_usage else None
                chunks = stream_chunks(cid, model, text, finish, usage)

                async def replay() -> AsyncIterator[bytes]:
                    for chunk in chunks:
                        yield chunk

                return StreamingResponse(
                    replay(), media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"}
                )
            return Response(completion_body(cid, model, text, finish, usage_of(output)), media_type=JSON, headers=headers)
        except WireError as error:
            status = error.status
            return error_response(error)
        finally:
            metrics.REQUESTS.labels(pipeline_name, str(status)).inc()
            log_access(request, status, started, tenant_name, pipeline_name, output)

    async def list_models(request: Request) -> Response:
        try:
            gateway.tenant_of(request)
        except WireError as error:
            return error_response(error)
        return Response(models_body(listed_models(gateway.models)), media_type=JSON)

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    async def readyz(request: Request) -> Response:
        if not gateway.ready:
            return Response(b'{"status":"not ready"}', status_code=503, media_type=JSON)
        return Response(b'{"status":"ready"}', media_type=JSON)

    async def metrics_page(request: Request) -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_page, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app


def _count(tenant: str, output: dict[str, Any]) -> None:
    metrics.CACHE.labels(str(output.get("cache", "none"))).inc()
    if output.get("route"):
        metrics.ROUTES.labels(str(output["route"])).inc()
    cost = output.get("cost")
    if cost is not None:
        metrics.COST.labels(tenant).inc(float(cost))
