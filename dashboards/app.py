"""Build the dashboard app: `create_app(settings)` wires services, routers, pages and static assets.

Run it with `fleet dashboard` (uvicorn); tests call `create_app(settings, transport=fake,
registry=fake, connect=False)`. The API lives under `/api/v1` (OpenAPI at `/api/v1/openapi.json`,
docs at `/api/docs`); `/healthz` answers without auth, `/metrics` (Prometheus) without a session: open,
or with `Authorization: Bearer $FLEET_METRICS_TOKEN` when that is set (see fleet.observability).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles

from dashboards.api_models import error_responses
from dashboards.auth import SessionCodec, resolve_secret_key
from dashboards.config import DashboardConfig
from dashboards.errors import install_handlers
from dashboards.fleet_state import CommandTracker, FleetState
from dashboards.review import EpisodeCache
from dashboards.routes import API_ROUTERS, pages
from dashboards.services import Services
from dashboards.training_metrics import LearnerMetrics
from dashboards.versions import load_registry
from fleet import observability
from fleet.db import make_engine, session_factory
from fleet.episodes import EpisodeStore
from fleet.registry_views import OperatorRegistry
from fleet.settings import Settings, get_settings
from fleet.transport import KafkaTransport, Transport, TransportConfig

STATIC_DIR = Path(__file__).parent / "static"
API_PREFIX = "/api/v1"
COMMON_ERRORS = (400, 401, 403, 404, 409, 503)  # documented on every API operation (all `{"detail": ...}`)


def build_services(
    settings: Settings,
    *,
    config: DashboardConfig,
    transport: Transport | None,
    registry: OperatorRegistry | None,
    connect: bool,
) -> Services:
    engine = make_engine(settings.db_url)
    transport_config = TransportConfig.from_settings(settings, client_id="dashboard") if connect else None
    if transport is None and transport_config is not None:
        transport = KafkaTransport(transport_config)
    if registry is None and connect:
        registry = load_registry(settings)
    return Services(
        settings=settings,
        config=config,
        engine=engine,
        sessions=session_factory(engine),
        codec=SessionCodec(resolve_secret_key(settings), max_age_s=config.session_max_age_s),
        fleet=FleetState(offline_after_s=config.offline_after_s),
        commands=CommandTracker(keep=config.commands_kept),
        transport=transport,
        registry=registry,
        episodes=EpisodeStore(settings.episode_store),
        transport_config=transport_config,
        learner_metrics=LearnerMetrics(settings.tracking_uri) if connect else None,
    )


# No inline script anywhere (the pages load /static/app.js; the fleet's initial state is a JSON data element), so
# a string that slips past escaping still cannot run. Swagger UI (/api/docs) is an inline-script page of FastAPI's
# and gets no policy; it shows the API's schema, no fleet data.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """ASGI middleware: the security headers on every HTTP response (streams included, unbuffered)."""

    def __init__(self, app: Any, *, exempt: tuple[str, ...] = ("/api/docs",)) -> None:
        self.app, self.exempt = app, exempt

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in SECURITY_HEADERS if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(
    settings: Settings | None = None,
    *,
    config: DashboardConfig | None = None,
    transport: Transport | None = None,
    registry: OperatorRegistry | None = None,
    connect: bool = True,
) -> FastAPI:
    """The dashboard app. `connect=False` starts no Kafka consumer and builds no real clients (tests)."""
    settings = settings or get_settings()
    services = build_services(
        settings, config=config or DashboardConfig(), transport=transport, registry=registry, connect=connect
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        services.start(consume=connect)
        try:
            yield
        finally:
            services.stop()

    app = FastAPI(
        title="fleet dashboard",
        version="1",
        description="Operate the robot fleet, review corrections, manage model versions. "
        "Authenticate with the session cookie (+ X-CSRF-Token on mutations) or `Authorization: Bearer <token>`.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.add_middleware(SecurityHeaders)
    app.state.services = services
    app.state.episode_cache = EpisodeCache(services.episodes)
    install_handlers(app)

    api = APIRouter(prefix=API_PREFIX, responses=error_responses(*COMMON_ERRORS))
    for router in API_ROUTERS:
        api.include_router(router)
    app.include_router(api)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, Any]:
        monitor, corrections = services.monitor, services.corrections_monitor
        return {
            "status": "ok",
            "heartbeat_consumer": None if monitor is None else monitor.connected.is_set(),
            "corrections_consumer": None if corrections is None else corrections.connected.is_set(),
            "robots": len(services.fleet.robot_ids()),
        }

    fleet_view = observability.FleetViewCollector(services.fleet.snapshot, lambda: services.fleet.heartbeats)
    metrics_token = settings.metrics_token.get_secret_value() if settings.metrics_token else None

    @app.get(
        "/metrics", tags=["health"], response_class=Response,
        responses={200: {"content": {"text/plain": {}}}, 401: {"description": "FLEET_METRICS_TOKEN set; bad token"}},
    )  # fmt: skip
    def metrics(request: Request) -> Response:
        """Prometheus metrics of this dashboard process and its view of the fleet."""
        if metrics_token is not None and not observability.token_matches(
            request.headers.get("authorization"), metrics_token
        ):
            return Response("metrics need the scrape token\n", 401, headers={"WWW-Authenticate": "Bearer"})
        return Response(observability.render_metrics(fleet_view), media_type=observability.CONTENT_TYPE)

    return app
