"""The ASGI entry point for server processes: `issuer.asgi:app_factory` (settings from the environment)."""

from __future__ import annotations

import gc

from litestar import Litestar

from .app import build_services, create_app
from .settings import Settings


def app_factory() -> Litestar:
    settings = Settings()
    app = create_app(settings, build_services(settings, background_checkpoints=True))
    freeze_startup_heap()
    return app


def freeze_startup_heap() -> None:
    """Exempt everything built at start-up (modules, contexts, schemas: ~150,000 objects) from garbage collection.

    Without this every full collection walks them all: ~100 ms with the process stopped, every few seconds under
    load, which was the whole tail of the issuing latency. Frozen objects live as long as the process does, which
    they would anyway."""
    gc.collect()
    gc.freeze()
