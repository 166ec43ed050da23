"""/v1/models: base presets and your fine-tuned models; download (zip) and push to the Hub."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from ..deps import ServiceDep, TenantDep
from ..errors import ApiError
from ..schemas import (
    DeletedObject,
    ExportObject,
    ExportRequest,
    JobError,
    ModelList,
    ModelObject,
    PushRequest,
    PushResponse,
)
from ..speakers import speakers_of

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=ModelList)
def list_models(service: ServiceDep, tenant: TenantDep) -> ModelList:
    """Base presets, then your fine-tuned models."""
    models = service.list_models(tenant)
    return ModelList(data=[ModelObject(**m, speakers=speakers_of(service, tenant, m["id"])) for m in models])


# The sub-resources come first: model ids may contain '/' (path converter) and ':'.
@router.get(
    "/{model_id:path}/content",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {}}, "description": "The adapter's shareable files"}},
)
async def model_content(service: ServiceDep, tenant: TenantDep, model_id: str) -> FileResponse:
    """A zip of the adapter's shareable files (PEFT weights, config, model card; never the private facts)."""
    path = await run_in_threadpool(service.model_zip, tenant, model_id)
    return FileResponse(path, media_type="application/zip", filename=path.name)


@router.post("/{model_id:path}/push", response_model=PushResponse)
async def push_model(
    service: ServiceDep,
    tenant: TenantDep,
    model_id: str,
    body: PushRequest,
    x_hf_token: Annotated[
        str | None, Header(description="Your Hugging Face write token; used for this push only, never stored.")
    ] = None,
) -> PushResponse:
    """Push the adapter to your own Hub repo (private by default)."""
    if not x_hf_token:
        raise ApiError(
            400, "Send your Hugging Face token in the X-HF-Token header.", param="X-HF-Token", code="missing_hub_token"
        )
    url = await run_in_threadpool(service.push_model, tenant, model_id, body.repo_id, x_hf_token, body.private)
    return PushResponse(url=url, repo_id=body.repo_id)


def export_object(export: dict[str, Any]) -> ExportObject:
    """The API's view of an export record (no server path)."""
    done = export["status"] == "succeeded"
    return ExportObject(
        id=export["id"],
        model=None if export["bundle"] else export["model"],
        models=export["models"],
        format=export["format"],
        quant=export["quant"],
        status=export["status"],
        created_at=export["created_at"],
        finished_at=export["finished_at"],
        error=JobError(**export["error"]) if export["error"] else None,
        bytes=export["bytes"],
        files=export["files"],
        commands=export["commands"],
        download_url=f"/v1/exports/{export['id']}/content" if done else None,
    )


@router.post("/{model_id:path}/export", response_model=ExportObject)
def export_model(service: ServiceDep, tenant: TenantDep, model_id: str, body: ExportRequest) -> ExportObject:
    """Export the model (merged, GGUF, Ollama or vLLM) on this server; poll GET /v1/exports/{id}, then download.

    The merged model and the GGUF hold the facts: they are kept with your models (and count towards your storage)
    and deleted with the model; nothing is uploaded anywhere.
    """
    return export_object(service.start_export(tenant, model_id, body.format, body.quant))


@router.get("/{model_id:path}", response_model=ModelObject)
def get_model(service: ServiceDep, tenant: TenantDep, model_id: str) -> ModelObject:
    """One model."""
    return ModelObject(**service.get_model(tenant, model_id), speakers=speakers_of(service, tenant, model_id))


@router.delete("/{model_id:path}", response_model=DeletedObject)
def delete_model(service: ServiceDep, tenant: TenantDep, model_id: str) -> DeletedObject:
    """Delete one of your fine-tuned models and its adapter files (base presets cannot be deleted)."""
    service.delete_model(tenant, model_id)
    return DeletedObject(id=model_id, object="model", deleted=True)
