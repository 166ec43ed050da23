"""One error hierarchy for the whole pipeline.

Every error a user can cause or act on is an :class:`AndraeusError`. The CLI prints its message, the web app turns
it into ``gr.Error`` and the REST API into an OpenAI-shaped error body, so messages must say what was wrong (file,
line, field, value) and how to fix it, and must never contain a fact's value from someone else's data or a token.
"""

from __future__ import annotations


class AndraeusError(Exception):
    """Base class of every error Andraeus raises on purpose.

    Attributes:
        code: a short machine-readable code (used by the REST API's ``error.code``).
        param: the field or parameter at fault, when there is one.
    """

    code = "andraeus_error"

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param

    def __str__(self) -> str:
        return self.message


class ConfigError(AndraeusError):
    """A setting or configuration value is invalid."""

    code = "invalid_config"


class ModelNotAvailableError(AndraeusError):
    """A base model is neither cached, embedded nor reachable."""

    code = "model_not_available"


class ModelLoadError(AndraeusError):
    """A model was found but could not be loaded (corrupt files, wrong format...)."""

    code = "model_load_failed"


class ProfileError(AndraeusError):
    """A profile (the user's facts) is malformed; the message names file, line/row, field and value."""

    code = "invalid_profile"

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
        param: str | None = None,
    ):
        super().__init__(message, param=param or field)
        self.source = source
        self.line = line
        self.field = field


class AdapterError(AndraeusError):
    """An adapter directory is missing, incomplete or does not match its base model."""

    code = "invalid_adapter"


class TrainingError(AndraeusError):
    """Training failed (non-finite loss, out of memory, ...). Nothing half-written is left behind."""

    code = "training_failed"


class TrainingCancelled(AndraeusError):
    """Training was cancelled by the caller; the partial run is not an adapter."""

    code = "cancelled"


class TrainingPaused(AndraeusError):
    """Training stopped at a checkpoint because its time budget ran out; resuming continues it (see ``slices``).

    Attributes:
        step: optimiser steps done (the checkpoint's step).
        total_steps: optimiser steps planned.
    """

    code = "paused"

    def __init__(self, message: str, *, step: int, total_steps: int):
        super().__init__(message)
        self.step = step
        self.total_steps = total_steps


class EvaluationError(AndraeusError):
    """Evaluation questions or settings are invalid."""

    code = "invalid_evaluation"


class ExportError(AndraeusError):
    """Exporting an adapter (merged model, GGUF, Ollama, vLLM bundle) failed; nothing half-written is left behind."""

    code = "export_failed"


class HubError(AndraeusError):
    """Talking to the Hugging Face Hub failed; the local adapter is untouched."""

    code = "hub_error"


class NotFoundError(AndraeusError):
    """The id does not exist for this tenant (another tenant's ids are reported the same way)."""

    code = "not_found"


class ConflictError(AndraeusError):
    """The request conflicts with the resource's state (e.g. cancelling a finished job)."""

    code = "conflict"


class QueueFullError(AndraeusError):
    """Too many jobs are waiting; retry after ``retry_after`` seconds."""

    code = "queue_full"

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class QuotaError(AndraeusError):
    """A tenant's storage or file quota is used up; delete files or models to make room."""

    code = "quota_exceeded"


class EngineUnavailableError(AndraeusError):
    """The external inference engine (``ANDRAEUS_INFERENCE_URL``) cannot be reached, timed out or broke off an answer;
    retry after ``retry_after`` seconds. The message never names the engine's address."""

    code = "engine_unavailable"

    def __init__(self, message: str, *, retry_after: int = 5):
        super().__init__(message)
        self.retry_after = retry_after


class EngineResponseError(AndraeusError):
    """The external inference engine answered, but with a server error, a refusal of this server's credentials or
    data that is not an OpenAI chat completion (a bad gateway). The message never names the engine's address."""

    code = "bad_gateway"


class ContextLengthError(ConfigError):
    """A conversation plus the requested answer does not fit in the model's context window."""

    code = "context_length_exceeded"


class PrivateDataError(HubError):
    """A file about to leave the machine (push, download zip) would carry a fact value or the user's name."""

    code = "private_data"
