"""The receiver's aiohttp application, built from a config object: vendor routes, auth, limits,
vendor-exact replies, one Kafka record per accepted request, health and metrics endpoints."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from pipeline.clock import Clock, SystemClock, to_epoch_ms
from pipeline.formats import all_formats
from pipeline.formats.base import REJECTION_REASON, Problem, Rejection, Reply, Route, VendorFormat
from pipeline.metrics import Metrics
from pipeline.rate_limits import PER_SITE_SOURCE, LimitTable
from pipeline.record import RecordMeta
from pipeline.settings import Settings
from pipeline.tenants import Tenant, TenantDirectory
from producers.receiver import admission, auth, cors
from producers.receiver.body import check_content_type, read_body
from producers.receiver.buckets import RateLimiter
from producers.receiver.kafka import KafkaUnavailable, RecordProducer
from producers.receiver.metrics_view import MetricsView
from producers.receiver.tally import Tally

log = structlog.get_logger("eventpipe.receiver")

RETRY_AFTER_SECONDS = 1
MAX_REQUEST_ID = 64

Authenticator = Callable[["ReceiverState", web.Request], str]

AUTHENTICATORS: Mapping[str, Authenticator] = {
    "topsort": lambda state, req: auth.by_bearer_key(state.keys, req.headers),
    "dfinery": lambda state, req: auth.by_bearer_key(state.keys, req.headers),
    "retailrocket": lambda state, req: auth.by_retailrocket_query(state.keys, req.query),
    # PyJWT checks exp against the wall clock, and so does the verifier's memory of tokens.
    "impression": lambda state, req: state.jwt.tenant(req.headers, req.query, time.time()),
}


@dataclass
class ReceiverState:
    settings: Settings
    tenants: TenantDirectory
    metrics: Metrics
    metrics_view: MetricsView
    producer: RecordProducer
    clock: Clock
    limiter: RateLimiter
    jwt: auth.JwtVerifier
    keys: auth.KeyVerifier
    # The metric updates of the requests, written to prometheus-client once per loop tick (tally.py).
    tally: Tally
    # Admission: the request body bytes reserved by this worker's requests in flight (admission.py).
    gate: admission.Gate
    draining: bool = False

    def use_tenants(self, tenants: TenantDirectory) -> None:
        """Serve another tenants file from the next request on. Both verifiers start afresh: a token
        or key they remember may have been verified with a secret, or for a tenant, now removed."""
        self.tenants = tenants
        self.jwt = auth.JwtVerifier(tenants)
        self.keys = auth.KeyVerifier(tenants)


STATE = web.AppKey("state", ReceiverState)


def create_app(
    settings: Settings,
    tenants: TenantDirectory,
    metrics: Metrics,
    *,
    clock: Clock | None = None,
    metrics_view: MetricsView | None = None,
    limiter: RateLimiter | None = None,
) -> web.Application:
    """`limiter` is the workers' shared one under `--workers N` (the app closes it on cleanup); by
    default the buckets live in this process."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    clock = clock or SystemClock()
    tally = Tally(metrics.in_flight)
    state = ReceiverState(
        settings=settings,
        tenants=tenants,
        metrics=metrics,
        metrics_view=metrics_view or MetricsView.single(metrics.registry),
        producer=RecordProducer(settings, metrics, tally),
        clock=clock,
        limiter=limiter or RateLimiter.local(LimitTable.build(settings, tenants), clock.monotonic()),
        jwt=auth.JwtVerifier(tenants),
        keys=auth.KeyVerifier(tenants),
        tally=tally,
        gate=admission.Gate(
            admission.Bounds(settings.max_in_flight_bytes, settings.max_body_bytes),
            metrics.in_flight_bytes,
            settings.overload_wait_seconds,
            clock.monotonic,
        ),
    )
    app[STATE] = state
    formats = all_formats()
    for fmt in formats.values():
        for route in fmt.routes:
            app.router.add_post(route.path, _vendor_handler(fmt, route))
            if cors.browser_facing(fmt.source):
                app.router.add_route("OPTIONS", route.path, _preflight(fmt))
    # Retail Rocket answers unknown methods with 404; do so in its shape rather than aiohttp's text.
    rr = formats["retailrocket"]
    app.router.add_post("/1.0/{method}", _unknown_method(rr))
    app.router.add_route("OPTIONS", "/1.0/{method}", _preflight(rr))
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/openapi.json", _openapi)
    app.cleanup_ctx.append(_producer_ctx)
    app.on_cleanup.append(_close_limiter)
    app.on_shutdown.append(_start_draining)
    return app


