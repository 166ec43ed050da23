"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..deps import ServiceDep
from ..schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up (answered on the event loop: never behind requests waiting for a worker thread)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health, "description": "Not ready"}})
def readyz(service: ServiceDep) -> JSONResponse:
    """The database answers and the training workers are alive."""
    checks = {"database": service.store.ping(), "workers": service.ready()}
    ok = all(checks.values())
    return JSONResponse(Health(status="ok" if ok else "not ready", checks=checks).model_dump(), 200 if ok else 503)
