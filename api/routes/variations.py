"""POST /v1/variations: preview the question phrasings a profile turns into (nothing is stored)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from ..deps import ServiceDep, TenantDep
from ..errors import ApiError
from ..schemas import VariationsRequest, VariationsResponse

router = APIRouter(prefix="/variations", tags=["variations"])


@router.post("", response_model=VariationsResponse)
async def preview(body: VariationsRequest, service: ServiceDep, tenant: TenantDep) -> VariationsResponse:
    """Phrasings for a profile given inline (``profile`` + ``format``) or as an uploaded ``file_id``."""
    from pathlib import Path

    if (body.profile is None) == (body.file_id is None):
        raise ApiError(400, "Give exactly one of 'profile' (text) or 'file_id'.", param="profile")
    if body.file_id is not None:
        record = service.get_file(tenant, body.file_id)
        data, name = Path(record["path"]).read_bytes(), record["filename"]
    else:
        # The service reads the format from the name's suffix; each format's name is one of its suffixes.
        data, name = (body.profile or "").encode(), f"profile.{body.format}"
    items = await run_in_threadpool(service.variations, data, name, body.per_fact, body.seed)
    return VariationsResponse(data=items)
