"""Andraeus: teach an open LLM the facts of one person's life.

The public names below are what the web app, api/ and the CLI may import. Heavy libraries load lazily inside
functions. The stage functions are exported as ``train_adapter``, ``estimate_training`` and ``evaluate_adapter`` so
that the submodules keep their names: ``andraeus_core.train.train(...)``, ``andraeus_core.estimate.estimate(...)``
and ``andraeus_core.evaluate.evaluate(...)`` work as documented.
"""

from .adapter import Adapter, AdapterMeta, AdapterPrivate
from .chat import ChatModel, GenerationConfig, Message, load_chat_model
from .config import TrainConfig, adapters_dir, andraeus_home, models_dir
from .dataset import (
    ChatDataset,
    ChatExample,
    ExampleMeta,
    build_dataset,
    facts_system_prompt,
    generated_per_fact,
    identity_system_prompt,
    read_jsonl,
    tokenize_example,
    write_jsonl,
)
from .errors import (
    AdapterError,
    AndraeusError,
    ConfigError,
    ConflictError,
    ContextLengthError,
    EvaluationError,
    HubError,
    ModelLoadError,
    ModelNotAvailableError,
    NotFoundError,
    PrivateDataError,
    ProfileError,
    QueueFullError,
    QuotaError,
    TrainingCancelled,
    TrainingError,
    TrainingPaused,
)
from .estimate import (
    SPACE_GPU,
    ZEROGPU_DAILY_QUOTA_S,
    ZEROGPU_MAX_CALL_S,
    GpuBudget,
    TrainEstimate,
    ZeroGpuRefusal,
    budget_models,
    chat_gpu_seconds,
    evaluation_gpu_seconds,
    gpu_budget,
    gpu_call_seconds,
    largest_fitting_model,
    read_zerogpu_error,
    zerogpu_slice_s,
)
from .estimate import estimate as estimate_training
from .evaluate import EvalReport, load_questions
from .evaluate import evaluate as evaluate_adapter
from .fsutil import claim_dir, start_sweeper
from .hub import adapter_zip, pull_adapter, push_adapter, resolve_adapter
from .jobs import Completion, Service, fine_tuned_model_id
from .models import (
    PRESETS,
    LoadedModel,
    ModelPreset,
    ResolvedModel,
    check_served_base_model,
    default_model_name,
    first_load_work,
    generate_batch,
    get_cached_model,
    list_presets,
    load_model,
    load_tokenizer,
    model_dir,
    resolve_model,
    served_base_models,
)
from .plots import recall_by_kind_chart
from .profile import FORMATS as PROFILE_FORMATS
from .profile import MAX_FILE_BYTES as MAX_PROFILE_BYTES
from .profile import Fact, Profile, load_profile, parse_profile, profile_from_rows, profile_hash
from .recipe import ProgressEvent, default_preset
from .slices import SliceResult, run_in_slices, stream_slice, train_in_slices, train_slice
from .store import Store
from .train import train as train_adapter
from .update import FactChange, ProfileDiff, diff_profiles, update_config
from .update import history as adapter_history
from .variations import DIMENSIONS, Phrasing, generate_variations

__version__ = "0.1.0"

__all__ = [
    "Adapter",
    "AdapterError",
    "AdapterMeta",
    "AdapterPrivate",
    "AndraeusError",
    "ChatDataset",
    "ChatExample",
    "ChatModel",
    "Completion",
    "ConfigError",
    "ConflictError",
    "ContextLengthError",
    "DIMENSIONS",
    "EvalReport",
    "EvaluationError",
    "ExampleMeta",
    "Fact",
    "FactChange",
    "GenerationConfig",
    "GpuBudget",
    "HubError",
    "LoadedModel",
    "MAX_PROFILE_BYTES",
    "Message",
    "ModelLoadError",
    "ModelNotAvailableError",
    "ModelPreset",
    "NotFoundError",
    "PRESETS",
    "PROFILE_FORMATS",
    "Phrasing",
    "PrivateDataError",
    "Profile",
    "ProfileDiff",
    "ProfileError",
    "ProgressEvent",
    "QueueFullError",
    "QuotaError",
    "ResolvedModel",
    "SPACE_GPU",
    "Service",
    "SliceResult",
    "Store",
    "TrainConfig",
    "TrainEstimate",
    "TrainingCancelled",
    "TrainingError",
    "TrainingPaused",
    "ZEROGPU_DAILY_QUOTA_S",
    "ZEROGPU_MAX_CALL_S",
    "ZeroGpuRefusal",
    "adapter_history",
    "adapter_zip",
    "adapters_dir",
    "andraeus_home",
    "budget_models",
    "chat_gpu_seconds",
    "build_dataset",
    "check_served_base_model",
    "claim_dir",
    "default_model_name",
    "default_preset",
    "diff_profiles",
    "estimate_training",
    "evaluation_gpu_seconds",
    "evaluate_adapter",
    "facts_system_prompt",
    "fine_tuned_model_id",
    "first_load_work",
    "generate_batch",
    "generate_variations",
    "generated_per_fact",
    "get_cached_model",
    "gpu_budget",
    "gpu_call_seconds",
    "identity_system_prompt",
    "largest_fitting_model",
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
    "read_zerogpu_error",
    "recall_by_kind_chart",
    "resolve_adapter",
    "resolve_model",
    "run_in_slices",
    "served_base_models",
    "start_sweeper",
    "stream_slice",
    "tokenize_example",
    "train_adapter",
    "train_in_slices",
    "train_slice",
    "update_config",
    "write_jsonl",
    "zerogpu_slice_s",
]