async def _producer_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    await state.producer.start()
    state.metrics.ready.labels("receiver").set(0)
    yield
    await state.producer.stop()
    state.tally.flush()  # the last requests' updates, before the worker's file is left behind


async def _close_limiter(app: web.Application) -> None:
    app[STATE].limiter.close()


async def _start_draining(app: web.Application) -> None:
    app[STATE].draining = True
    app[STATE].gate.valve.open()  # the held connections are idle ones: aiohttp closes them now
    app[STATE].metrics.ready.labels("receiver").set(0)
    log.info("draining")


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id", "")
    if given and len(given) <= MAX_REQUEST_ID and given.isascii() and given.isprintable():
        return given
    # 32 random hex digits, as uuid4().hex gave, without building a UUID object (1.4 % of a request).
    return secrets.token_hex(16)


def _response(reply: Reply, request_id: str, extra: Mapping[str, str] | None = None) -> web.Response:
    headers = {**reply.headers, **extra} if extra else dict(reply.headers)
    headers["X-Request-Id"] = request_id
    if reply.content_type is None:
        return web.Response(status=reply.status, body=reply.body or None, headers=headers)
    return web.Response(
        status=reply.status, body=reply.body, content_type=reply.content_type, headers=headers
    )


def _site(source: str, request: web.Request) -> str:
    """The rate limit's site: Retail Rocket's partnerId (already checked against the tenant's)."""
    return request.query.get("partnerId", "") if source == PER_SITE_SOURCE else ""


def _vendor_handler(fmt: VendorFormat, route: Route) -> Callable[[web.Request], Any]:
    source = fmt.source
    authenticate = AUTHENTICATORS[source]
    browser = cors.browser_facing(source)
    overloaded = fmt.error(admission.overloaded(RETRY_AFTER_SECONDS))

    async def handle(request: web.Request) -> web.Response:
        # Admission first: over this worker's bound the request is refused before its body is read.
        gate = request.app[STATE].gate
        reserved = gate.reserve(request)
        if reserved is None:
            response = _overloaded(request, source, route, overloaded, browser)
            gate.refused(request)
            return response
        try:
            return await admitted(request)
        finally:
            gate.release(reserved, request)

    async def admitted(request: web.Request) -> web.Response:
        state = request.app[STATE]
        settings = state.settings
        metrics = state.metrics
        tally = state.tally
        started = time.perf_counter()
        request_id = _request_id(request)
        tally.enter()
        events = 0
        tenant: str | None = None
        origin = request.headers.get("Origin") if browser else None
        refusal: Rejection | None = None
        try:
            try:
                if state.draining:
                    raise Rejection(Problem.UNAVAILABLE, "shutting down", retry_after=RETRY_AFTER_SECONDS)
                tenant = authenticate(state, request)
                cors.check_origin(state.tenants.by_id(tenant), origin)
                # Before the body is read: a tenant over its limit costs no bandwidth or decoding.
                allowed, retry_after = state.limiter.acquire(
                    (tenant, source, _site(source, request)), state.clock.monotonic()
                )
                if not allowed:
                    raise Rejection(Problem.RATE_LIMITED, "rate limit exceeded", retry_after=retry_after)
                check_content_type(request, fmt.requires_json_content_type, beacons=browser)
                body = await read_body(
                    request, settings.max_body_bytes, settings.request_read_timeout_seconds
                )
                tally.observe(metrics.request_bytes, (source,), len(body))
                received_at = state.clock.now()
                accepted = fmt.validate(body, route.name, received_at, settings.future_skew_seconds)
                meta = RecordMeta(
                    source=source,
                    route=route.name,
                    tenant=tenant,
                    received_at_ms=to_epoch_ms(received_at),
                    request_id=request_id,
                )
                try:
                    await state.producer.send(body, meta)
                except KafkaUnavailable as exc:
                    log.warning("kafka_unavailable", request_id=request_id, source=source, error=str(exc))
                    raise Rejection(
                        Problem.UNAVAILABLE, "temporarily unavailable, retry", retry_after=RETRY_AFTER_SECONDS
                    ) from exc
                events = accepted.events
                reply = accepted.reply
            except Rejection as rejection:
                refusal = rejection
                reason = (
                    cors.ORIGIN_REASON
                    if isinstance(rejection, cors.OriginRefused)
                    else REJECTION_REASON[rejection.problem]
                )
                tally.inc(metrics.rejections, (source, reason, *metrics.tenant(tenant)))
                reply = fmt.error(rejection)
                log.info(
                    "rejected",
                    request_id=request_id,
                    source=source,
                    route=route.name,
                    tenant=tenant,
                    problem=rejection.problem.value,
                    path=rejection.path,
                    status=reply.status,
                )
            if events:
                tally.inc(metrics.events_accepted, (source, *metrics.tenant(tenant)), events)
            tally.inc(metrics.requests, (source, route.name, str(reply.status)))
            return _response(reply, request_id, cors.reply_headers(origin, refusal) if browser else None)
        finally:
            tally.leave()
            tally.observe(metrics.request_latency, (source,), time.perf_counter() - started)

    return handle


