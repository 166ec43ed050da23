"""Test isolation: every test gets its own ANDRAEUS_HOME and HF_HOME, and the Hub is offline.

Converted base models are shared across the tests of one session (converting the embedded default takes ~15 s);
set ANDRAEUS_TEST_MODELS_DIR to keep them across sessions while developing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PROFILE, free_port

# Before anything imports huggingface_hub (it reads these once, at import time).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def shared_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keep = os.environ.get("ANDRAEUS_TEST_MODELS_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        return Path(keep)
    return tmp_path_factory.mktemp("models")


def _isolate(monkeypatch: pytest.MonkeyPatch, root: Path, models_dir: Path) -> Path:
    """Point Andraeus and the Hub at directories under ``root`` (offline, no token); return the Andraeus home."""
    home = root / "andraeus-home"
    monkeypatch.setenv("ANDRAEUS_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(root / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ANDRAEUS_MODELS_DIR", str(models_dir))
    monkeypatch.delenv("ANDRAEUS_BASE_MODEL", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return home


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_models_dir: Path) -> Path:
    return _isolate(monkeypatch, tmp_path, shared_models_dir)


@pytest.fixture(scope="session")
def tiny_model(shared_models_dir: Path):
    """The tiny random Llama, loaded once per session (mechanics only: its answers are noise)."""
    os.environ["ANDRAEUS_MODELS_DIR"] = str(shared_models_dir)
    from andraeus_core.models import load_model

    return load_model("tiny-random")


@pytest.fixture(scope="session")
def default_model(shared_models_dir: Path):
    """The real embedded default (SmolLM2-135M-Instruct), loaded once per session."""
    os.environ["ANDRAEUS_MODELS_DIR"] = str(shared_models_dir)
    from andraeus_core.models import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def minimal_adapter(tmp_path_factory: pytest.TempPathFactory, shared_models_dir: Path) -> Any:
    """``examples/minimal.csv`` trained once on the embedded default with the cpu preset, as a new user would (slow,
    ~9 minutes on CI's 2 cores): the tests that only read a real adapter share it rather than each training one.
    Its own ANDRAEUS_HOME: session fixtures are set up before a test's isolated home."""
    from andraeus_core.config import TrainConfig
    from andraeus_core.train import train

    root = tmp_path_factory.mktemp("minimal-adapter")
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, root, shared_models_dir)
        examples = Path(__file__).resolve().parent.parent / "examples"
        return train(
            examples / "minimal.csv", TrainConfig.preset("cpu"), out_dir=root / "adapter", user_name="Sam Rivera"
        )


_DEFAULT = object()


@pytest.fixture(scope="session")
def make_adapter(shared_models_dir: Path) -> Callable[..., Path]:
    """Write a complete adapter directory on tiny-random with ``Adapter.write``, as training writes one.

    ``make_adapter(directory, weights=..., profile=..., system_prompt=..., heldout=..., seed=..., **meta)``:

    - ``weights``: ``"random"`` (PEFT's non-identity init, seeded), ``"zero"`` (LoRA B = 0: the adapter is the
      identity) or ``"large"`` (N(0, 0.5) everywhere: answers visibly change);
    - ``profile`` (a profile dict, default :data:`tests.helpers.PROFILE`; None: no profile, as after chat-data
      training) and ``system_prompt`` (default: named after the profile's assistant and user) go to private.json;
      ``private=False`` writes no private.json at all;
    - ``heldout``: chat examples (dicts with ``messages`` and ``meta``) for heldout.jsonl (None: no file);
    - ``gate``: None (no gate) or a route (``"adapter"``, ``"abstain"``, ``"base"``): a gate that sends every
      question there (a constant router: zero weights, a large bias), to test what each route does;
    - ``meta``: fields of andraeus.json besides ``base_model`` (e.g. ``topics``, ``metrics``, ``profile_hash``).
    """

    def make(
        directory: Path,
        *,
        weights: str = "random",
        profile: Any = _DEFAULT,
        system_prompt: str | None = None,
        private: bool = True,
        heldout: list[dict[str, Any]] | None = None,
        seed: int = 1,
        gate: str | None = None,
        **meta: Any,
    ) -> Path:
        import torch
        from peft import LoraConfig, get_peft_model

        from andraeus_core.adapter import Adapter, AdapterMeta, AdapterPrivate
        from andraeus_core.dataset import ChatExample
        from andraeus_core.models import load_model

        os.environ["ANDRAEUS_MODELS_DIR"] = str(shared_models_dir)
        profile = PROFILE if profile is _DEFAULT else profile
        if system_prompt is None and profile is not None:
            system_prompt = f"You are {profile.get('assistant_name', 'Nova')}, {profile['user_name']}'s assistant."
        torch.manual_seed(seed)
        lora = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=weights == "zero")
        model = get_peft_model(load_model("tiny-random").model, lora)  # a fresh copy: PEFT mutates what it wraps
        if weights == "large":
            with torch.no_grad():
                for name, param in model.named_parameters():
                    if "lora_" in name:
                        param.normal_(0, 0.5)
        router = constant_gate(gate, model.config.hidden_size, model.config.num_hidden_layers) if gate else None
        if router is not None:
            meta["gate"] = router.meta
        Adapter.write(
            directory,
            model,
            AdapterMeta(base_model="tiny-random", **meta),
            AdapterPrivate(system_prompt=system_prompt, profile=profile) if private else None,
            [ChatExample.model_validate(h) for h in heldout] if heldout is not None else None,
            router,
        )
        return Path(directory)

    return make


def constant_gate(route: str, hidden_size: int, num_layers: int) -> Any:
    """A gate that sends every question to ``route`` (zero weights, a decisive bias), for the routes' plumbing."""
    import torch

    from andraeus_core.gate import ROUTES, Gate, GateMeta, gate_layers

    layers = gate_layers(num_layers)
    features = hidden_size * len(layers)
    bias = torch.full((len(ROUTES),), -10.0)
    bias[ROUTES.index(route)] = 10.0
    meta = GateMeta(
        layers=layers,
        threshold_base=0.8,
        threshold_abstain=0.8,
        train_counts={r: 0 for r in ROUTES},
        heldout_accuracy={r: None for r in ROUTES},
        heldout_counts={r: 0 for r in ROUTES},
        fit_seconds=0.0,
    )
    return Gate(meta, torch.zeros(features), torch.ones(features), torch.zeros(features, len(ROUTES)), bias)


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    """The web app (the Space's app.py ``demo``) served on 127.0.0.1 for one test module."""
    import app

    port = free_port()
    app.demo.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **app.LAUNCH_KWARGS
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.demo.close()
