"""POST/GET/DELETE /v1/files: training files (profiles or chat JSONL), validated on upload."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..deps import ServiceDep, TenantDep
from ..schemas import DeletedObject, FileList, FileObject

router = APIRouter(prefix="/files", tags=["files"])


def file_object(record: dict[str, Any]) -> FileObject:
    return FileObject(
        id=record["id"],
        bytes=record["bytes"],
        created_at=record["created_at"],
        filename=record["filename"],
        purpose=record["purpose"],
    )


@router.post("", response_model=FileObject)
async def upload_file(
    service: ServiceDep,
    tenant: TenantDep,
    file: Annotated[UploadFile, File(description="A profile (.yaml/.json/.csv) or OpenAI chat JSONL (.jsonl).")],
    purpose: Annotated[str, Form(description="Must be 'fine-tune'.")] = "fine-tune",
) -> FileObject:
    """Upload and validate a training file; errors name the line and field."""
    data = await file.read()
    record = await run_in_threadpool(service.upload_file, tenant, file.filename or "upload", purpose, data)
    return file_object(record)


@router.get("", response_model=FileList)
def list_files(service: ServiceDep, tenant: TenantDep, purpose: str | None = None) -> FileList:
    """Your files, newest first."""
    return FileList(data=[file_object(r) for r in service.store.list_files(tenant, purpose)])


@router.get("/{file_id}", response_model=FileObject)
def get_file(service: ServiceDep, tenant: TenantDep, file_id: str) -> FileObject:
    """One of your files."""
    return file_object(service.get_file(tenant, file_id))


@router.get("/{file_id}/content", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def file_content(service: ServiceDep, tenant: TenantDep, file_id: str) -> Response:
    """The file's bytes as uploaded."""
    from pathlib import Path

    record = service.get_file(tenant, file_id)
    return Response(Path(record["path"]).read_bytes(), media_type="application/octet-stream")


@router.delete("/{file_id}", response_model=DeletedObject)
def delete_file(service: ServiceDep, tenant: TenantDep, file_id: str) -> DeletedObject:
    """Delete one of your files (jobs already trained keep their adapters)."""
    service.delete_file(tenant, file_id)
    return DeletedObject(id=file_id, object="file", deleted=True)
