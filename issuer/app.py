"""create_app(settings) -> Litestar: the only wiring module."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Litestar, Request
from litestar.config.app import AppConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin

from .achievements.routes import AchievementsController
from .db.engine import make_engine, migrate
from .delivery.artifacts import ArtifactsController, certificate_pdf
from .delivery.jobs import Worker
from .delivery.mailer import use_pdf_source
from .delivery.mirrors.routes import MirrorsController
from .delivery.routes import JobsController
from .delivery.templates_routes import CertificateTemplateController
from .issuance.routes import CredentialsController
from .issuance.service import IssuanceService
from .issuers.routes import IssuersController
from .keyring import load_master_key
from .problems import EXCEPTION_HANDLERS
from .public.page import PageController, template_config
from .public.routes import PublicController
from .public.verify_api import VerifyApiController
from .services import Services, ServicesDep
from .settings import Settings
from .webhooks.reviews import ReviewsController
from .webhooks.routes import LmsController, WebhookController


def build_services(
    settings: Settings, *, run_migrations: bool = True, background_checkpoints: bool = False
) -> Services:
    """`background_checkpoints`: for server processes (see db/checkpoints.py)."""
    engine = make_engine(settings.database_url, background_checkpoints=background_checkpoints)
    if run_migrations:
        migrate(engine)
    master_key = load_master_key(settings)
    use_pdf_source(certificate_pdf)  # emails attach the certificate; if rendering fails, they go without it
    return Services(settings, engine, master_key, IssuanceService(engine, settings, master_key))


def create_app(settings: Settings, services: Services | None = None) -> Litestar:
    services = services or build_services(settings)
    worker = Worker(services) if settings.jobs_embedded else None

    def provide_services() -> Services:
        return services

    def provide_actor(request: Request[Any, Any, Any], services: ServicesDep) -> str:
        """Takes `services` only to come after it: Litestar resolves independent dependencies concurrently, in an
        anyio task group per request, which costs more than both of these together."""
        key = request.scope.get("state", {}).get("api_key")
        return f"api-key:{key.id}" if key is not None else "anonymous"

    return Litestar(
        route_handlers=[
            IssuersController,
            AchievementsController,
            CredentialsController,
            PublicController,
            VerifyApiController,
            WebhookController,
            LmsController,
            ReviewsController,
            PageController,
            JobsController,
            MirrorsController,
            ArtifactsController,
            CertificateTemplateController,
        ],
        template_config=template_config(),
        dependencies={
            "services": Provide(provide_services, sync_to_thread=False),
            "actor": Provide(provide_actor, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        state=State({"engine": services.engine, "services": services}),
        openapi_config=OpenAPIConfig(
            title="ob3-issuer",
            version="0.1.0",
            description="Issue and publish Open Badges 3.0 credentials. Errors are RFC 9457 problem+json.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin()],
        ),
        request_max_body_size=settings.max_body_bytes,
        on_app_init=[_quiet_logs],
        on_startup=[worker.start] if worker else [],
        # shutdown hooks run in reverse: the worker stops before the engine is disposed
        on_shutdown=[lambda: services.engine.dispose(), *([worker.stop] if worker else [])],
    )


def _quiet_logs(config: AppConfig) -> AppConfig:
    logging.getLogger("issuer").setLevel(logging.INFO)
    return config
