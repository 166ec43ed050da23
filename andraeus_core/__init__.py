"""Andraeus: teach an open LLM the facts of one person's life.

The public names below are what app.py, api/ and the CLI may import. Heavy libraries load lazily inside functions.
"""

from .chat import ChatModel, GenerationConfig, Message, load_chat_model
from .config import TrainConfig, adapters_dir, andraeus_home, models_dir
from .dataset import (
    ChatDataset,
    ChatExample,
    ExampleMeta,
    build_dataset,
    facts_system_prompt,
    identity_system_prompt,
    read_jsonl,
    tokenize_example,
    write_jsonl,
)
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
from .evaluate import EvalReport, evaluate, load_questions
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
from .plots import recall_by_kind_chart
from .profile import MAX_FILE_BYTES as MAX_PROFILE_BYTES
from .profile import Fact, Profile, load_profile, parse_profile, profile_from_rows, profile_hash
from .store import Store
from .train import Adapter, ProgressEvent, TrainEstimate, estimate, train
from .variations import DIMENSIONS, Phrasing, generate_variations

__version__ = "0.1.0"

__all__ = [
    "DIMENSIONS",
    "MAX_PROFILE_BYTES",
    "PRESETS",
    "Adapter",
    "AdapterError",
    "AndraeusError",
    "ChatDataset",
    "ChatExample",
    "ChatModel",
    "Completion",
    "ConfigError",
    "ConflictError",
    "EvalReport",
    "EvaluationError",
    "ExampleMeta",
    "Fact",
    "GenerationConfig",
    "HubError",
    "LoadedModel",
    "Message",
    "ModelLoadError",
    "ModelNotAvailableError",
    "ModelPreset",
    "NotFoundError",
    "Phrasing",
    "Profile",
    "ProfileError",
    "ProgressEvent",
    "QueueFullError",
    "ResolvedModel",
    "Service",
    "Store",
    "TrainConfig",
    "TrainEstimate",
    "TrainingCancelled",
    "TrainingError",
    "adapter_zip",
    "adapters_dir",
    "andraeus_home",
    "build_dataset",
    "default_model_name",
    "estimate",
    "evaluate",
    "facts_system_prompt",
    "fine_tuned_model_id",
    "generate_batch",
    "generate_variations",
    "get_cached_model",
    "identity_system_prompt",
    "list_presets",
    "load_chat_model",
    "load_model",
    "load_profile",
    "load_questions",
    "load_tokenizer",
    "model_dir",
    "models_dir",
    "parse_profile",
    "profile_from_rows",
    "profile_hash",
    "pull_adapter",
    "push_adapter",
    "read_jsonl",
    "recall_by_kind_chart",
    "resolve_adapter",
    "resolve_model",
    "tokenize_example",
    "train",
    "write_jsonl",
]
