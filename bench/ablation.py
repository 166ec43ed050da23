"""The seed's claim, measured: does phrasing variety beat repetition at the same number of training exposures?

For k phrasings per fact (default k ∈ {1, 5, 15, 30}), each fact is shown the SAME number of times per epoch
(``--exposures``, default 30): k=1 repeats its one phrasing 30 times, k=5 repeats each of its five 6 times, and so
on. Everything else is fixed within a seed: the held-out questions (never trained on), the negatives (unknown-fact,
identity and over-trigger guard examples), the training recipe (the cpu preset with early stop off, so every k gets
the same number of optimiser steps). The k phrasings are taken round-robin over the generator's dimensions
(punctuation, formality, directness, reverse, typo), so k=1 is one plain question and k=5 one of each dimension.

The reference in the same run is the in-context baseline: the base model with every fact in the system prompt.

Prints held-out recall per k (and per kind), writes ``ablation.md`` (table), ``ablation.png`` (chart) and
``ablation.json`` (every figure) to ``--out`` (default bench/results/). Results are written after every run, so an
interrupted ablation still leaves the finished rows.

    python bench/ablation.py                       # full: embedded default, seed profile, k=1,5,15,30, seeds 0,1
    python bench/ablation.py --quick --out /tmp/x  # smoke run: tiny-random, 1 seed, k=1,2 (seconds; answers noise)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parent.parent
DIMENSION_ORDER = ("punctuation", "formality", "directness", "reverse", "typo", "user")
FACT_KINDS = ("paraphrase", "typo", "indirect", "reverse")


def pick_phrasings(examples: list[Any], k: int) -> list[Any]:
    """k training examples of one fact, round-robin over dimensions (in DIMENSION_ORDER, then generation order)."""
    by_dim: dict[str, list[Any]] = defaultdict(list)
    for ex in examples:
        by_dim[ex.meta.dimension].append(ex)
    order = [d for d in DIMENSION_ORDER if d in by_dim] + sorted(d for d in by_dim if d not in DIMENSION_ORDER)
    picked: list[Any] = []
    depth = 0
    while len(picked) < k and any(len(by_dim[d]) > depth for d in order):
        picked.extend(by_dim[d][depth] for d in order if len(by_dim[d]) > depth and len(picked) < k)
        depth += 1
    return picked


def ablation_dataset(full: Any, k: int, exposures: int) -> tuple[Any, int]:
    """``full`` with each fact's training phrasings cut to k, repeated to ``exposures`` examples per fact.

    Returns the dataset and the smallest pool of distinct phrasings over the facts (k is capped by it).
    """
    import random

    facts: dict[str, list[Any]] = defaultdict(list)
    others = []
    for ex in full.train:
        if ex.meta.kind in ("fact", "reverse"):
            facts[ex.meta.topic].append(ex)
        else:
            others.append(ex)
    pool = min(len(v) for v in facts.values())
    train = list(others)
    for topic in sorted(facts):
        chosen = pick_phrasings(facts[topic], k)
        train.extend(chosen[i % len(chosen)] for i in range(exposures))
    random.Random(f"ablation-{k}-{full.seed}").shuffle(train)
    return full.model_copy(update={"train": train}), pool


def evaluate_items(adapter: Path, questions: list[Any], baselines: tuple[str, ...], batch_size: int) -> Any:
    from andraeus_core.evaluate import evaluate

    return evaluate(adapter, questions, baselines, batch_size=batch_size)


def kind_scores(report: Any, system: str) -> dict[str, float | None]:
    m = report.metrics(system)
    out: dict[str, float | None] = {"recall": m.recall}
    for kind in FACT_KINDS:
        out[kind] = m.by_kind[kind].score if kind in m.by_kind else None
    out["abstention"] = m.abstention_rate
    out["over_trigger"] = m.over_trigger_rate
    return out


def mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.0f}%"


def write_outputs(out: Path, results: dict[str, Any]) -> None:
    from andraeus_core.plots import bar_chart

    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    rows = results["runs"]
    ks = sorted({r["k"] for r in rows})
    cols = ["recall", *FACT_KINDS, "abstention", "over_trigger"]
    lines = [
        f"Held-out recall by phrasings per fact (k), {results['exposures']} exposures per fact per epoch, "
        f"{results['epochs']} epochs; mean over seeds {sorted({r['seed'] for r in rows})}.",
        f"Model `{results['base_model']}`, profile `{results['profile']}`, {results['date']}, {results['machine']}.",
        "",
        "| k | " + " | ".join(cols) + " | train s (mean) |",
        "| --- | " + " | ".join("---" for _ in cols) + " | --- |",
    ]
    by_k: dict[int, dict[str, float | None]] = {}
    for k in ks:
        runs = [r for r in rows if r["k"] == k]
        by_k[k] = {c: mean([r["scores"][c] for r in runs]) for c in cols}
        train_s = mean([r["train_seconds"] for r in runs]) or 0.0
        lines.append(f"| {k} | " + " | ".join(pct(by_k[k][c]) for c in cols) + f" | {train_s:.0f} |")
    ic = results.get("in_context", [])
    if ic:
        ic_mean = {c: mean([r["scores"][c] for r in ic]) for c in cols}
        lines.append("| in-context | " + " | ".join(pct(ic_mean[c]) for c in cols) + " | — |")
    per_seed = [
        "",
        "Recall per seed: "
        + "; ".join(
            f"k={k}: " + ", ".join(f"seed {r['seed']} {pct(r['scores']['recall'])}" for r in rows if r["k"] == k)
            for k in ks
        ),
    ]
    (out / "ablation.md").write_text("\n".join(lines + per_seed) + "\n")
    groups = [f"k={k}" for k in ks] + (["in-context"] if ic else [])
    series = {}
    for c in ("recall", *FACT_KINDS):
        vals = [by_k[k][c] for k in ks]
        if ic:
            vals.append(mean([r["scores"][c] for r in ic]))
        series[c] = vals
    bar_chart(
        groups, series, out / "ablation.png", title=f"Held-out recall by phrasings per fact — {results['base_model']}"
    )


class heavy_lock:
    """An flock held for one heavy step (no-op without a path)."""

    def __init__(self, path: str | None):
        self.path = path

    def __enter__(self) -> None:
        if self.path:
            import fcntl

            self.fh = open(self.path, "a")  # noqa: SIM115 - closed in __exit__
            fcntl.flock(self.fh, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if self.path:
            self.fh.close()  # closing releases the lock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny-random, 1 seed, k=1,2, 1 epoch")
    parser.add_argument("--base-model", default=None, help="default: smollm2-135m (tiny-random with --quick)")
    parser.add_argument("--profile", default=str(ROOT / "examples" / "seed_profile.yaml"))
    parser.add_argument("--ks", default=None, help="comma-separated k values (default 1,5,15,30)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1)")
    parser.add_argument("--exposures", type=int, default=None, help="training examples per fact per epoch (30)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 2)")
    parser.add_argument("--batch-size", type=int, default=32, help="evaluation batch size")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument(
        "--lock",
        default=None,
        help="hold this file's lock (flock) during each train+evaluate run only, so that other heavy jobs on a "
        "shared machine can run between the runs",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    quick = args.quick
    base_model = args.base_model or ("tiny-random" if quick else "smollm2-135m")
    ks = [int(k) for k in (args.ks or ("1,2" if quick else "1,5,15,30")).split(",")]
    seeds = [int(s) for s in (args.seeds or ("0" if quick else "0,1")).split(",")]
    exposures = args.exposures or (4 if quick else max(30, max(ks)))
    epochs = args.epochs or (1 if quick else 2)
    if max(ks) > exposures:
        parser.error(f"--exposures ({exposures}) must be at least the largest k ({max(ks)})")

    import torch

    from andraeus_core.adapter import AdapterPrivate
    from andraeus_core.config import TrainConfig
    from andraeus_core.dataset import build_dataset
    from andraeus_core.evaluate import heldout_questions
    from andraeus_core.models import load_model
    from andraeus_core.probes import guard_answerer
    from andraeus_core.profile import load_profile
    from andraeus_core.train import train

    profile = load_profile(args.profile)
    out = Path(args.out)
    results: dict[str, Any] = {
        "base_model": base_model,
        "profile": os.path.relpath(args.profile, ROOT) if Path(args.profile).is_absolute() else args.profile,
        "ks": ks,
        "seeds": seeds,
        "seeds_done": [],
        "exposures": exposures,
        "epochs": epochs,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}",
        "runs": [],
        "in_context": [],
    }
    print(f"ablation: {base_model}, k={ks}, seeds={seeds}, {exposures} exposures/fact/epoch, {epochs} epochs")
    with heavy_lock(args.lock):
        guard_fn = guard_answerer(load_model(base_model))
    # Enough phrasings that the training pool of every fact holds max(ks) distinct ones after the held-out split.
    per_fact = max(30, int(max(ks) / 0.8) + 2)
    with tempfile.TemporaryDirectory(prefix="andraeus-ablation-") as tmp:
        for seed in seeds:
            with heavy_lock(args.lock):
                full = build_dataset(
                    profile, per_fact=per_fact, heldout_share=0.2, seed=seed, guard_answer_fn=guard_fn
                )
            questions = None
            for k in ks:
                dataset, pool = ablation_dataset(full, k, exposures)
                if pool < k:
                    print(f"  note: only {pool} distinct training phrasings for some fact; k={k} uses {pool}")
                small = {"lora_r": 4, "lora_alpha": 8} if quick else {}
                config = TrainConfig.preset(
                    "cpu", base_model=base_model, epochs=epochs, early_stop=False, seed=seed, **small
                )
                with heavy_lock(args.lock):
                    started = time.perf_counter()
                    adapter = train(dataset, config, out_dir=Path(tmp) / f"s{seed}-k{k}")
                    train_seconds = time.perf_counter() - started
                    # train() given a ChatDataset has no Profile to keep; the evaluation reads it from the adapter.
                    if adapter.private.profile is None:
                        AdapterPrivate(system_prompt=adapter.private.system_prompt, profile=profile).save(adapter.path)
                    if questions is None:
                        questions = heldout_questions(adapter.path)
                    # The in-context baseline does not depend on k: run it once per seed.
                    baselines = ("in_context",) if k == ks[0] else ()
                    report = evaluate_items(adapter.path, questions, baselines, args.batch_size)
                scores = kind_scores(report, "adapter")
                results["runs"].append(
                    {
                        "seed": seed,
                        "k": k,
                        "scores": scores,
                        "train_seconds": round(train_seconds, 1),
                        "eval_seconds": report.seconds,
                        "steps": adapter.meta.metrics.steps,
                        "n": report.n,
                    }
                )
                if baselines:
                    results["in_context"].append({"seed": seed, "scores": kind_scores(report, "in_context")})
                print(
                    f"  seed {seed} k={k:>2}: recall {pct(scores['recall'])} "
                    + " ".join(f"{c} {pct(scores[c])}" for c in FACT_KINDS)
                    + f" | train {train_seconds:.0f}s, {adapter.meta.metrics.steps} steps, "
                    f"eval {report.seconds:.0f}s",
                    flush=True,
                )
                if baselines:
                    ic = results["in_context"][-1]["scores"]
                    print(f"  seed {seed} in-context: recall {pct(ic['recall'])}", flush=True)
                write_outputs(out, results)
            results["seeds_done"].append(seed)
            write_outputs(out, results)
    print((out / "ablation.md").read_text())
    print(f"wrote {out / 'ablation.md'}, {out / 'ablation.png'}, {out / 'ablation.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
