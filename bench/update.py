"""Facts change: an update from the parent's weights against a full retrain, then five updates in a row (drift).

On the CPU default model: train ``examples/seed_profile.yaml`` (10 facts) once (v1); then apply 1 changed fact (the
dog's name Buddy -> Max), 1 added (sister's name) and 1 removed (employer) both by ``update`` and by a full retrain
(``--full``), side by side; then 5 successive small updates from the updated adapter (the favourite colour changes
each time). Every adapter is scored through its gate, as chat serves it, on held-out questions no version trained on:
the unchanged facts on v1's own held-out split, the changed and added facts on the new split, the removed fact and the
changed fact's old value on held-out "forgetting" questions. Then the precision guards (the precision issue's
metrics) of every version against its parent: the seed profile's hand-written evaluation set (eval_sets/, never
trained on by any version) — "I don't know" on its unknown topics, no profile fact on its near-topic requests
(over-trigger), and the base model's right answers kept on its general questions (retention).

    python bench/update.py                 # ~25-40 min on 2 cores
    python bench/update.py --quick         # smoke run on tiny-random (figures meaningless)
    python bench/update.py --v1 OUT/v1 --drift 0 --update-epochs 1   # tune the update on an earlier run's v1
    python bench/update.py --v1 OUT/v1 --drift 0 --no-full --draw 2  # the v2 update alone, its sampling drawn anew

The update's replay sample and example order are drawn once per version, and one draw can move the unchanged facts'
recall by 15 points (README, "When facts change"): compare levers on the same v1 over several ``--draw`` values.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHANGED, ADDED, REMOVED, DRIFTING = "dog's name", "sister's name", "employer", "favourite colour"
NEW_VALUES = {CHANGED: "Max", ADDED: "Maya"}
DRIFT_VALUES = ["olive", "coral", "amber", "indigo", "maroon"]
FACT_KINDS = ("paraphrase", "typo", "indirect", "reverse")
EVALSET = ROOT / "eval_sets" / "seed_profile.jsonl"
#: Words of the evaluation set's unknown questions that the update makes known (the added sister's name): those
#: questions are left out of every version's abstention count, so the versions are compared on the same questions.
NOW_KNOWN = ("sister",)


def wilson(k: int, n: int) -> str:
    if not n:
        return "n=0"
    p, z = k / n, 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return f"{100 * p:.1f}% ({k}/{n}, 95% CI {100 * max(0, centre - half):.0f}-{100 * min(1, centre + half):.0f})"


def profiles() -> tuple[Any, Any]:
    from andraeus_core import Fact, load_profile

    v1 = load_profile(ROOT / "examples" / "seed_profile.yaml")
    facts = []
    for fact in v1.facts:
        if fact.topic == REMOVED:
            continue
        facts.append(Fact(topic=CHANGED, value=NEW_VALUES[CHANGED]) if fact.topic == CHANGED else fact)
    facts.append(Fact(topic=ADDED, value=NEW_VALUES[ADDED]))
    return v1, v1.model_copy(update={"facts": facts})


def score(adapter_dir: Path, questions: list[Any], old_value: list[str], *, parent: bool = False) -> dict[str, Any]:
    """Counts per group: (correct, n) for recall/abstention, and how often a direct answer states the old value."""
    from andraeus_core import evaluate_adapter
    from andraeus_core.matching import contains_any

    report = evaluate_adapter(adapter_dir, questions, baselines=())
    out: dict[str, list[int]] = {}

    def add(group: str, ok: bool) -> None:
        out.setdefault(group, [0, 0])
        out[group][0] += int(ok)
        out[group][1] += 1

    for q, item in zip(questions, report.items, strict=True):
        topic = q.topic
        if q.kind in FACT_KINDS:
            if topic == CHANGED and parent:
                add("changed fact: value recall (v1: old)", item.correct)
            elif topic == CHANGED:
                add("changed new value", item.correct)
                if q.kind != "reverse" and not parent:
                    add("changed old value stated", contains_any(item.answer, old_value))
            elif topic == ADDED:
                add("added", item.correct)
            elif topic == DRIFTING:
                add("drifting fact (current value)", item.correct)
            elif topic == REMOVED:
                add("removed fact (while known)", item.correct)
            else:
                add("unchanged", item.correct)
        elif q.kind == "unknown" and topic == REMOVED:
            add("removed abstains", item.correct)
        elif q.kind == "unknown" and topic == CHANGED:
            add("old value not claimed", item.correct)
        elif q.kind == "unknown":
            add("unknown topics abstain", item.correct)
        elif q.kind == "unrelated":
            add("unrelated: no fact value", item.correct)
    return out


def guard_questions(evalset: list[Any]) -> list[Any]:
    """The evaluation set's unknown, unrelated and general questions (less the unknowns the update makes known)."""
    return [
        q
        for q in evalset
        if q.kind in ("unrelated", "general")
        or (q.kind == "unknown" and not any(w in q.question.casefold() for w in NOW_KNOWN))
    ]


