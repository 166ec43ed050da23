"""Training speed: our pipeline (TRL SFTTrainer, cpu preset) vs a plain PyTorch reference loop, in one run.

Both train the same PEFT LoRA model (same base, same r/alpha/targets, same examples, lr, schedule and epochs) on
the seed example profile. The reference is the textbook loop: AdamW, random order, batch 8 padded to the longest
example. Each side runs in its own child process so its peak RSS is its own. Printed per side: wall time, training
tokens/s (real tokens, no padding), peak RSS and held-out recall (greedy answer contains the value or an alias, over
the held-out fact phrasings — questions never trained on).

    python bench/train_speed.py            # the real figures (embedded SmolLM2-135M, ~7 minutes on 2 cores)
    python bench/train_speed.py --quick    # a smoke run on tiny-random (seconds; figures meaningless)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _setup(args: argparse.Namespace, *, ours: bool):
    from andraeus_core.config import TrainConfig
    from andraeus_core.models import load_model
    from andraeus_core.probes import guard_answerer
    from andraeus_core.profile import load_profile
    from andraeus_core.recipe import prepare_dataset, use_bf16

    overrides = {"base_model": args.base_model}
    if args.epochs:
        overrides["epochs"] = args.epochs
    if args.per_fact:
        overrides["per_fact"] = args.per_fact
    if args.seed is not None:
        overrides["seed"] = args.seed
    config = TrainConfig.preset("cpu", **overrides)
    # Ours loads the base the way train() does (bf16 weights under the cpu preset); the reference is the textbook
    # float32 loop. Ours runs first, so both train on the same guard answers (cached on disk by the first side).
    bf16 = ours and use_bf16(config) and not config.quantize
    loaded = load_model(args.base_model, dtype="bfloat16" if bf16 else "float32")
    profile = load_profile(args.profile)
    dataset = prepare_dataset(profile, config, guard_answer_fn=guard_answerer(loaded))
    return config, loaded, dataset


def _recall(model, tokenizer, dataset) -> tuple[float, int]:
    from andraeus_core.probes import probe_recall

    items = [ex for ex in dataset.heldout if str(ex.meta.kind) in {"fact", "reverse"} and ex.meta.expect]
    return probe_recall(model, tokenizer, items, max_new_tokens=32), len(items)


def run_ours(args: argparse.Namespace) -> dict:
    from andraeus_core.train import train

    start = time.perf_counter()
    config, loaded, dataset = _setup(args, ours=True)
    if args.no_early_stop:
        config = config.model_copy(update={"early_stop": False})
    adapter = train(dataset, config, model=loaded, out_dir=Path(args.workdir) / "adapter")
    wall = time.perf_counter() - start
    m = adapter.meta.metrics.model_dump()
    # Recall of the adapter as a user gets it: the saved files over a freshly loaded base model (float32 on CPU, as
    # chat and evaluation load it), not the in-memory training model.
    rec_start = time.perf_counter()
    del loaded
    from peft import PeftModel

    from andraeus_core.models import load_model

    fresh = load_model(args.base_model)
    served = PeftModel.from_pretrained(fresh.model, str(adapter.path), is_trainable=False).eval()
    recall, n = _recall(served, fresh.tokenizer, dataset)
    return {
        "wall_s": round(wall, 1),
        "train_s": adapter.meta.timings.train_seconds,
        "tokens_per_s": m["tokens_per_second"],
        "steps": m["steps"],
        "epochs": m["epochs"],
        "early_stop_epoch": m["early_stop_epoch"],
        "recall": round(recall, 4),
        "heldout_items": n,
        "recall_eval_s": round(time.perf_counter() - rec_start, 1),
        "peak_rss_mb": m["peak_rss_mb"],  # at the end of training, before the evaluation loads another copy
        "train_examples": len(dataset.train),
    }


def run_reference(args: argparse.Namespace) -> dict:
    import torch
    from peft import get_peft_model
    from transformers import get_cosine_schedule_with_warmup, set_seed

    from andraeus_core.recipe import lora_config, tokenize_examples

    start = time.perf_counter()
    config, loaded, dataset = _setup(args, ours=False)
    set_seed(config.seed)
    model = get_peft_model(loaded.model, lora_config(config))
    model.train()
    rows = tokenize_examples(loaded.tokenizer, dataset.train, config.max_length)
    ids_all, labels_all = rows["input_ids"], rows["labels"]
    pad = loaded.tokenizer.pad_token_id
    batch = 8
    steps_per_epoch = math.ceil(len(ids_all) / batch)
    total = steps_per_epoch * config.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    sched = get_cosine_schedule_with_warmup(optim, math.ceil(config.warmup_ratio * total), total)
    rng = random.Random(config.seed)
    tokens = 0
    train_start = time.perf_counter()
    for _ in range(config.epochs):
        order = list(range(len(ids_all)))
        rng.shuffle(order)
        for s in range(0, len(order), batch):
            chunk = order[s : s + batch]
            width = max(len(ids_all[i]) for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, i in enumerate(chunk):
                n = len(ids_all[i])
                ids[r, :n] = torch.tensor(ids_all[i])
                labels[r, :n] = torch.tensor(labels_all[i])
                mask[r, :n] = 1
                tokens += n
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optim.step()
            sched.step()
            optim.zero_grad(set_to_none=True)
    train_s = time.perf_counter() - train_start
    wall = time.perf_counter() - start
    peak = _peak_rss_mb()
    model.eval()
    recall, n = _recall(model, loaded.tokenizer, dataset)
    return {
        "wall_s": round(wall, 1),
        "train_s": round(train_s, 1),
        "tokens_per_s": round(tokens / train_s, 1),
        "steps": total,
        "epochs": config.epochs,
        "early_stop_epoch": None,
        "recall": round(recall, 4),
        "heldout_items": n,
        "peak_rss_mb": peak,
        "train_examples": len(ids_all),
    }


def _child(args: argparse.Namespace, which: str) -> dict:
    cmd = [sys.executable, __file__, "--only", which, "--base-model", args.base_model, "--profile", args.profile]
    cmd += ["--workdir", args.workdir]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    if args.per_fact:
        cmd += ["--per-fact", str(args.per_fact)]
    if args.no_early_stop:
        cmd += ["--no-early-stop"]
    if args.seed is not None:
        cmd += ["--seed", str(args.seed)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ.copy())
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny-random, 1 epoch, few phrasings")
    parser.add_argument("--base-model", default="smollm2-135m")
    parser.add_argument("--profile", default=str(ROOT / "examples" / "seed_profile.yaml"))
    parser.add_argument("--epochs", type=int, default=None, help="override the cpu preset's epochs")
    parser.add_argument("--per-fact", type=int, default=None, help="override the phrasings per fact")
    parser.add_argument("--no-early-stop", action="store_true", help="train every epoch in our pipeline too")
    parser.add_argument("--seed", type=int, default=None, help="phrasing/split/training seed (default: the preset's)")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--only", choices=["ours", "reference"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.base_model, args.epochs, args.per_fact = "tiny-random", args.epochs or 1, args.per_fact or 6
    if args.only:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        result = run_ours(args) if args.only == "ours" else run_reference(args)
        print(json.dumps(result))
        return 0
    import tempfile

    with tempfile.TemporaryDirectory(prefix="andraeus-bench-") as tmp:
        args.workdir = args.workdir or tmp
        os.environ.setdefault("ANDRAEUS_HOME", str(Path(tmp) / "home"))
        # The guard answers are generated once (by whichever side runs first) and cached for the other side.
        ours = _child(args, "ours")
        ref = _child(args, "reference")
    print(f"train_speed: base={args.base_model} profile={Path(args.profile).name} cpu_count={os.cpu_count()}")
    print(f"{'':<12}{'wall s':>8}{'train s':>9}{'tok/s':>9}{'steps':>7}{'epochs':>8}{'recall':>8}{'RSS MB':>9}")
    for name, r in (("ours", ours), ("reference", ref)):
        print(
            f"{name:<12}{r['wall_s']:>8.1f}{r['train_s']:>9.1f}{r['tokens_per_s']:>9.0f}{r['steps']:>7}"
            f"{r['epochs']:>8}{r['recall']:>8.1%}{r['peak_rss_mb']:>9.0f}"
        )
    ratio = ours["tokens_per_s"] / max(ref["tokens_per_s"], 1e-9)
    print(f"throughput ratio ours/reference: {ratio:.2f}x (goal >= 1.5x)")
    print(
        f"held-out recall ours: {ours['recall']:.1%} over {ours['heldout_items']} items (goal >= 95%); "
        f"early stop epoch: {ours['early_stop_epoch']}; ours wall {ours['wall_s']:.0f}s (goal <= 180s); "
        f"peak RSS {ours['peak_rss_mb']:.0f} MB (goal <= 3072)"
    )
    print("RESULT " + json.dumps({"ours": ours, "reference": ref, "ratio": round(ratio, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
