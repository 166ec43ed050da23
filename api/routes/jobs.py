"""/v1/fine_tuning/jobs: create, list, get, cancel, events, checkpoints, evaluation."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from starlette.concurrency import run_in_threadpool

from ..deps import ServiceDep, TenantDep
from ..errors import ApiError
from ..schemas import (
    Checkpoint,
    CheckpointList,
    DeletedObject,
    EventList,
    FineTuningJob,
    JobCreate,
    JobEvent,
    JobList,
)

router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning"])


def job_object(job: dict[str, Any]) -> FineTuningJob:
    return FineTuningJob(
        id=job["id"],
        created_at=job["created_at"],
        error=job["error"],
        fine_tuned_model=job["fine_tuned_model"],
        finished_at=job["finished_at"],
        hyperparameters=job["hyperparameters"],
        model=job["model"],
        organization_id=job["tenant"],
        seed=job["seed"],
        status=job["status"],
        trained_tokens=job["trained_tokens"],
        training_file=job["training_file"],
        estimated_finish=job["estimated_finish"] if job["status"] == "running" else None,
        metadata=job["metadata"],
        suffix=job["suffix"],
    )


@router.post("", response_model=FineTuningJob)
def create_job(
    body: JobCreate,
    service: ServiceDep,
    tenant: TenantDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200, description="Same key → same job.")] = None,
) -> FineTuningJob:
    """Queue a fine-tuning job (429 with Retry-After when the queue is full)."""
    if body.validation_file:
        raise ApiError(
            400,
            "validation_file is not supported: held-out questions come from the profile.",
            param="validation_file",
            code="unsupported_parameter",
        )
    if body.integrations:
        raise ApiError(400, "integrations are not supported.", param="integrations", code="unsupported_parameter")
    hyper = body.hyperparameters
    if body.method is not None and body.method.supervised is not None and body.method.supervised.hyperparameters:
        hyper = body.method.supervised.hyperparameters
    hyperparameters = {k: v for k, v in (hyper.model_dump() if hyper else {}).items() if v is not None}
    job, created = service.create_job(
        tenant,
        model=body.model,
        training_file=body.training_file,
        hyperparameters=hyperparameters,
        suffix=body.suffix or None,
        seed=body.seed,
        metadata=body.metadata,
        idempotency_key=idempotency_key,
    )
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return job_object(job)


@router.get("", response_model=JobList)
def list_jobs(
    service: ServiceDep,
    tenant: TenantDep,
    after: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JobList:
    """Your jobs, newest first (cursor pagination)."""
    rows, more = service.store.list_jobs(tenant, after, limit)
    return JobList(data=[job_object(r) for r in rows], has_more=more)


@router.get("/{job_id}", response_model=FineTuningJob)
def get_job(service: ServiceDep, tenant: TenantDep, job_id: str) -> FineTuningJob:
    """One of your jobs."""
    return job_object(service.get_job(tenant, job_id))


@router.delete("/{job_id}", response_model=DeletedObject)
def delete_job(service: ServiceDep, tenant: TenantDep, job_id: str) -> DeletedObject:
    """Delete a finished job and everything it made: model, adapter, evaluations, checkpoints, events (409 while it
    is queued or running: cancel it first)."""
    service.delete_job(tenant, job_id)
    return DeletedObject(id=job_id, object="fine_tuning.job", deleted=True)


@router.post("/{job_id}/cancel", response_model=FineTuningJob)
def cancel_job(service: ServiceDep, tenant: TenantDep, job_id: str) -> FineTuningJob:
    """Cancel a queued or running job (409 if it already finished)."""
    return job_object(service.cancel_job(tenant, job_id))


@router.get("/{job_id}/events", response_model=EventList)
def list_events(
    service: ServiceDep,
    tenant: TenantDep,
    job_id: str,
    after: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> EventList:
    """Progress and loss as fine_tuning.job.event objects, newest first."""
    service.get_job(tenant, job_id)
    rows, more = service.store.list_events(tenant, job_id, after, limit)
    events = [
        JobEvent(
            id=r["id"],
            created_at=r["created_at"],
            level=r["level"],
            message=r["message"],
            type=r["type"],
            data=r["data"],
        )
        for r in rows
    ]
    return EventList(data=events, has_more=more)


@router.get("/{job_id}/checkpoints", response_model=CheckpointList)
def list_checkpoints(service: ServiceDep, tenant: TenantDep, job_id: str) -> CheckpointList:
    """The job's checkpoints (the final adapter once it succeeded)."""
    service.get_job(tenant, job_id)
    rows = service.store.list_checkpoints(tenant, job_id)
    data = [
        Checkpoint(
            id=r["id"],
            created_at=r["created_at"],
            fine_tuned_model_checkpoint=r["model"],
            fine_tuning_job_id=job_id,
            metrics=r["metrics"],
            step_number=r["step"],
        )
        for r in rows
    ]
    return CheckpointList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None)


@router.get("/{job_id}/evaluation")
async def evaluation(
    service: ServiceDep,
    tenant: TenantDep,
    job_id: str,
    baselines: Annotated[
        str, Query(max_length=100, description="Comma-separated: base, in_context; 'none' = adapter only.")
    ] = "base,in_context",
    refresh: bool = False,
) -> dict[str, Any]:
    """Held-out recall of the job's adapter (computed on first request, then kept). 409 unless succeeded."""
    chosen = tuple(dict.fromkeys(b.strip() for b in baselines.split(",") if b.strip() and b.strip() != "none"))
    return await run_in_threadpool(service.evaluation, tenant, job_id, chosen, refresh)