def _overloaded(request: web.Request, source: str, route: Route, reply: Reply, browser: bool) -> web.Response:
    """A request refused by admission, its body unread: if it has not all arrived, the connection closes
    after the reply (admission.ClosingResponse). Not logged: under overload a line per refusal would
    cost more than the refusal; the rejections metric counts it."""
    state = request.app[STATE]
    metrics, tally = state.metrics, state.tally
    tally.inc(metrics.rejections, (source, admission.OVERLOADED_REASON, *metrics.tenant(None)))
    tally.inc(metrics.requests, (source, route.name, str(reply.status)))
    extra = cors.reply_headers(request.headers.get("Origin"), None) if browser else None
    if request.content.is_eof():
        return _response(reply, _request_id(request), extra)
    headers = {**reply.headers, **(extra or {}), "X-Request-Id": _request_id(request)}
    return admission.ClosingResponse(
        request.protocol,
        status=reply.status,
        body=reply.body,
        content_type=reply.content_type,
        headers=headers,
    )


def _unknown_method(rr: VendorFormat) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.Response:
        method = request.match_info.get("method", "")
        reply = rr.error(Rejection(Problem.INVALID, f"unknown method {method!r}", "path"))
        reply = Reply(404, reply.body, reply.content_type, reply.headers)
        state = request.app[STATE]
        state.tally.inc(state.metrics.requests, ("retailrocket", "unknown", "404"))
        return _response(reply, _request_id(request), cors.reply_headers(request.headers.get("Origin"), None))

    return handle


def _preflight(fmt: VendorFormat) -> Callable[[web.Request], Any]:
    """OPTIONS on a browser-facing route (cors.preflight): counted under its own route, never sent to
    Kafka. Where the route's credentials travel in the query, the preflight carries them, and the tenant
    they name (when valid) has its allowed origins applied at once."""
    source = fmt.source
    authenticate = AUTHENTICATORS[source] if source in cors.QUERY_CREDENTIAL_SOURCES else None

    async def handle(request: web.Request) -> web.Response:
        state = request.app[STATE]
        origin = request.headers.get("Origin")
        tenant = None
        if authenticate is not None and origin is not None:
            tenant = _tenant_or_none(state, request, authenticate)
        reply = cors.preflight(fmt, origin, tenant)
        metrics = state.metrics
        if reply.status >= 400:
            tenant_label = metrics.tenant(tenant.id if tenant else None)
            state.tally.inc(metrics.rejections, (source, cors.ORIGIN_REASON, *tenant_label))
        state.tally.inc(metrics.requests, (source, cors.PREFLIGHT_ROUTE, str(reply.status)))
        return _response(reply, _request_id(request))

    return handle


def _tenant_or_none(state: ReceiverState, request: web.Request, authenticate: Authenticator) -> Tenant | None:
    try:
        return state.tenants.by_id(authenticate(state, request))
    except Rejection:
        return None  # no or bad credentials: the request itself gets the vendor's 401 or 403


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _ready(state: ReceiverState) -> bool:
    """Kafka connected and not draining; also published as eventpipe_ready{component="receiver"}."""
    ready = state.producer.ready and not state.draining
    state.metrics.ready.labels("receiver").set(1 if ready else 0)
    return ready


async def _readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    ready = _ready(state)
    body = {"ready": ready, "kafka": state.producer.ready, "draining": state.draining}
    return web.json_response(body, status=200 if ready else 503)


async def _metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.tally.flush()  # this worker's updates of the tick so far; the others' are written already
    _ready(state)
    return web.Response(body=state.metrics_view.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _openapi(request: web.Request) -> web.Response:
    from producers.receiver.openapi import document

    return web.json_response(document(all_formats()))
