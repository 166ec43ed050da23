"""Andraeus: teach an open LLM the facts of one person's life.

The public names below are what app.py, api/ and the CLI may import. Heavy libraries load lazily inside functions.
"""

from .chat import ChatModel, GenerationConfig, Message, load_chat_model
from .config import adapters_dir, andraeus_home, models_dir
from .errors import (
    AdapterError,
    AndraeusError,
    ConfigError,
    EvaluationError,
    HubError,
    ModelLoadError,
    ModelNotAvailableError,
    ProfileError,
    TrainingCancelled,
    TrainingError,
)
from .hub import adapter_zip, pull_adapter, push_adapter, resolve_adapter
from .jobs import Completion, ConflictError, NotFoundError, QueueFullError, Service, fine_tuned_model_id
from .models import (
    PRESETS,
    LoadedModel,
    ModelPreset,
    ResolvedModel,
    default_model_name,
    generate_batch,
    get_cached_model,
    list_presets,
    load_model,
    load_tokenizer,
    model_dir,
    resolve_model,
)
from .store import Store

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "AdapterError",
    "AndraeusError",
    "ChatModel",
    "Completion",
    "ConfigError",
    "ConflictError",
    "EvaluationError",
    "GenerationConfig",
    "HubError",
    "LoadedModel",
    "Message",
    "ModelLoadError",
    "ModelNotAvailableError",
    "ModelPreset",
    "NotFoundError",
    "ProfileError",
    "QueueFullError",
    "ResolvedModel",
    "Service",
    "Store",
    "TrainingCancelled",
    "TrainingError",
    "adapter_zip",
    "adapters_dir",
    "andraeus_home",
    "default_model_name",
    "fine_tuned_model_id",
    "generate_batch",
    "get_cached_model",
    "list_presets",
    "load_chat_model",
    "load_model",
    "load_tokenizer",
    "model_dir",
    "models_dir",
    "pull_adapter",
    "push_adapter",
    "resolve_adapter",
    "resolve_model",
]
