"""The ASGI entry point for server processes: `issuer.asgi:app_factory` (settings from the environment)."""

from __future__ import annotations

from litestar import Litestar

from .app import create_app
from .settings import Settings


def app_factory() -> Litestar:
    return create_app(Settings())
