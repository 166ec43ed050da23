"""/v1/exports: the status and the download of a model export (started with POST /v1/models/{id}/export, or here
for a vLLM bundle of several models)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from ..deps import ServiceDep, TenantDep
from ..schemas import BundleRequest, ExportObject
from .models import export_object

router = APIRouter(prefix="/exports", tags=["models"])


@router.post("", response_model=ExportObject)
def create_bundle(service: ServiceDep, tenant: TenantDep, body: BundleRequest) -> ExportObject:
    """A vLLM multi-LoRA bundle of your models (``models``, default all, on one base model): the LoRA files, a
    launch script (``serve.sh``) and a request per model, each served under its model id made URL-safe. Poll
    GET /v1/exports/{id}, then download the zip. Deleting any of its models deletes the bundle.
    """
    return export_object(service.start_vllm_bundle(tenant, body.models))


@router.get("/{export_id}", response_model=ExportObject)
def get_export(service: ServiceDep, tenant: TenantDep, export_id: str) -> ExportObject:
    """One of your exports: queued, running, succeeded (with its files) or failed (with the error)."""
    return export_object(service.get_export(tenant, export_id))


@router.get(
    "/{export_id}/content",
    response_class=FileResponse,
    responses={
        200: {
            "content": {"application/octet-stream": {}, "application/zip": {}},
            "description": "The GGUF file (gguf), else a zip of the export",
        }
    },
)
async def export_content(service: ServiceDep, tenant: TenantDep, export_id: str) -> FileResponse:
    """Download a succeeded export (409 while it runs)."""
    path = await run_in_threadpool(service.export_file, tenant, export_id)
    media = "application/zip" if path.suffix == ".zip" else "application/octet-stream"
    return FileResponse(path, media_type=media, filename=path.name)
