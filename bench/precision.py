"""Precision: recall on what the adapter was told, "I don't know" on what it was not, the base model's answers to
everything else — with the gate (the default) and without it (what a plain PEFT/vLLM/GGUF user gets).

For each example profile and seed: train with the cpu preset (gate on), then evaluate on the profile's hand-written
evaluation set (eval_sets/, never tuned on: 26 unknown, 26+ near-topic unrelated, 46 general items) and on the
adapter's own held-out split. Training time is compared with the recipe before this work (REFERENCE_REF, trained from
a git worktree of that commit) on the same profile and seed, in the same run. Every figure is pooled over the runs,
with its count and a Wilson 95% interval.

    python bench/precision.py                  # 3 profiles x 2 seeds + the reference (~80 min on 2 cores)
    python bench/precision.py --seeds 0 --profiles seed_profile
    python bench/precision.py --quick          # smoke run on tiny-random (seconds; figures meaningless)
    python bench/precision.py --profiles dev:dev_profile --seeds 0 --no-reference --set learning_rate=5e-4
                                               # a recipe lever on a development set (TrainConfig field = JSON)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: The last commit before the precision work (data, gate): its cpu recipe is the training-time reference.
REFERENCE_REF = "901b89d"
#: name -> (profile, its hand-written question set). The default runs measure the evaluation sets only; the dev:
#: ones are the development sets the thresholds and the data mix were tuned on (optimistic; for tuning runs).
PROFILES = {
    "seed_profile": ("examples/seed_profile.yaml", "eval_sets/seed_profile.jsonl"),
    "retired_teacher_profile": ("examples/retired_teacher_profile.yaml", "eval_sets/retired_teacher_profile.jsonl"),
    "nursing_student_profile": ("examples/nursing_student_profile.yaml", "eval_sets/nursing_student_profile.jsonl"),
    "dev:parent_profile": ("examples/parent_profile.json", "eval_sets/dev/parent_profile.jsonl"),
    "dev:dev_profile": ("eval_sets/dev/dev_profile.yaml", "eval_sets/dev/dev_profile.jsonl"),
}
DEFAULT_PROFILES = "seed_profile,retired_teacher_profile,nursing_student_profile"
FACT_GROUPS = {"paraphrase+typo": ("paraphrase", "typo"), "indirect": ("indirect",), "reverse": ("reverse",)}
GOALS = {  # metric: (gated goal, adapter-alone goal, higher is better)
    "recall paraphrase+typo": (0.95, 0.93, True),
    "recall indirect": (0.90, 0.85, True),
    "recall reverse": (0.90, 0.85, True),
    "abstention": (0.90, 0.60, True),
    "over-trigger": (0.02, 0.15, False),
    "retention drop": (0.02, 0.10, False),
}


# ----------------------------------------------------------------------------------------------------------------
# One run (in a child process: its own memory, a fresh model)


def _counts(report: dict, system: str) -> dict:
    """Per-kind [correct, n] of one system in an EvalReport JSON, plus abstentions and retention counts."""
    from andraeus_core.matching import is_abstention

    out: dict = {}
    for item in report["items"]:
        answer = item if system == "main" else item["baselines"].get(system)
        if answer is None:
            continue
        kind = item["kind"]
        c = out.setdefault(kind, [0, 0])
        c[0] += bool(answer["correct"])
        c[1] += 1
        if kind == "unknown":
            a = out.setdefault("abstained", [0, 0])
            a[0] += is_abstention(answer["answer"])
            a[1] += 1
        if kind == "general" and "base" in item["baselines"] and item["baselines"]["base"]["correct"]:
            r = out.setdefault("kept", [0, 0])
            r[0] += bool(answer["correct"])
            r[1] += 1
    return out


def run_one(
    profile: str, seed: int, base_model: str, workdir: Path, quick: bool, settings: dict | None = None
) -> dict:
    from andraeus_core.config import TrainConfig
    from andraeus_core.evaluate import evaluate, load_questions
    from andraeus_core.train import train

    overrides: dict = {"seed": seed, "base_model": base_model}
    if quick:
        overrides.update(epochs=1, per_fact=6)
    overrides.update(settings or {})
    start = time.perf_counter()
    # The evaluation set's questions are never trained on: a few of its general-knowledge questions are also in the
    # guard pools, and training on them would flatter retention.
    unseen = [q.question for q in load_questions(ROOT / PROFILES[profile][1])]
    config = TrainConfig.preset("cpu", **overrides)
    adapter = train(ROOT / PROFILES[profile][0], config, out_dir=workdir, exclude_questions=unseen)
    train_s = time.perf_counter() - start
    out: dict = {"profile": profile, "seed": seed, "train_s": round(train_s, 1), "gate": None}
    if adapter.meta.gate is not None:
        out["gate"] = adapter.meta.gate.model_dump(include={"heldout_accuracy", "fit_seconds"})
    out["train_examples"] = adapter.meta.dataset.get("train")
    out["settings"] = {key: adapter.meta.config.get(key) for key in settings or {}}  # as the adapter recorded them
    for name, questions in (("evalset", ROOT / PROFILES[profile][1]), ("heldout", None)):
        t = time.perf_counter()
        report = evaluate(adapter, questions, baselines=("base",), max_new_tokens=32 if quick else 48).to_json()
        out[name] = {
            "seconds": round(time.perf_counter() - t, 1),
            "system": report["system"],
            "gated": _counts(report, "main"),
            "alone": _counts(report, "adapter_alone")
            if report["system"] == "adapter+gate"
            else _counts(report, "main"),
            "base": _counts(report, "base"),
            "routing": report.get("routing"),
        }
    return out


def run_reference(profile: str, seed: int, base_model: str, workdir: Path, quick: bool, ref: str) -> dict:
    """Train the same profile and seed with the recipe of commit ``ref`` (a git worktree), for the time ratio."""
    tree = workdir / "reference-tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref], check=True,
                   capture_output=True)  # fmt: skip
    try:
        from andraeus_core.config import TrainConfig

        # The reference stores its base in bf16 on every CPU; today's preset only where the CPU computes bf16 natively
        # (elsewhere it is emulated, several times slower). Both get today's choice, so the ratio measures the recipe.
        overrides = {"seed": seed, "base_model": base_model, "bf16": TrainConfig.preset("cpu").bf16}
        overrides.update({"epochs": 1, "per_fact": 6} if quick else {})
        code = (
            "import json, sys, time\n"
            f"sys.path.insert(0, {str(tree)!r})\n"
            "from andraeus_core.config import TrainConfig\n"
            "from andraeus_core.train import train\n"
            "t = time.perf_counter()\n"
            f"a = train({str(ROOT / PROFILES[profile][0])!r}, TrainConfig.preset('cpu', **{overrides!r}),"
            f" out_dir={str(workdir / 'reference-adapter')!r})\n"
            "meta = a.meta if isinstance(a.meta, dict) else a.meta.model_dump()\n"
            "print(json.dumps({'train_s': round(time.perf_counter() - t, 1), "
            "'train_examples': meta['dataset']['train']}))\n"
        )
        env = {**os.environ, "PYTHONPATH": str(tree)}
        done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)


def _child(args: argparse.Namespace, which: str, profile: str, seed: int, workdir: Path) -> dict:
    cmd = [sys.executable, __file__, "--only", which, "--profiles", profile, "--seeds", str(seed)]
    cmd += ["--base-model", args.base_model, "--workdir", str(workdir), "--reference-ref", args.reference_ref]
    cmd += ["--quick"] if args.quick else []
    cmd += [x for kv in args.set for x in ("--set", kv)]
    # A fresh ANDRAEUS_HOME per run: every run answers its own guard questions with the base model, cold, as a new
    # user's first training does (the converted base model is shared through ANDRAEUS_MODELS_DIR).
    env = {**os.environ, "ANDRAEUS_HOME": str(workdir / f"home-{which}")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{which} run for {profile} seed {seed} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------------
# Pooling and the table


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def _pool(runs: list[dict], split: str, system: str, keys: tuple[str, ...]) -> tuple[int, int]:
    k = n = 0
    for r in runs:
        for key in keys:
            c = r[split][system].get(key, [0, 0])
            k, n = k + c[0], n + c[1]
    return k, n


def metrics(runs: list[dict], system: str) -> dict[str, tuple[float, int, int, tuple[float, float]]]:
    """metric -> (value, k, n, interval); recall from the held-out split, the guards from the evaluation sets."""
    out = {}
    for label, kinds in FACT_GROUPS.items():
        for split in ("heldout", "evalset"):
            k, n = _pool(runs, split, system, kinds)
            out[f"{split} recall {label}"] = (k / n if n else math.nan, k, n, wilson(k, n))
    k, n = _pool(runs, "evalset", system, ("abstained",))
    out["abstention"] = (k / n if n else math.nan, k, n, wilson(k, n))
    k, n = _pool(runs, "evalset", system, ("unrelated",))  # correct = no over-trigger
    out["over-trigger"] = (1 - k / n if n else math.nan, n - k, n, wilson(n - k, n))
    k, n = _pool(runs, "evalset", system, ("kept",))
    out["retention drop"] = (1 - k / n if n else math.nan, n - k, n, wilson(n - k, n))
    k, n = _pool(runs, "evalset", system, ("general",))
    out["general right"] = (k / n if n else math.nan, k, n, wilson(k, n))
    return out


def _fmt(m: tuple[float, int, int, tuple[float, float]]) -> str:
    value, k, n, (lo, hi) = m
    return f"{value:6.1%} ({k}/{n}, {lo:.0%}-{hi:.0%})" if n else "—"


def report(runs: list[dict], references: list[dict]) -> dict:
    systems = {"adapter + gate": metrics(runs, "gated"), "adapter alone": metrics(runs, "alone")}
    systems["base model"] = metrics(runs, "base")
    rows = list(systems["adapter + gate"])
    print(f"\nprecision: {len(runs)} runs ({', '.join(sorted({r['profile'] for r in runs}))}; seeds "
          f"{sorted({r['seed'] for r in runs})}); pooled, n and Wilson 95% interval")  # fmt: skip
    changed = {json.dumps(r.get("settings") or {}, sort_keys=True) for r in runs}
    if changed != {"{}"}:
        print(f"trained with TrainConfig fields changed (--set): {', '.join(sorted(changed))}")
    print(f"{'metric':<34}" + "".join(f"{name:>30}" for name in systems))
    for row in rows:
        print(f"{row:<34}" + "".join(f"{_fmt(systems[s][row]):>30}" for s in systems))
    ratio = None
    if references:
        ours = sum(r["train_s"] for r in runs if (r["profile"], r["seed"]) in {(x["profile"], x["seed"]) for x in
                                                                               references})  # fmt: skip
        ref = sum(x["train_s"] for x in references)
        ratio = ours / ref if ref else None
        print(f"\ntraining wall time: ours {ours:.0f}s vs reference ({REFERENCE_REF}) {ref:.0f}s on the same "
              f"profiles and seeds: {ratio:.2f}x (goal <= 1.3x)")  # fmt: skip
    print("\ngoals                               adapter + gate              adapter alone")
    verdict: dict = {}
    for name, (gated_goal, alone_goal, higher) in GOALS.items():
        key = name if not name.startswith("recall") else f"heldout {name}"
        cells = []
        for system, goal in (("adapter + gate", gated_goal), ("adapter alone", alone_goal)):
            value = systems[system][key][0]
            if math.isnan(value):
                cells.append("no items")
                continue
            met = value >= goal if higher else value <= goal
            verdict[f"{system}: {name}"] = bool(met)
            cells.append(f"{value:6.1%} {'>=' if higher else '<='} {goal:.0%} {'met' if met else 'MISSED'}")
        print(f"{name:<26}" + "".join(f"{c:>28}" for c in cells))
    if ratio is not None:
        verdict["training time"] = ratio <= 1.3
    for r in runs:
        routing = r["evalset"]["routing"]
        acc = routing["accuracy"] if routing else None
        print(f"  {r['profile']} seed {r['seed']}: train {r['train_s']:.0f}s, {r['train_examples']} examples, "
              f"gate routing {acc if acc is None else f'{acc:.0%}'} on the evaluation set, "
              f"known sent away {routing['known_sent_away'] if routing else '—'}")  # fmt: skip
    return {
        "runs": runs,
        "references": references,
        "time_ratio": ratio,
        "verdict": verdict,
        "metrics": {s: {k: v[:3] for k, v in m.items()} for s, m in systems.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", default=DEFAULT_PROFILES, help=f"comma-separated, from {', '.join(PROFILES)}")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--base-model", default="smollm2-135m")
    parser.add_argument("--reference-ref", default=REFERENCE_REF, help="commit whose recipe is the time reference")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference training")
    parser.add_argument(
        "--reference-profiles", default=None, help="train the reference on these profiles only (default: all of them)"
    )
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a TrainConfig field for the measured runs (not the reference), as JSON: --set learning_rate=5e-4",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny-random, one profile and seed")
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=["run", "reference"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.base_model = "tiny-random"
        args.profiles, args.seeds = args.profiles.split(",")[0], args.seeds.split(",")[0]
    profiles = [p for p in args.profiles.split(",") if p]
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown:
        parser.error(f"unknown profile {unknown[0]!r}; choose from {', '.join(PROFILES)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    ref_profiles = set(args.reference_profiles.split(",")) if args.reference_profiles else None
    settings = {}
    for kv in args.set:
        key, sep, value = kv.partition("=")
        if not sep:
            parser.error(f"--set takes FIELD=VALUE, got {kv!r}")
        try:
            settings[key.strip()] = json.loads(value)
        except ValueError:
            parser.error(f"--set {key}: the value must be JSON (a number, true/false, a quoted string), got {value!r}")
    if {"seed", "base_model"} & set(settings):
        parser.error("--set: use --seeds and --base-model for the seed and the base model")
    if settings and not args.only:
        from andraeus_core.config import TrainConfig
        from andraeus_core.errors import ConfigError

        try:  # before any run starts: a typo in a field name fails here, not in a child process minutes later
            TrainConfig.preset("cpu", **settings)
        except ConfigError as exc:
            parser.error(f"--set: {exc}")
    if args.only:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        work = Path(args.workdir)
        if args.only == "run":
            result = run_one(profiles[0], seeds[0], args.base_model, work / "adapter", args.quick, settings)
        else:
            result = run_reference(profiles[0], seeds[0], args.base_model, work, args.quick, args.reference_ref)
        print(json.dumps({**result, "profile": profiles[0], "seed": seeds[0]}))
        return 0
    runs, references = [], []
    with tempfile.TemporaryDirectory(prefix="andraeus-precision-") as tmp:
        os.environ.setdefault("ANDRAEUS_MODELS_DIR", str(Path(tmp) / "models"))
        for profile in profiles:
            for i, seed in enumerate(seeds):
                work = Path(tmp) / f"{profile.replace(':', '-')}-{seed}"
                runs.append(_child(args, "run", profile, seed, work))
                print(f"  ran {profile} seed {seed}: train {runs[-1]['train_s']:.0f}s", flush=True)
                print("RUN " + json.dumps(runs[-1]), flush=True)  # each run's counts, kept if the bench is cut short
                # The reference on the first seed of each profile, from its own cold home as well.
                if i == 0 and not args.no_reference and (ref_profiles is None or profile in ref_profiles):
                    references.append(_child(args, "reference", profile, seed, work))
                    print(f"  reference {profile} seed {seed}: train {references[-1]['train_s']:.0f}s", flush=True)
                    print("REFERENCE " + json.dumps(references[-1]), flush=True)
    result = report(runs, references)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    print("RESULT " + json.dumps({"verdict": result["verdict"], "time_ratio": result["time_ratio"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
