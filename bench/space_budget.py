"""The Space's GPU budget: estimated GPU seconds to train the example profile, per preset base model, against
ZeroGPU's per-call limit and daily quotas.

For each preset base model and two recipes — the ``cpu`` preset (bf16 LoRA, <=3 epochs with early stop, batch 8:
the Space's default recipe) and the seed's (``seed`` preset, QLoRA 4-bit, 5 epochs, batch 2 x 4) — it prints the
GPU seconds of one training run on a ZeroGPU "large" GPU (half an H200): model loading and fitting the gate in every
call, the base model's guard answers, the optimiser steps, early-stop probes and checkpoints, and how many calls of
at most ANDRAEUS_ZEROGPU_MAX_S (default 290 s) that takes. The figures come from ``andraeus_core.estimate``'s model
of the GPU (its table of model shapes and GPU figures), not from a run on a Space: they are ESTIMATES until measured.
Nothing is downloaded: tokens are counted with the default model's tokenizer when a preset's own is not on disk.

    python bench/space_budget.py                  # the table (a few seconds, CPU only)
    python bench/space_budget.py --json           # one JSON object
    python bench/space_budget.py --profile FILE   # another profile
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECIPES = {"cpu (LoRA)": {"preset": "cpu"}, "seed (QLoRA)": {"preset": "seed", "quantize": "4bit"}}


def budgets(profile: Path) -> dict:
    from andraeus_core import ZEROGPU_DAILY_QUOTA_S, TrainConfig, budget_models, largest_fitting_model, zerogpu_slice_s
    from andraeus_core.estimate import ESTIMATE_MARGIN, SPACE_GPU

    out: dict = {
        "profile": str(profile.relative_to(ROOT) if profile.is_relative_to(ROOT) else profile),
        "gpu": SPACE_GPU,
        "estimate": True,
        "estimate_margin": ESTIMATE_MARGIN,
        "per_call_s": zerogpu_slice_s(),
        "daily_quota_s": ZEROGPU_DAILY_QUOTA_S,
        "recipes": {},
    }
    for label, recipe in RECIPES.items():
        config = TrainConfig.preset(recipe["preset"], quantize=recipe.get("quantize"))
        rows = budget_models(profile, config)
        out["recipes"][label] = {
            "models": {name: budget.model_dump() for name, budget in rows.items()},
            "largest_fitting": {tier: largest_fitting_model(rows, s) for tier, s in ZEROGPU_DAILY_QUOTA_S.items()},
        }
    return out


def table(result: dict) -> str:
    tiers = result["daily_quota_s"]
    lines = [
        f"ESTIMATES (not measured) for {result['profile']} on {result['gpu']};",
        f"one call <= {result['per_call_s']:.0f}s; daily quotas: " + ", ".join(f"{t} {s}s" for t, s in tiers.items()),
        f"A run 'fits' a quota when estimate x {result['estimate_margin']} <= quota.",
        "",
        "| recipe | model | steps | tokens/s | load s/call | gate s/call | guards s | train s | GPU s | calls "
        "| fits |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, recipe in result["recipes"].items():
        for name, b in recipe["models"].items():
            ok = [t for t, s in tiers.items() if b["calls"] and b["gpu_seconds"] * result["estimate_margin"] <= s]
            lines.append(
                f"| {label} | {name} | {b['steps']} | {b['tokens_per_second']:,.0f} | {b['load_seconds']:.0f} | "
                f"{b['gate_seconds']:.0f} | {b['guard_seconds']:.0f} | {b['train_seconds']:.0f} | "
                f"{b['gpu_seconds']:.0f} | {b['calls']} | {', '.join(ok) or 'none'} |"
            )
    lines.append("")
    for label, recipe in result["recipes"].items():
        fit = ", ".join(f"{t}: {m or 'none'}" for t, m in recipe["largest_fitting"].items())
        lines.append(f"largest preset that fits, {label}: {fit}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", type=Path, default=ROOT / "examples" / "seed_profile.yaml")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    result = budgets(args.profile.resolve())
    sys.stdout.write((json.dumps(result, indent=1) if args.json else table(result)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
