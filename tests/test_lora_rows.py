"""LoraRows: the adapters off for a pass, and rows of different adapters in one pass, as PEFT computes them."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def three_adapters(shared_models_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """tiny-random carrying three LoRA adapters of different ranks, targets and scalings (random, non-zero B)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from andraeus_core.models import load_model

    monkeypatch.setenv("ANDRAEUS_MODELS_DIR", str(shared_models_dir))
    torch.manual_seed(0)
    configs = {
        "a": LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
        "b": LoraConfig(r=8, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]),
        "c": LoraConfig(r=2, lora_alpha=2, target_modules=["up_proj", "gate_proj"], init_lora_weights=False),
    }
    model = get_peft_model(load_model("tiny-random").model, configs["a"], adapter_name="a")
    for name in ("b", "c"):
        model.add_adapter(name, configs[name])
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.3)
    model.eval()
    return model


def _logits(model, ids, **kwargs):
    import torch

    with torch.inference_mode():
        return model(input_ids=ids, **kwargs).logits


def test_off_gives_what_peft_disable_adapter_gives_and_puts_the_switches_back(three_adapters) -> None:
    import torch

    from andraeus_core.lora_rows import lora_rows

    model = three_adapters
    model.set_adapter("b")
    ids = torch.randint(0, 100, (2, 7))
    with model.disable_adapter():
        bare = _logits(model, ids)
    on = _logits(model, ids)
    assert not torch.allclose(on, bare)  # the adapter changes the output
    rows = lora_rows(model)
    assert rows is lora_rows(model)  # one per model, its stacked weights kept
    with rows.off():
        assert torch.equal(_logits(model, ids), bare)
    assert torch.equal(_logits(model, ids), on)
    with pytest.raises(RuntimeError), rows.off():
        raise RuntimeError("a failed step")
    assert torch.equal(_logits(model, ids), on)  # switched back on after an error too
    assert not any(layer.disable_adapters for layer in rows.layers)


def test_rows_of_different_adapters_get_what_peft_per_row_adapter_names_gives(three_adapters) -> None:
    """Ranks 4/8/2, different targets (a layer may hold one adapter, two or none) and scalings, and rows without an
    adapter: every row's logits are PEFT's, and each row's are those it has alone with its adapter active."""
    import torch

    from andraeus_core.lora_rows import lora_rows

    model = three_adapters
    rows = lora_rows(model)
    names = ["a", None, "b", "c", "a", "b"]
    assert rows.supports(names)
    ids = torch.randint(0, 100, (len(names), 5))
    expected = _logits(model, ids, adapter_names=["__base__" if n is None else n for n in names])
    with rows.rows(names):
        got = _logits(model, ids)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    for i, name in enumerate(names):
        if name is None:
            with model.disable_adapter():
                alone = _logits(model, ids[i : i + 1])
        else:
            model.set_adapter(name)
            alone = _logits(model, ids[i : i + 1])
        assert torch.allclose(got[i : i + 1], alone, atol=1e-5), name
    # nothing stays behind: no hooks, every layer switched on again
    assert not any(layer._forward_hooks for layer in rows.layers)
    assert not any(layer.disable_adapters for layer in rows.layers)


def test_a_reloaded_adapter_is_stacked_again_and_one_it_cannot_stack_is_refused(three_adapters) -> None:
    import torch
    from peft import LoraConfig

    from andraeus_core.lora_rows import lora_rows

    model = three_adapters
    rows = lora_rows(model)
    names = ["a", "b"]
    ids = torch.randint(0, 100, (2, 4))
    with rows.rows(names):
        before = _logits(model, ids)
    # "b" unloaded and loaded again with other weights under the same name (a host reloading an evicted adapter)
    model.delete_adapter("b")
    model.add_adapter("b", LoraConfig(r=8, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.eval()
    rows.invalidate()
    expected = _logits(model, ids, adapter_names=names)
    with rows.rows(names):
        after = _logits(model, ids)
    assert torch.allclose(after, expected, atol=1e-5) and not torch.allclose(after, before)

    # DoRA has its own forward: not stacked (the chat batch keeps PEFT's path, or separate batches)
    model.add_adapter("d", LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], use_dora=True))
    rows.invalidate()
    assert not rows.supports(["a", "d"]) and rows.supports(["a", None])
    # a merged adapter's weights are in the base layer: not stacked either
    model.base_model.merge_adapter(["c"])
    assert not rows.supports(["a", None])
