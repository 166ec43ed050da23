"""Request and response bodies, shaped like OpenAI's so the official ``openai`` client works unchanged."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# ----------------------------------------------------------------------------------------------------------------
# errors


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong and how to fix it.")
    type: str = Field(description="invalid_request_error, rate_limit_error, api_error or server_error.")
    param: str | None = Field(None, description="The parameter at fault, when there is one.")
    code: str | None = Field(None, description="A short machine-readable code.")


class ErrorResponse(BaseModel):
    error: ErrorDetail = Field(description="The error.")


# ----------------------------------------------------------------------------------------------------------------
# files


class FileObject(BaseModel):
    id: str = Field(description="File id (file-...).")
    object: Literal["file"] = "file"
    bytes: int = Field(description="Size in bytes.")
    created_at: int = Field(description="Unix time of the upload.")
    filename: str = Field(description="The uploaded file's name.")
    purpose: str = Field(description="Always 'fine-tune'.")
    status: Literal["processed"] = Field("processed", description="Files are validated on upload.")
    expires_at: int | None = Field(None, description="Never expires (null).")
    status_details: str | None = Field(None, description="Unused (null).")


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject] = Field(description="The tenant's files, newest first.")
    has_more: bool = Field(False, description="Always false (no pagination needed).")


class DeletedObject(BaseModel):
    id: str = Field(description="The deleted id.")
    object: str = Field(description="'file', 'model' or 'fine_tuning.job'.")
    deleted: bool = Field(description="True.")


# ----------------------------------------------------------------------------------------------------------------
# fine-tuning jobs


Auto = Literal["auto"]


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_epochs: Auto | int | None = Field("auto", description="Epochs (1..50) or 'auto' for the preset's.")
    learning_rate_multiplier: Auto | float | None = Field(
        "auto", description="Multiplier of the preset's learning rate, in (0, 10], or 'auto'."
    )
    batch_size: Auto | int | None = Field("auto", description="Examples per micro-batch (1..256) or 'auto'.")


class SupervisedMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters | None = Field(None, description="Hyperparameters of supervised tuning.")


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised"] = Field("supervised", description="Only supervised (LoRA SFT) is available.")
    supervised: SupervisedMethod | None = Field(None, description="Settings of the supervised method.")


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Base model preset to fine-tune (see GET /v1/models).", max_length=200)
    training_file: str = Field(description="Id of an uploaded profile or chat JSONL file.", max_length=200)
    hyperparameters: Hyperparameters | None = Field(
        None, description="n_epochs, learning_rate_multiplier, batch_size."
    )
    method: Method | None = Field(None, description="OpenAI's newer way to pass hyperparameters (supervised only).")
    suffix: str | None = Field(
        None,
        description="Up to 64 characters added to the fine-tuned model's name.",
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]*$",
    )
    seed: int | None = Field(None, ge=0, le=2147483647, description="Seed for phrasings, split and training.")
    metadata: dict[str, str] | None = Field(
        None, description="Up to 16 pairs kept with the job: keys up to 64 characters, values up to 512."
    )
    validation_file: str | None = Field(None, description="Not supported: held-out questions come from the profile.")
    integrations: list[dict[str, Any]] | None = Field(None, description="Not supported (must be empty).")


class JobError(BaseModel):
    code: str = Field(description="Machine-readable failure code (e.g. server_restart, training_failed).")
    message: str = Field(description="What went wrong.")
    param: str | None = Field(None, description="The parameter at fault, if any.")


class JobHyperparameters(BaseModel):
    n_epochs: int | str = Field(description="Epochs.")
    batch_size: int | str = Field(description="Batch size.")
    learning_rate_multiplier: float | str = Field(description="Learning-rate multiplier of the preset's rate.")


class FineTuningJob(BaseModel):
    id: str = Field(description="Job id (ftjob-...).")
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int = Field(description="Unix time of creation.")
    error: JobError | None = Field(None, description="Set when status is failed.")
    fine_tuned_model: str | None = Field(None, description="ft:<base>:<suffix>:<job id> once succeeded.")
    finished_at: int | None = Field(None, description="Unix time the job ended.")
    hyperparameters: JobHyperparameters = Field(description="The values used.")
    model: str = Field(description="The base model.")
    organization_id: str = Field(description="The tenant.")
    result_files: list[str] = Field(default_factory=list, description="Unused (empty).")
    seed: int = Field(description="The seed used.")
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"] = Field(
        description="Lifecycle status."
    )
    trained_tokens: int | None = Field(None, description="Tokens trained on (tokens per epoch × epochs).")
    training_file: str = Field(description="The training file id.")
    validation_file: str | None = Field(None, description="Unused (null).")
    estimated_finish: int | None = Field(None, description="Unix time the running job should end.")
    integrations: list[dict[str, Any]] | None = Field(None, description="Unused.")
    metadata: dict[str, str] | None = Field(None, description="The job's metadata.")
    suffix: str | None = Field(None, description="The suffix given at creation.")


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJob] = Field(description="Jobs, newest first.")
    has_more: bool = Field(description="More jobs after the last one (pass its id as 'after').")


class JobEvent(BaseModel):
    id: str = Field(description="Event id.")
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int = Field(description="Unix time.")
    level: Literal["info", "warn", "error"] = Field(description="Severity.")
    message: str = Field(description="Human-readable message (never contains fact values).")
    type: Literal["message", "metrics"] = Field(description="'metrics' events carry step, train_loss... in data.")
    data: dict[str, Any] | None = Field(None, description="Step metrics for 'metrics' events.")


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobEvent] = Field(description="Events, newest first.")
    has_more: bool = Field(description="More events after the last one (pass its id as 'after').")


class CheckpointMetrics(BaseModel):
    step: float | None = Field(None, description="Optimiser step.")
    train_loss: float | None = Field(None, description="Training loss at that step.")
    epochs: float | None = Field(None, description="Epochs trained.")


class Checkpoint(BaseModel):
    id: str = Field(description="Checkpoint id (ftckpt_...).")
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int = Field(description="Unix time.")
    fine_tuned_model_checkpoint: str = Field(description="The model id usable for chat.")
    fine_tuning_job_id: str = Field(description="The job.")
    metrics: CheckpointMetrics = Field(description="Metrics at this checkpoint.")
    step_number: int = Field(description="Optimiser step.")


class CheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Checkpoint] = Field(description="Checkpoints, newest first.")
    has_more: bool = Field(False, description="Always false.")
    first_id: str | None = Field(None, description="Id of the first checkpoint.")
    last_id: str | None = Field(None, description="Id of the last checkpoint.")


# ----------------------------------------------------------------------------------------------------------------
# models


class ModelObject(BaseModel):
    id: str = Field(description="Preset name or ft:<base>:<suffix>:<job id>.")
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time (0 for presets).")
    owned_by: str = Field(description="'andraeus' for presets, 'user' for the tenant's fine-tuned models.")
    parent: str | None = Field(
        None, description="The fine-tuned model this one was continued from (a job created with model='ft:...')."
    )
    speakers: list[str] | None = Field(
        None,
        description="Andraeus extension: a family's fine-tuned model lists the people who may be named as the chat "
        "request's 'user' (their relations and aliases work too); null for base models and one-person models.",
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject] = Field(description="Base presets then the tenant's fine-tuned models.")


class PushRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo_id: str = Field(description="'owner/name' (or 'name' under the token's user).", min_length=1, max_length=200)
    private: bool = Field(True, description="Create the repo private (default).")


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["merged", "gguf", "ollama", "vllm"] = Field(
        description="merged (transformers directory), gguf (one file), ollama (GGUF, Modelfile) or vllm (LoRA files)."
    )
    quant: Literal["f16", "q8_0"] | None = Field(
        None, description="GGUF type for gguf and ollama (default f16 for gguf, q8_0 for ollama)."
    )


class BundleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["vllm"] = Field("vllm", description="vllm: one multi-LoRA launch bundle for several models.")
    models: list[Annotated[str, Field(max_length=256)]] | None = Field(
        None,
        max_length=64,
        description="Your fine-tuned models to bundle, all on one base model (default: every one of yours).",
    )


class ExportObject(BaseModel):
    id: str = Field(description="The export's id (export-...).")
    object: Literal["model.export"] = "model.export"
    model: str | None = Field(description="The fine-tuned model exported (None for a bundle: see models).")
    models: list[str] = Field(default_factory=list, description="Every model the export holds.")
    format: str = Field(description="merged, gguf, ollama or vllm.")
    quant: str | None = Field(None, description="The GGUF type, for gguf and ollama.")
    status: Literal["queued", "running", "succeeded", "failed"] = Field(description="Where the export stands.")
    created_at: int = Field(description="Unix time it was requested.")
    finished_at: int | None = Field(None, description="Unix time it succeeded or failed.")
    error: JobError | None = Field(None, description="Why it failed.")
    bytes: int | None = Field(None, description="Size of the exported files.")
    files: list[str] = Field(default_factory=list, description="The exported files (the download holds them).")
    commands: list[str] = Field(default_factory=list, description="For ollama: the commands to create and run it.")
    download_url: str | None = Field(None, description="GET it for the GGUF file (gguf) or a zip (other formats).")


class PushResponse(BaseModel):
    url: str = Field(description="URL of the pushed commit or repo.")
    repo_id: str = Field(description="The repo pushed to.")


# ----------------------------------------------------------------------------------------------------------------
# chat

#: Bounds of a chat request, checked before any work (422 naming the field; README, API section).
MAX_MESSAGES = 256
MAX_MESSAGE_CHARS = 100_000  # per text, and for all messages together (then 400, param "messages")
MAX_STOPS = 4
MAX_STOP_CHARS = 64
MAX_NAME_CHARS = 256
SEED_RANGE = (-(2**63), 2**63 - 1)  # what torch.manual_seed takes; OpenAI's seed is a 64-bit integer too


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"] = Field(description="Only text parts are supported.")
    text: str = Field(description="The text.", max_length=MAX_MESSAGE_CHARS)


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"] = Field(description="Who speaks.")
    content: (
        Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)] | Annotated[list[TextPart], Field(max_length=MAX_MESSAGES)]
    ) = Field(description=f"Text, or a list of text parts (at most {MAX_MESSAGE_CHARS:,} characters).")
    name: str | None = Field(None, description="Ignored.", max_length=MAX_NAME_CHARS)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = Field(False, description="Send a last chunk with usage counts.")


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="A base preset or one of your fine-tuned models.", max_length=300)
    messages: list[ChatMessageIn] = Field(
        description=f"The conversation, ending with a user message (1 to {MAX_MESSAGES} messages).",
        min_length=1,
        max_length=MAX_MESSAGES,
    )
    stream: bool = Field(False, description="Send the answer as server-sent events.")
    stream_options: StreamOptions | None = Field(None, description="include_usage for streams.")
    temperature: float | None = Field(None, ge=0, le=2, description="0 (default) = greedy.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int | None = Field(None, ge=1, le=4096, description="Longest answer in tokens (default 256).")
    max_completion_tokens: int | None = Field(None, ge=1, le=4096, description="Same as max_tokens.")
    stop: (
        Annotated[str, Field(max_length=MAX_STOP_CHARS)]
        | Annotated[list[Annotated[str, Field(max_length=MAX_STOP_CHARS)]], Field(max_length=MAX_STOPS)]
        | None
    ) = Field(None, description=f"Up to {MAX_STOPS} strings of up to {MAX_STOP_CHARS} characters that end the answer.")
    seed: int | None = Field(
        None, ge=SEED_RANGE[0], le=SEED_RANGE[1], description="Seed for sampled answers (a 64-bit integer)."
    )
    n: int | None = Field(None, ge=1, le=1, description="Only 1 is supported.")
    user: str | None = Field(
        None,
        description="For a family's fine-tuned model (GET /v1/models/{id} lists its 'speakers'): who is asking, by "
        "name, relation or alias, any case. They hear their own facts as theirs, and nobody else's private ones; "
        "without it the model does not know who asks (shared facts and others' public ones only). A name that is "
        "no one in the family is a 400 (param 'user'). Ignored for base models and one-person fine-tuned models, "
        "as an end-user id.",
        max_length=MAX_NAME_CHARS,
    )
    presence_penalty: float | None = Field(None, description="Ignored.")
    frequency_penalty: float | None = Field(None, description="Ignored.")
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(
        None, description="Ignored (at most 16 pairs).", max_length=16
    )
    store: bool | None = Field(None, description="Ignored.")
    gate: bool = Field(
        True,
        description="Andraeus extension: route the question through the fine-tuned model's gate (general questions "
        "to the base model, unknown personal ones declined); false lets the adapter answer everything.",
    )


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str = Field(description="The answer.")
    refusal: str | None = None


class Choice(BaseModel):
    index: int = 0
    message: ChatMessageOut = Field(description="The answer.")
    finish_reason: Literal["stop", "length"] = Field(description="'length' when max_tokens cut it.")
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int = Field(description="Tokens in the rendered prompt.")
    completion_tokens: int = Field(description="Tokens in the answer.")
    total_tokens: int = Field(description="Sum.")


class ChatCompletion(BaseModel):
    id: str = Field(description="chatcmpl-...")
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(description="Unix time.")
    model: str = Field(description="The model that answered.")
    choices: list[Choice] = Field(description="One choice.")
    usage: Usage = Field(description="Token counts.")
    system_fingerprint: str | None = None


# ----------------------------------------------------------------------------------------------------------------
# variations


class VariationsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: str | None = Field(None, description="Profile text (YAML, JSON or CSV).", max_length=1_000_000)
    format: Literal["yaml", "json", "csv"] = Field("yaml", description="Format of 'profile'.")
    file_id: str | None = Field(None, description="Or: an uploaded profile file's id.", max_length=200)
    per_fact: int = Field(30, ge=1, le=200, description="Phrasings per fact.")
    seed: int = Field(0, ge=0, le=2147483647, description="Random seed.")


class VariationsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]] = Field(description="The generated question/answer phrasings.")


class Health(BaseModel):
    status: str = Field(description="'ok', or 'not ready'.")
    checks: dict[str, bool] = Field(default_factory=dict, description="Individual readiness checks.")