def precision(adapter_dir: Path, questions: list[Any]) -> dict[str, list[int]]:
    """The precision bench's guard counts (``bench/precision.py``'s own), through the gate: abstained on unknowns, no
    fact on unrelated requests, and of the general questions the base model gets right, those still right."""
    from andraeus_core import evaluate_adapter
    from bench.precision import _counts

    counts = _counts(evaluate_adapter(adapter_dir, questions, baselines=("base",)).to_json(), "main")
    rows = {
        "unknown: abstains": "abstained",
        "unrelated: no fact": "unrelated",
        "general: base's right answer kept": "kept",
    }
    return {row: counts.get(key, [0, 0]) for row, key in rows.items()}


def questions_of(adapter_dir: Path, keep: set[str] | None = None) -> list[Any]:
    from andraeus_core.evaluate import heldout_questions

    qs = heldout_questions(adapter_dir)
    return [q for q in qs if keep is None or q.topic in keep]


def drift_questions(v2_questions: list[Any], last: Path) -> list[Any]:
    """v2's questions (so the removed fact and the old value are still asked), the drifting fact's from ``last``."""
    return [q for q in v2_questions if q.topic != DRIFTING] + [q for q in questions_of(last) if q.topic == DRIFTING]


def tuning(*, draw: int, contrast: bool) -> None:
    """Bench-only levers on the update's dataset: another draw of its sampling, no contrast set. Both act on
    ``andraeus_core.update``'s own module globals, so the update runs its shipped code otherwise."""
    import random

    import andraeus_core.update as update

    if draw:

        class Drawn(random.Random):
            def __init__(self, seed: Any = None) -> None:
                super().__init__(f"{seed}\x1fdraw {draw}" if isinstance(seed, str) and "update" in seed else seed)

        update.random = type("DrawnRandom", (), {"Random": Drawn})  # type: ignore[assignment]
    if not contrast:
        update.contrast_examples = lambda abstaining, pool: []  # type: ignore[assignment]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny-random, few phrasings (a smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drift", type=int, default=5, help="successive small updates after the first")
    parser.add_argument("--out", default=None, help="keep the adapters here (default: a temporary directory)")
    parser.add_argument(
        "--v1", default=None, help="reuse this v1 adapter (an earlier run's <out>/v1) instead of training"
    )
    parser.add_argument("--update-epochs", type=int, default=None, help="override the update's epochs (tuning)")
    parser.add_argument("--replay-share", type=float, default=None, help="override the update's replay share (tuning)")
    parser.add_argument("--update-lr", type=float, default=None, help="override the update's learning rate (tuning)")
    parser.add_argument("--draw", type=int, default=0, help="draw the update's sampling another way (0: as shipped)")
    parser.add_argument("--no-contrast", action="store_true", help="train the update without its contrast set")
    parser.add_argument("--no-full", action="store_true", help="skip the full retrain (tuning the update)")
    args = parser.parse_args()
    tuning(draw=args.draw, contrast=not args.no_contrast)

    from andraeus_core import Adapter, TrainConfig, train_adapter, update_config
    from andraeus_core.evaluate import load_questions

    overrides: dict[str, Any] = {"seed": args.seed}
    if args.quick:
        overrides.update(base_model="tiny-random", per_fact=6, epochs=1, early_stop=False)
    work = Path(args.out or tempfile.mkdtemp(prefix="andraeus-update-bench-"))
    v1_profile, v2_profile = profiles()
    old_dog = v1_profile.fact(CHANGED).accepted()
    evalset = load_questions(EVALSET)
    guards = guard_questions(evalset)
    # No version trains on the evaluation set (a few of its general questions are in the guard pools).
    unseen = {"exclude_questions": [q.question for q in evalset]}
    rows: list[tuple[str, float, dict[str, Any]]] = []

    def progress(event: Any) -> None:
        if event.phase != "train" or event.step % 10 == 0 or event.step == event.total_steps:
            print(f"  [{event.phase}] {event.step}/{event.total_steps} {event.message}", file=sys.stderr, flush=True)

    def timed(label: str, fn: Any) -> Any:
        start = time.perf_counter()
        adapter = fn()
        seconds = time.perf_counter() - start
        print(f"{label}: {seconds:.0f}s, {adapter.meta.metrics.steps} steps", flush=True)
        return adapter, seconds

    if args.v1:
        v1, t_v1 = Adapter.load(args.v1), float("nan")
        print(f"v1 reused from {args.v1}", flush=True)
    else:
        v1, t_v1 = timed("v1 (train)", lambda: train_adapter(
            v1_profile, TrainConfig.preset("cpu", **overrides), progress, out_dir=work / "v1", **unseen))  # fmt: skip
    up_overrides: dict[str, Any] = {"per_fact": 6, "early_stop": False} if args.quick else {}
    if args.update_epochs is not None:
        up_overrides["epochs"] = args.update_epochs
    if args.update_lr is not None:
        up_overrides["learning_rate"] = args.update_lr
    replay = {"replay_share": args.replay_share} if args.replay_share is not None else {}
    up_config = update_config(v1, **up_overrides)
    full_config = update_config(v1, full=True)
    v2, t_up = timed(
        "v2 update",
        lambda: train_adapter(v2_profile, up_config, progress, out_dir=work / "v2", parent=v1, **replay, **unseen),
    )
    v2f, t_full = (
        (None, float("nan"))
        if args.no_full
        else timed(
            "v2 full retrain",
            lambda: train_adapter(
                v2_profile, full_config, progress, out_dir=work / "v2-full", parent=v1, full=True, **unseen
            ),
        )
    )
    questions = questions_of(v2.path)
    rows.append(("v1 (parent)", t_v1, score(v1.path, questions_of(v1.path), old_dog, parent=True)))
    rows.append(("v2 update", t_up, score(v2.path, questions, old_dog)))
    if v2f is not None:
        rows.append(("v2 full retrain", t_full, score(v2f.path, questions, old_dog)))

    parent, profile, drift_seconds = v2, v2_profile, []
    for i, value in enumerate(DRIFT_VALUES[: args.drift]):
        facts = [f.model_copy(update={"value": value}) if f.topic == DRIFTING else f for f in profile.facts]
        profile = profile.model_copy(update={"facts": facts})
        child, seconds = timed(
            f"v{i + 3} update ({DRIFTING})",
            lambda p=parent, pr=profile, i=i: train_adapter(
                pr, up_config, progress, out_dir=work / f"v{i + 3}", parent=p, **replay, **unseen
            ),
        )
        drift_seconds.append(seconds)
        parent = child
    if args.drift:
        rows.append((f"v{args.drift + 2} after {args.drift} more updates", sum(drift_seconds) / len(drift_seconds),
                     score(parent.path, drift_questions(questions, parent.path), old_dog)))  # fmt: skip

    print(f"\nwork dir: {work}")
    if v2f is not None:
        print(f"update {t_up:.0f}s vs full retrain {t_full:.0f}s: {100 * t_up / t_full:.0f}% (goal <= 30%)")
    groups = sorted({g for _, _, s in rows for g in s})
    for label, seconds, counts in rows:
        print(f"\n{label} ({seconds:.0f}s{' per update' if 'more updates' in label else ''})")
        for g in groups:
            if g in counts:
                print(f"  {g:<28} {wilson(*counts[g])}")
    base = rows[0][2].get("unchanged", [0, 0])
    for label, _, counts in rows[1:]:
        k, n = counts.get("unchanged", [0, 0])
        if n and base[1]:
            print(f"unchanged recall drop, {label}: {100 * (base[0] / base[1] - k / n):+.1f} points")
    guard_rows = [("v1 (parent)", v1.path), ("v2 update", v2.path)]
    if v2f is not None:
        guard_rows.append(("v2 full retrain", v2f.path))
    if args.drift:
        guard_rows.append((f"v{args.drift + 2} after {args.drift} more updates", parent.path))
    print(f"\nprecision guards ({EVALSET.relative_to(ROOT)}, through the gate; v1's figure is the one to keep)")
    first: dict[str, list[int]] = {}
    for label, path in guard_rows:
        counts = precision(path, guards)
        first = first or counts
        cells = []
        for row, (k, n) in counts.items():
            k1, n1 = first[row]
            delta = f", {100 * (k / n - k1 / n1):+.1f} vs v1" if n and n1 and counts is not first else ""
            cells.append(f"{row} {k}/{n}{delta}")
        print(f"  {label:<28} " + "; ".join(cells), flush=True)
    if args.drift:
        print(f"drift chain: {' -> '.join(f'v{e.version}' for e in Adapter.load(parent.path).meta.lineage)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
