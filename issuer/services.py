"""The long-lived objects a request handler, a CLI command or a job needs, built once per process."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.di import NamedDependency
from sqlalchemy import Engine

from .issuance.service import IssuanceService
from .settings import Settings


@dataclass(frozen=True)
class Services:
    settings: Settings
    engine: Engine
    master_key: bytes
    issuance: IssuanceService


# How handlers ask for them (Litestar resolves these by parameter name: `services`, `actor`).
ServicesDep = NamedDependency[Services]
ActorDep = NamedDependency[str]
